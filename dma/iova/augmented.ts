// Strategy `augmented`: Linux's policy (top-down: the highest fitting range at
// or below the limit) on a search tree that indexes the free space, so every
// operation is O(log n) in the worst case, under any limit, however
// fragmented the space. It answers the linear walk of iova.c under
// fragmentation, and the way a plain max-gap tree degrades to O(n) under a
// 32-bit limit when the free space above the limit satisfies every maximum.
//
// One data structure: a GapTree (dma/iova/gap-tree.ts), a B-tree of the
// allocated and reserved ranges plus an anchor above them all, 16 slots a
// node, in flat typed arrays. Each range owns the free gap below it, and
// each internal node records, for each child, the largest gap below it
// twice: in pfns, for unaligned requests, and as the largest size-aligned
// request any of its gaps can take. The second is exact, not a bound: a gap
// that fits an aligned range only at a lucky alignment is found like any
// other, at no extra cost, because the sizes a gap takes aligned are always
// 1 .. some maximum (gap-tree.ts says why). Wide nodes rather than binary
// ones because what an operation costs is its dependent cache misses: a
// binary tree of 300,000 ranges is some 20 levels of them, this one 5, the
// top three of which stay in cache.
//
// Invariants: the tree holds every live and reserved range, disjoint, and the
// anchor above them; the free pfns at or above startPfn are exactly the gaps;
// the per-child maxima are exact. Nothing is cached: this strategy measures
// the tree itself.
//
// Costs, n ranges in the tree, B = 16, h <= 1 + log8(n / 2) its height:
//   alloc / allocFast: one walk to the limit (h nodes), back up that path
//     scanning the slots left of it (no new nodes), and one descent into the
//     first slot that fits (h - 1 more): at most 2h nodes and 3hB slot reads,
//     whether it succeeds or fails; then an insert, which shifts at most B
//     slots a level and splits or spills at most one node a level;
//   free / freeFast: a lookup (h), the removal, and raising the maxima above
//     it (they can only grow: the successor's gap swallows the range), or
//     merging up the path when the leaf falls below half full; a range last
//     in its leaf takes a second lookup to give its gap to the next leaf;
//   reserve: O((k + 1) log n) for the k ranges it overlaps. Unlike iova.c it
//     extends none of them: the holes between them become ranges of their own.
import type { IovaStats } from '../../abi/report.ts';
import { IOVA_MAX_PFN, IovaFastCounters, roundupPow2, type IovaDomain, type IovaDomainParams } from '../iova.ts';
import { GapTree } from './gap-tree.ts';

/** 2^k for k = 0 .. 32, so that rounding a size up costs no Math.pow. */
const POW2_32 = Float64Array.from({ length: 33 }, (_, k) => 2 ** k);

/** roundupPow2, without Math.pow for the sizes a request has. */
function alignOf(size: number): number {
  if (size <= 1) return 1;
  return size <= 2 ** 31 ? POW2_32[32 - Math.clz32(size - 1)]! : roundupPow2(size);
}

export class AugmentedIovaDomain implements IovaDomain {
  readonly startPfn: number;
  private readonly tree: GapTree;
  private readonly counters = new IovaFastCounters();

  constructor(params: IovaDomainParams) {
    this.startPfn = params.startPfn;
    this.tree = new GapTree(params.startPfn, IOVA_MAX_PFN + 1);
  }

  alloc(size: number, limitPfn: number, sizeAligned: boolean): number {
    return this.allocRange(size, limitPfn, sizeAligned ? alignOf(size) : 1);
  }

  /** Finds the range holding `pfn`, as iova.c does; the size is not needed. */
  free(pfn: number, _size?: number): void {
    if (this.tree.find(pfn)) this.tree.erase();
  }

  reserve(pfnLo: number, pfnHi: number): boolean {
    if (pfnLo > pfnHi || pfnLo < 0 || pfnHi > IOVA_MAX_PFN) return false;
    // Fill the holes between the ranges it overlaps, up to the anchor at worst.
    for (let lo = pfnLo; lo <= pfnHi; ) {
      this.tree.seek(lo);
      const nextLo = this.tree.lo();
      const nextHi = this.tree.hi();
      if (lo < nextLo) this.tree.insert(lo, Math.min(pfnHi, nextLo - 1));
      lo = nextHi + 1;
    }
    return true;
  }

  /** Always size-aligned, no caches: every call is a miss that goes to the tree. */
  allocFast(size: number, limitPfn: number, _flushRcache: boolean, _physPfn?: number): number {
    return this.counters.miss(this.allocRange(size, limitPfn, alignOf(size)));
  }

  freeFast(pfn: number, size: number): void {
    this.free(pfn, size);
  }

  stats(): IovaStats {
    return { ...this.counters, ranges: this.tree.size - 1 };
  }

  footprintBytes(): number {
    return this.tree.bytes();
  }

  /** For tests: nodes the last allocation looked at. */
  get lastVisited(): number {
    return this.tree.lastVisited;
  }

  /** For tests: the tree's invariants hold. */
  validate(): void {
    this.tree.validate();
  }

  /** The highest `size` pfns at a multiple of `align` ending at or below `limitPfn`, or -1. */
  private allocRange(size: number, limitPfn: number, align: number): number {
    const limit = Math.min(limitPfn, IOVA_MAX_PFN);
    if (size < 1 || limit - size + 1 < this.startPfn) return -1;
    const pfn = this.tree.findFit(size, align, limit);
    if (pfn >= 0) this.tree.insert(pfn, pfn + size - 1);
    return pfn;
  }
}
