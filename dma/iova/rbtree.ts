// A red-black tree of disjoint pfn ranges, the shape of Linux's iova rbtree
// (lib/rbtree.c semantics: parent pointers, O(1) amortised neighbours, insert
// next to a known node). Nodes are recycled, so a steady state allocates nothing.
//
// Invariants:
//   - ranges [pfnLo, pfnHi] are disjoint and ordered left to right, so the
//     in-order walk is sorted by pfnLo and by pfnHi alike;
//   - the root is black, a red node has black children, and every path from a
//     node down to a leaf crosses the same number of black nodes (height <= 2 log2(n + 1)).

export class IovaNode {
  pfnLo = 0;
  pfnHi = 0;
  left: IovaNode | null = null;
  right: IovaNode | null = null;
  parent: IovaNode | null = null;
  red = false;
}

const isRed = (n: IovaNode | null): boolean => n !== null && n.red;

export class IovaRbTree {
  private root: IovaNode | null = null;
  /** Erased nodes, chained through `right`, reused by newNode (the iova slab cache). */
  private spare: IovaNode | null = null;
  size = 0;

  newNode(pfnLo: number, pfnHi: number): IovaNode {
    const n = this.spare ?? new IovaNode();
    if (n === this.spare) this.spare = n.right;
    n.pfnLo = pfnLo;
    n.pfnHi = pfnHi;
    n.left = n.right = n.parent = null;
    n.red = true;
    return n;
  }

  first(): IovaNode | null {
    return this.root && leftmost(this.root);
  }

  next(n: IovaNode): IovaNode | null {
    if (n.right) return leftmost(n.right);
    let p = n.parent;
    while (p && n === p.right) {
      n = p;
      p = p.parent;
    }
    return p;
  }

  prev(n: IovaNode): IovaNode | null {
    if (n.left) return rightmost(n.left);
    let p = n.parent;
    while (p && n === p.left) {
      n = p;
      p = p.parent;
    }
    return p;
  }

  /** The range holding `pfn` (private_find_iova). */
  find(pfn: number): IovaNode | null {
    let n = this.root;
    while (n) {
      if (pfn < n.pfnLo) n = n.left;
      else if (pfn > n.pfnHi) n = n.right;
      else return n;
    }
    return null;
  }

  /** The lowest range that ends at or above `pfn` (where a top-down walk below `pfn` starts). */
  ceilByEnd(pfn: number): IovaNode | null {
    let n = this.root;
    let best: IovaNode | null = null;
    while (n) {
      if (n.pfnHi >= pfn) {
        best = n;
        n = n.left;
      } else {
        n = n.right;
      }
    }
    return best;
  }

  /** Inserts a node from newNode, descending from the root. */
  insert(node: IovaNode): void {
    let parent: IovaNode | null = null;
    for (let n = this.root; n; n = node.pfnLo < n.pfnLo ? n.left : n.right) parent = n;
    this.link(node, parent, parent !== null && node.pfnLo < parent.pfnLo);
  }

  /** Inserts a node from newNode as the in-order predecessor of `succ`: no descent from the root. */
  insertBefore(node: IovaNode, succ: IovaNode): void {
    if (succ.left) this.link(node, rightmost(succ.left), false);
    else this.link(node, succ, true);
  }

  erase(z: IovaNode): void {
    let x: IovaNode | null;
    let xParent: IovaNode | null;
    let removedRed = z.red;
    if (!z.left || !z.right) {
      x = z.left ?? z.right;
      xParent = z.parent;
      this.transplant(z, x);
    } else {
      const y = leftmost(z.right);
      removedRed = y.red;
      x = y.right;
      if (y.parent === z) {
        xParent = y;
      } else {
        xParent = y.parent;
        this.transplant(y, y.right);
        y.right = z.right;
        y.right.parent = y;
      }
      this.transplant(z, y);
      y.left = z.left;
      y.left.parent = y;
      y.red = z.red;
    }
    if (!removedRed) this.eraseFixup(x, xParent);
    this.size--;
    z.left = z.parent = null;
    z.right = this.spare;
    this.spare = z;
  }

  private link(node: IovaNode, parent: IovaNode | null, asLeft: boolean): void {
    node.parent = parent;
    if (!parent) this.root = node;
    else if (asLeft) parent.left = node;
    else parent.right = node;
    this.size++;
    this.insertFixup(node);
  }

