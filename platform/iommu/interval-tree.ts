// Disjoint inclusive intervals [start, end] of frame numbers, each with a value:
// an AVL tree ordered by start, as QEMU keeps a domain's mappings in a GTree
// (also AVL). One per virtio-iommu domain, one per host IOMMU.
//
// Invariants:
//  1. Intervals are pairwise disjoint (insert refuses an overlapping one), so
//     ordering by start orders the ends too: "the first interval ending at or
//     after x" is a plain descent.
//  2. Every node's height is 1 + the larger child height, and the two child
//     heights differ by at most 1: depth <= 1.44 log2(n + 2), so find, insert,
//     remove and each step of an ordered walk cost O(log n).
//
// Keys are Frames: canonical Addrs (abi/addr.ts), a number below 2^53 and a
// bigint from 2^53 up. JavaScript compares a number with a bigint exactly, so
// one tree holds 4 KiB frame numbers (always numbers: 2^64 / 2^12 = 2^52) and,
// for a 1-byte granule, byte addresses up to 2^64 - 1 (bigints above 2^53)
// without rounding; only the high ones pay for bigint arithmetic.
import { type Addr, toAddr } from '../../abi/addr.ts';

/** A frame number (address >> shift), canonical as an Addr. */
export type Frame = Addr;

export interface Interval<V> {
  readonly start: Frame;
  readonly end: Frame;
  readonly value: V;
}

/** The frame holding byte `addr` for frames of 2^shift bytes. */
export function frameOf(addr: Addr, shift: number): Frame {
  if (typeof addr === 'number') return shift === 0 ? addr : Math.floor(addr / 2 ** shift);
  return toAddr(addr >> BigInt(shift));
}

class Node<V> implements Interval<V> {
  left: Node<V> | null = null;
  right: Node<V> | null = null;
  height = 1;

  constructor(
    readonly start: Frame,
    readonly end: Frame,
    readonly value: V,
  ) {}
}

const height = <V>(n: Node<V> | null): number => (n === null ? 0 : n.height);

function update<V>(n: Node<V>): void {
  const l = height(n.left);
  const r = height(n.right);
  n.height = (l > r ? l : r) + 1;
}

function rotateRight<V>(n: Node<V>): Node<V> {
  const l = n.left!;
  n.left = l.right;
  l.right = n;
  update(n);
  update(l);
  return l;
}

function rotateLeft<V>(n: Node<V>): Node<V> {
  const r = n.right!;
  n.right = r.left;
  r.left = n;
  update(n);
  update(r);
  return r;
}

/** Restores invariant 2 at `n` after one of its subtrees changed height by one. */
function balance<V>(n: Node<V>): Node<V> {
  const l = height(n.left);
  const r = height(n.right);
  if (l - r > 1) {
    if (height(n.left!.left) < height(n.left!.right)) n.left = rotateLeft(n.left!);
    return rotateRight(n);
  }
  if (r - l > 1) {
    if (height(n.right!.right) < height(n.right!.left)) n.right = rotateRight(n.right!);
    return rotateLeft(n);
  }
  n.height = (l > r ? l : r) + 1;
  return n;
}

export class IntervalTree<V> {
  private root: Node<V> | null = null;
  private count = 0;
  /** What the last removeAt took out. */
  private removed: Node<V> | undefined = undefined;

  get size(): number {
    return this.count;
  }

  /** Height of the tree: 0 when empty (invariant 2 bounds it by 1.44 log2(size + 2)). */
  get height(): number {
    return height(this.root);
  }

  /** The interval holding frame `x`. */
  find(x: Frame): Interval<V> | undefined {
    let n = this.root;
    while (n !== null) {
      if (x < n.start) n = n.left;
      else if (x > n.end) n = n.right;
      else return n;
    }
    return undefined;
  }

  /** The lowest interval overlapping [start, end]. */
  firstOverlap(start: Frame, end: Frame): Interval<V> | undefined {
    const n = this.firstEndingAtOrAfter(start);
    return n !== null && n.start <= end ? n : undefined;
  }

