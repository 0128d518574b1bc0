// An AVL tree of disjoint pfn ranges that also indexes the free space between
// them: each node owns the gap just below its range, and each subtree knows
// the largest gap it holds, so the highest gap that fits a request under any
// limit is found in O(log n) (strategy `augmented`, dma/iova/augmented.ts).
//
// Invariants:
//   - ranges [lo, hi] are disjoint and in order; the last node is the anchor,
//     above every pfn handed out, so every free pfn lies in some node's gap;
//   - a node's gap is [gapLo, lo - 1], gapLo = max(floor, predecessor's hi + 1)
//     (floor for the first node), and fit = alignedFit(gapLo, lo - 1);
//   - maxGap and maxFit are the largest gap length and fit in the node's
//     subtree (0 when every gap in it is empty);
//   - the heights of a node's two subtrees differ by at most one, so the tree
//     is at most 1.44 log2(n + 2) high.
//
// Why one number describes a gap exactly for size-aligned requests: if `s`
// pfns fit at a multiple x of roundupPow2(s), any smaller s' fits at x too
// (roundupPow2(s') divides roundupPow2(s), and [x, x + s' - 1] lies inside).
// The sizes a gap takes aligned are therefore 1 .. fit, and a subtree holds a
// gap for `s` if and only if its maxFit >= s. No gap is ever missed because it
// fits only at a lucky alignment, and the search never has to look twice.
//
// Layout: a node is the offset of its eight words in one buffer: 64 bytes,
// the size the C struct would have, links and height included, so a step
// through the tree touches one node's memory and no boxed numbers. Offset 0
// is NIL, a node of zeros (height 0, no gaps) that is never written, so
// children need no null checks. Erased nodes are reused: a steady state
// allocates nothing and the garbage collector never sees the tree.

/** No node. Also a valid node to read: every field 0. */
export const NIL = 0;

// A node's eight words. Six doubles, at its offset n in `f`:
const LO = 0; // first pfn of the range
const HI = 1; // last pfn of the range
const GAP_LO = 2; // first pfn of the gap below it
const FIT = 3; // alignedFit of that gap
const MAX_GAP = 4; // subtree maxima
const MAX_FIT = 5;
const STRIDE = 8;
// And four int32 in the last two words, at 2n in `w`, a view of the same memory:
const LEFT = 12; // children, NIL if none
const RIGHT = 13;
const PARENT = 14;
const HEIGHT = 15;

/** Deepest an AVL tree of 2^53 nodes can be, with room to spare. */
const MAX_HEIGHT = 96;

/** 2^k and 2^-k for k = 0 .. 63: exact, and no Math.pow in the hot paths. */
const POW2 = new Float64Array(64);
const INV_POW2 = new Float64Array(64);
for (let k = 0; k < 64; k++) {
  POW2[k] = 2 ** k;
  INV_POW2[k] = 2 ** -k;
}
const TWO_32 = 4294967296;
const INV_TWO_32 = 1 / TWO_32;

/** floor(log2(n)) for an integer 1 <= n < 2^54, by clz32 on its two 32-bit halves. */
function log2Floor(n: number): number {
  // clz32 truncates its argument to 32 bits: n / 2^32 (exact) truncates to n's high half.
  return n < TWO_32 ? 31 - Math.clz32(n) : 63 - Math.clz32(n * INV_TWO_32);
}

/** alignedFit: the largest `s` that fits in [lo, hi] at a multiple of roundupPow2(s); 0 if the gap is empty. */
export function alignedFit(lo: number, hi: number): number {
  const len = hi - lo + 1;
  if (len <= 0) return 0;
  // An interval of len >= 2m - 1 pfns holds an aligned block of m, so the
  // largest aligned block is floorPow2(len) or half of it. Scaling by a power
  // of two is exact, so ceil(lo * 2^-k) * 2^k is alignUp(lo, 2^k) exactly.
  let k = log2Floor(len);
  if (Math.ceil(lo * INV_POW2[k]!) * POW2[k]! + POW2[k]! - 1 > hi) k--; // never below 0: a block of 1 always fits
  const block = POW2[k]!;
  // Sizes between block and 2 * block need 2 * block alignment: they fit
  // from the first such boundary in the gap up to its end (less than 2 * block).
  const tail = hi - Math.ceil(lo * INV_POW2[k + 1]!) * POW2[k + 1]! + 1;
  return tail > block ? tail : block;
}