  private insertFixup(z: IovaNode): void {
    while (isRed(z.parent)) {
      const p = z.parent!;
      const g = p.parent!; // a red node is never the root
      if (p === g.left) {
        const u = g.right;
        if (isRed(u)) {
          p.red = u!.red = false;
          g.red = true;
          z = g;
          continue;
        }
        if (z === p.right) {
          z = p;
          this.rotateLeft(z);
        }
        z.parent!.red = false;
        g.red = true;
        this.rotateRight(g);
      } else {
        const u = g.left;
        if (isRed(u)) {
          p.red = u!.red = false;
          g.red = true;
          z = g;
          continue;
        }
        if (z === p.left) {
          z = p;
          this.rotateRight(z);
        }
        z.parent!.red = false;
        g.red = true;
        this.rotateLeft(g);
      }
    }
    this.root!.red = false;
  }

  /** `x` (possibly null) carries an extra black; `parent` is its parent. Siblings exist by the black-height rule. */
  private eraseFixup(x: IovaNode | null, parent: IovaNode | null): void {
    while (x !== this.root && !isRed(x)) {
      const p = parent!;
      if (x === p.left) {
        let w = p.right!;
        if (w.red) {
          w.red = false;
          p.red = true;
          this.rotateLeft(p);
          w = p.right!;
        }
        if (!isRed(w.left) && !isRed(w.right)) {
          w.red = true;
          x = p;
          parent = p.parent;
          continue;
        }
        if (!isRed(w.right)) {
          w.left!.red = false;
          w.red = true;
          this.rotateRight(w);
          w = p.right!;
        }
        w.red = p.red;
        p.red = false;
        w.right!.red = false;
        this.rotateLeft(p);
      } else {
        let w = p.left!;
        if (w.red) {
          w.red = false;
          p.red = true;
          this.rotateRight(p);
          w = p.left!;
        }
        if (!isRed(w.left) && !isRed(w.right)) {
          w.red = true;
          x = p;
          parent = p.parent;
          continue;
        }
        if (!isRed(w.left)) {
          w.right!.red = false;
          w.red = true;
          this.rotateLeft(w);
          w = p.left!;
        }
        w.red = p.red;
        p.red = false;
        w.left!.red = false;
        this.rotateRight(p);
      }
      x = this.root;
    }
    if (x) x.red = false;
  }

  private transplant(u: IovaNode, v: IovaNode | null): void {
    const p = u.parent;
    if (!p) this.root = v;
    else if (u === p.left) p.left = v;
    else p.right = v;
    if (v) v.parent = p;
  }

  private rotateLeft(x: IovaNode): void {
    const y = x.right!;
    x.right = y.left;
    if (y.left) y.left.parent = x;
    this.transplant(x, y);
    y.left = x;
    x.parent = y;
  }

  private rotateRight(x: IovaNode): void {
    const y = x.left!;
    x.left = y.right;
    if (y.right) y.right.parent = x;
    this.transplant(x, y);
    y.right = x;
    x.parent = y;
  }

  /** Checks every invariant above; for tests. Returns the black height. */
  validate(): number {
    if (isRed(this.root)) throw new Error('rbtree: red root');
    let count = 0;
    let last = -1;
    const walk = (n: IovaNode | null, parent: IovaNode | null): number => {
      if (!n) return 1;
      if (n.parent !== parent) throw new Error('rbtree: broken parent link');
      if (n.red && (isRed(n.left) || isRed(n.right))) throw new Error('rbtree: red node with a red child');
      const lh = walk(n.left, n);
      if (n.pfnLo > n.pfnHi || n.pfnLo <= last) throw new Error(`rbtree: range [${n.pfnLo}, ${n.pfnHi}] out of order`);
      last = n.pfnHi;
      count++;
      const rh = walk(n.right, n);
      if (lh !== rh) throw new Error('rbtree: unequal black heights');
      return lh + (n.red ? 0 : 1);
    };
    const h = walk(this.root, null);
    if (count !== this.size) throw new Error(`rbtree: size ${this.size} but ${count} nodes`);
    return h;
  }
}

function leftmost(n: IovaNode): IovaNode {
  while (n.left) n = n.left;
  return n;
}

function rightmost(n: IovaNode): IovaNode {
  while (n.right) n = n.right;
  return n;
}