  /** The interval right after `i` in address order. */
  next(i: Interval<V>): Interval<V> | undefined {
    let n = this.root;
    let found: Node<V> | null = null;
    while (n !== null) {
      if (n.start > i.end) {
        found = n;
        n = n.left;
      } else n = n.right;
    }
    return found ?? undefined;
  }

  /** The interval after `i` if it starts at or before `last`; no search when `i` already reaches `last`. */
  nextUpTo(i: Interval<V>, last: Frame): Interval<V> | undefined {
    if (i.end >= last) return undefined;
    const n = this.next(i);
    return n !== undefined && n.start <= last ? n : undefined;
  }

  /** Adds [start, end] (start <= end); false, and nothing changes, if it overlaps an interval already there. */
  insert(start: Frame, end: Frame, value: V): boolean {
    if (end < start || this.firstOverlap(start, end) !== undefined) return false;
    this.root = this.insertAt(this.root, new Node(start, end, value));
    this.count++;
    return true;
  }

  /** Removes the interval that starts at `start`; returns it, or undefined if there is none. */
  remove(start: Frame): Interval<V> | undefined {
    this.removed = undefined;
    this.root = this.removeAt(this.root, start);
    if (this.removed !== undefined) this.count--;
    return this.removed;
  }

  clear(): void {
    this.root = null;
    this.count = 0;
  }

  /** Every interval, lowest first. */
  *[Symbol.iterator](): IterableIterator<Interval<V>> {
    const stack: Node<V>[] = [];
    for (let n = this.root; n !== null || stack.length > 0; ) {
      while (n !== null) {
        stack.push(n);
        n = n.left;
      }
      const top = stack.pop()!;
      yield top;
      n = top.right;
    }
  }

  private firstEndingAtOrAfter(x: Frame): Node<V> | null {
    let n = this.root;
    let found: Node<V> | null = null;
    while (n !== null) {
      if (n.end >= x) {
        found = n;
        n = n.left;
      } else n = n.right;
    }
    return found;
  }

  /** Throws unless invariants 1 and 2 hold and every stored height is exact; for tests. */
  validate(): void {
    let prev: Node<V> | undefined;
    const check = (n: Node<V> | null): number => {
      if (n === null) return 0;
      const l = check(n.left);
      if (n.end < n.start || (prev !== undefined && prev.end >= n.start)) throw new Error(`interval [${n.start}, ${n.end}] out of order or overlapping`);
      prev = n;
      const r = check(n.right);
      if (Math.abs(l - r) > 1 || n.height !== Math.max(l, r) + 1) throw new Error(`node at ${n.start}: heights ${l} and ${r}, stored ${n.height}`);
      return n.height;
    };
    check(this.root);
  }

  // Both walks stop rebalancing where a subtree's height comes out unchanged:
  // nothing above it can have changed either.

  private insertAt(n: Node<V> | null, add: Node<V>): Node<V> {
    if (n === null) return add;
    if (add.start < n.start) {
      const h = height(n.left);
      n.left = this.insertAt(n.left, add);
      if (n.left.height === h) return n;
    } else {
      const h = height(n.right);
      n.right = this.insertAt(n.right, add);
      if (n.right.height === h) return n;
    }
    return balance(n);
  }

  /** Removes the node starting at `start` from the subtree `n`, if it is there, into `removed`. */
  private removeAt(n: Node<V> | null, start: Frame): Node<V> | null {
    if (n === null) return null;
    if (start < n.start) {
      const h = height(n.left);
      n.left = this.removeAt(n.left, start);
      if (height(n.left) === h) return n;
    } else if (start > n.start) {
      const h = height(n.right);
      n.right = this.removeAt(n.right, start);
      if (height(n.right) === h) return n;
    } else {
      this.removed = n;
      if (n.left === null) return n.right;
      if (n.right === null) return n.left;
      // Two children: the successor takes this node's place.
      let s = n.right;
      while (s.left !== null) s = s.left;
      s.right = this.removeMin(n.right);
      s.left = n.left;
      return balance(s);
    }
    return balance(n);
  }

  private removeMin(n: Node<V>): Node<V> | null {
    if (n.left === null) return n.right;
    const h = n.left.height;
    n.left = this.removeMin(n.left);
    if (height(n.left) === h) return n;
    return balance(n);
  }
}