export class GapTree {
  private f: Float64Array;
  private w: Int32Array;
  /** Node slots ever handed out, NIL's included. */
  private slots = 1;
  /** Erased nodes, chained through LEFT. */
  private spare = NIL;
  private root: number;
  /** The last node: a one-pfn range above every pfn that can be handed out. */
  readonly anchor: number;
  size = 1;
  /** Nodes the last findFit looked at: O(log n) by construction, counted for tests. */
  lastVisited = 0;
  /** The nodes where the last search turned right: each, with its left subtree, lies wholly below the limit. */
  private readonly below = new Int32Array(MAX_HEIGHT);

  /** `floor` is the lowest free pfn (start_pfn). */
  constructor(
    readonly floor: number,
    anchorPfn: number,
    capacity = 1024,
  ) {
    const buf = new ArrayBuffer(capacity * STRIDE * 8);
    this.f = new Float64Array(buf);
    this.w = new Int32Array(buf);
    this.root = this.anchor = this.newNode(anchorPfn, anchorPfn);
    this.setGap(this.anchor, floor);
    this.pull(this.anchor);
  }

  lo(n: number): number {
    return this.f[n + LO];
  }

  hi(n: number): number {
    return this.f[n + HI];
  }

  /** The range holding `pfn`, or NIL. */
  find(pfn: number): number {
    const f = this.f;
    const w = this.w;
    let n = this.root;
    while (n !== NIL) {
      if (pfn < f[n + LO]) n = w[2 * n + LEFT];
      else if (pfn > f[n + HI]) n = w[2 * n + RIGHT];
      else return n;
    }
    return NIL;
  }

  /** The lowest range that ends at or above `pfn`: the anchor at worst. */
  ceilByEnd(pfn: number): number {
    const f = this.f;
    const w = this.w;
    let best = this.anchor;
    for (let n = this.root; n !== NIL; ) {
      if (f[n + HI] >= pfn) {
        best = n;
        n = w[2 * n + LEFT];
      } else {
        n = w[2 * n + RIGHT];
      }
    }
    return best;
  }

  /** The next range up, or NIL after the anchor. */
  next(n: number): number {
    const w = this.w;
    const r = w[2 * n + RIGHT];
    if (r !== NIL) return this.leftmost(r);
    let p = this.parent(n);
    while (p !== NIL && n === w[2 * p + RIGHT]) {
      n = p;
      p = this.parent(p);
    }
    return p;
  }

  /**
   * The node whose gap takes `size` pfns at a multiple of `align` as high as
   * possible at or below `limit`, or NIL. The walk to the limit passes the
   * nodes in order of address; everything below the limit is the union of the
   * nodes where it turned right and their left subtrees, visited deepest
   * (highest) first, and the first whose maximum fits is descended. Only the
   * gap of the lowest node above the limit is cut by it and checked by hand.
   */
  findFit(size: number, align: number, limit: number): number {
    const f = this.f;
    const w = this.w;
    const below = this.below;
    let visited = 0;
    let depth = 0;
    let above = this.anchor;
    for (let n = this.root; n !== NIL; visited++) {
      if (f[n + LO] > limit) {
        above = n;
        n = w[2 * n + LEFT];
      } else {
        below[depth++] = n;
        n = w[2 * n + RIGHT];
      }
    }
    const top = Math.min(f[above + LO]! - 1, limit);
    if (alignDown(top - size + 1, align) >= f[above + GAP_LO]!) {
      this.lastVisited = visited;
      return above;
    }

    const aligned = align > 1; // align 1: any pfn will do, so the gap's length decides
    const subtreeMax = aligned ? MAX_FIT : MAX_GAP;
    while (depth > 0) {
      const n = below[--depth]!;
      visited++;
      if (aligned ? f[n + FIT]! >= size : f[n + LO]! - f[n + GAP_LO]! >= size) {
        this.lastVisited = visited;
        return n;
      }
      const l = w[2 * n + LEFT]!;
      if (f[l + subtreeMax]! >= size) {
        this.lastVisited = visited;
        return this.highestFit(l, size, aligned);
      }
    }
    this.lastVisited = visited;
    return NIL;
  }

  /** Links a new range [lo, hi] as the predecessor of `succ`, carving it out of succ's gap. */
  insertBefore(lo: number, hi: number, succ: number): number {
    const n = this.newNode(lo, hi); // first: it may move the arrays
    const f = this.f;
    const w = this.w;
    this.setGap(n, f[succ + GAP_LO]);
    this.setGap(succ, Math.max(hi + 1, this.floor));
    const l = w[2 * succ + LEFT];
    if (l === NIL) this.link(n, succ, LEFT);
    else this.link(n, this.rightmost(l), RIGHT);
    this.size++;
    this.pull(n); // a new leaf: a no-op pull must not stop the walk here
    this.rebalanceUp(this.parent(n), succ); // succ, whose gap shrank, is an ancestor
    return n;
  }

  /** Unlinks `z` (never the anchor) and gives its range and gap to its successor's gap. */
  erase(z: number): void {
    const f = this.f;
    const w = this.w;
    const succ = this.next(z);
    this.setGap(succ, f[z + GAP_LO]);
    this.pull(succ); // when succ is a leaf that takes z's place, nothing below it will
    const l = w[2 * z + LEFT];
    const r = w[2 * z + RIGHT];
    let from: number;
    if (l !== NIL && r !== NIL) {
      // succ is leftmost in z's right subtree: move it into z's place.
      if (this.parent(succ) === z) {
        from = succ;
      } else {
        from = this.parent(succ);
        this.link(w[2 * succ + RIGHT], from, LEFT);
        this.link(r, succ, RIGHT);
      }
      this.link(l, succ, LEFT);
      this.replaceChild(z, succ);
    } else {
      from = this.parent(z);
      this.replaceChild(z, l !== NIL ? l : r);
    }
    this.rebalanceUp(from, succ); // succ is on the way unless it was a leaf that took z's place
    this.size--;
    this.w[2 * z + LEFT] = this.spare;
    this.spare = z;
  }

  /** Checks every invariant above; for tests. */
  validate(): void {
    const f = this.f;
    for (let i = 0; i < STRIDE; i++) if (f[NIL + i] !== 0) throw new Error('gap tree: NIL was written');
    if (this.height(NIL) !== 0) throw new Error('gap tree: NIL was written');
    let count = 0;
    let lastHi = -1;
    const walk = (n: number, parent: number): void => {
      if (n === NIL) return;
      const [lo, hi, l, r] = [this.lo(n), this.hi(n), this.w[2 * n + LEFT], this.w[2 * n + RIGHT]];
      if (this.parent(n) !== parent) throw new Error('gap tree: broken parent link');
      walk(l, n);
      if (lo > hi || lo <= lastHi) throw new Error(`gap tree: range [${lo}, ${hi}] out of order`);
      const gapLo = Math.max(this.floor, lastHi + 1);
      if (f[n + GAP_LO] !== gapLo || f[n + FIT] !== alignedFit(gapLo, lo - 1)) throw new Error(`gap tree: gap below [${lo}, ${hi}] is stale`);
      lastHi = hi;
      count++;
      walk(r, n);
      if (Math.abs(this.height(l) - this.height(r)) > 1 || this.height(n) !== Math.max(this.height(l), this.height(r)) + 1) {
        throw new Error(`gap tree: unbalanced at [${lo}, ${hi}]`);
      }
      const maxGap = Math.max(0, lo - gapLo, f[l + MAX_GAP], f[r + MAX_GAP]);
      const maxFit = Math.max(f[n + FIT], f[l + MAX_FIT], f[r + MAX_FIT]);
      if (f[n + MAX_GAP] !== maxGap || f[n + MAX_FIT] !== maxFit) throw new Error(`gap tree: subtree maxima stale at [${lo}, ${hi}]`);
    };
    if (this.parent(this.root) !== NIL) throw new Error('gap tree: root has a parent');
    walk(this.root, NIL);
    if (lastHi !== this.hi(this.anchor)) throw new Error('gap tree: the anchor is not last');
    if (count !== this.size) throw new Error(`gap tree: size ${this.size} but ${count} nodes`);
  }

  /** The highest node in a subtree known to hold a fitting gap: right subtree, then the node, then left. */
  private highestFit(n: number, size: number, aligned: boolean): number {
    const f = this.f;
    const w = this.w;
    const subtreeMax = aligned ? MAX_FIT : MAX_GAP;
    let visited = this.lastVisited;
    for (;;) {
      visited++;
      const r = w[2 * n + RIGHT]!;
      if (f[r + subtreeMax]! >= size) n = r;
      else if (aligned ? f[n + FIT]! >= size : f[n + LO]! - f[n + GAP_LO]! >= size) break;
      else n = w[2 * n + LEFT]!; // the subtree maximum is there
      if (n === NIL) throw new Error('gap tree: subtree maxima are stale'); // BUG_ON, not a loop on NIL
    }
    this.lastVisited = visited;
    return n;
  }

  private newNode(lo: number, hi: number): number {
    let n = this.spare;
    if (n !== NIL) {
      this.spare = this.w[2 * n + LEFT];
    } else {
      if (this.slots * STRIDE === this.f.length) this.grow();
      n = this.slots++ * STRIDE;
    }
    const f = this.f;
    const w = this.w;
    f[n + LO] = lo;
    f[n + HI] = hi;
    w[2 * n + LEFT] = w[2 * n + RIGHT] = NIL;
    w[2 * n + PARENT] = NIL;
    w[2 * n + HEIGHT] = 1;
    return n;
  }

  /** Doubles the node array; amortised O(1) a node, never once the tree stops growing. */
  private grow(): void {
    const w = new Int32Array(this.w.length * 2); // an integer copy moves every bit as it is
    w.set(this.w);
    this.w = w;
    this.f = new Float64Array(w.buffer);
  }

  private setGap(n: number, gapLo: number): void {
    this.f[n + GAP_LO] = gapLo;
    this.f[n + FIT] = alignedFit(gapLo, this.f[n + LO] - 1);
  }

  /** Height and subtree maxima of `n` from its children (NIL gives 0) and its own gap; false if none changed. */
  private pull(n: number): boolean {
    const f = this.f;
    const w = this.w;
    const l = w[2 * n + LEFT]!;
    const r = w[2 * n + RIGHT]!;
    const hl = w[2 * l + HEIGHT]!;
    const hr = w[2 * r + HEIGHT]!;
    const height = (hl > hr ? hl : hr) + 1;
    let maxGap = f[n + LO]! - f[n + GAP_LO]!;
    let x = f[l + MAX_GAP]!;
    if (x > maxGap) maxGap = x;
    x = f[r + MAX_GAP]!;
    if (x > maxGap) maxGap = x;
    let maxFit = f[n + FIT]!;
    x = f[l + MAX_FIT]!;
    if (x > maxFit) maxFit = x;
    x = f[r + MAX_FIT]!;
    if (x > maxFit) maxFit = x;
    if (height === w[2 * n + HEIGHT] && maxGap === f[n + MAX_GAP] && maxFit === f[n + MAX_FIT]) return false;
    w[2 * n + HEIGHT] = height;
    f[n + MAX_GAP] = maxGap;
    f[n + MAX_FIT] = maxFit;
    return true;
  }

  /**
   * Recomputes height and maxima from `n` upwards, rotating where the heights
   * drift apart by two. `dirty` is a node on the way whose own gap changed or
   * that moved: above it, the walk stops at the first node that comes out
   * unchanged, as nothing higher up depends on anything else. If `dirty` is
   * not on the way, the walk goes to the root.
   */
  private rebalanceUp(n: number, dirty: number): void {
    const w = this.w;
    let aboveDirty = false;
    while (n !== NIL) {
      const atDirty = n === dirty; // a rotation here would move it down: remember
      let changed = this.pull(n);
      const l = w[2 * n + LEFT]!;
      const r = w[2 * n + RIGHT]!;
      const balance = w[2 * l + HEIGHT]! - w[2 * r + HEIGHT]!;
      if (balance > 1) {
        if (w[2 * w[2 * l + LEFT]! + HEIGHT]! < w[2 * w[2 * l + RIGHT]! + HEIGHT]!) this.rotateLeft(l);
        n = this.rotateRight(n);
        changed = true;
      } else if (balance < -1) {
        if (w[2 * w[2 * r + RIGHT]! + HEIGHT]! < w[2 * w[2 * r + LEFT]! + HEIGHT]!) this.rotateRight(r);
        n = this.rotateLeft(n);
        changed = true;
      }
      if (!changed && aboveDirty) return;
      if (atDirty) aboveDirty = true;
      n = w[2 * n + PARENT]!;
    }
  }

  private rotateLeft(x: number): number {
    const y = this.w[2 * x + RIGHT];
    this.link(this.w[2 * y + LEFT], x, RIGHT);
    this.replaceChild(x, y);
    this.link(x, y, LEFT);
    this.pull(x);
    this.pull(y);
    return y;
  }

  private rotateRight(x: number): number {
    const y = this.w[2 * x + LEFT];
    this.link(this.w[2 * y + RIGHT], x, LEFT);
    this.replaceChild(x, y);
    this.link(x, y, RIGHT);
    this.pull(x);
    this.pull(y);
    return y;
  }

  /** Hangs `child` (possibly NIL) on `parent`'s LEFT or RIGHT. */
  private link(child: number, parent: number, side: typeof LEFT | typeof RIGHT): void {
    this.w[2 * parent + side] = child;
    if (child !== NIL) this.w[2 * child + PARENT] = parent;
  }

  /** Puts `v` (possibly NIL) where `u` hangs from its parent, or at the root. */
  private replaceChild(u: number, v: number): void {
    const p = this.parent(u);
    if (v !== NIL) this.w[2 * v + PARENT] = p;
    if (p === NIL) this.root = v; // the anchor keeps the tree non-empty
    else this.w[2 * p + (this.w[2 * p + LEFT] === u ? LEFT : RIGHT)] = v;
  }

  private parent(n: number): number {
    return this.w[2 * n + PARENT];
  }

  private height(n: number): number {
    return this.w[2 * n + HEIGHT];
  }

  private leftmost(n: number): number {
    for (let l = this.w[2 * n + LEFT]; l !== NIL; l = this.w[2 * n + LEFT]) n = l;
    return n;
  }

  private rightmost(n: number): number {
    for (let r = this.w[2 * n + RIGHT]; r !== NIL; r = this.w[2 * n + RIGHT]) n = r;
    return n;
  }
}

/** Exact for powers of two and pfns below 2^53: division by a power of two loses nothing. */
export const alignDown = (pfn: number, align: number): number => (align === 1 ? pfn : Math.floor(pfn / align) * align);
