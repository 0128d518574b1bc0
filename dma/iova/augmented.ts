// Strategy `augmented`: Linux's policy (top-down: the highest fitting range at
// or below the limit) on a search tree that indexes the free space, so every
// operation is O(log n) in the worst case, under any limit, however
// fragmented the space. It answers the linear walk of iova.c under
// fragmentation, and the way a plain max-gap tree degrades to O(n) under a
// 32-bit limit when the free space above the limit satisfies every maximum.
//
// One data structure: a GapTree (dma/iova/gap-tree.ts), an AVL tree of the
// allocated and reserved ranges plus an anchor above them all. Each node
// owns the free gap below its range, and each subtree records its largest
// gap twice: in pfns, for unaligned requests, and as the largest size-aligned
// request any of its gaps can take. The second is exact, not a bound: a gap
// that fits an aligned range only at a lucky alignment is found like any
// other, at no extra cost, because the sizes a gap takes aligned are always
// 1 .. some maximum (gap-tree.ts says why).
//
// Invariants: the tree holds every live and reserved range, disjoint, and the
// anchor above them; the free pfns at or above startPfn are exactly the gaps;
// the subtree maxima are exact. Nothing is cached: this strategy measures
// the tree itself.
//
// Costs, n ranges in the tree, h <= 1.44 log2(n + 2) its height:
//   alloc / allocFast: one walk to the limit (h nodes), back up the nodes
//     where it turned right, checking each one's gap and left subtree's
//     maximum (h), and one descent into the first subtree that fits (h):
//     at most 3h nodes, whether it succeeds or fails; then an insert (h);
//   free / freeFast: a lookup (h), then the walk back up (h), which stops
//     as soon as heights and maxima stop changing;
//   reserve: O((k + 1) log n) for the k ranges it overlaps. Unlike iova.c it
//     extends none of them: the holes between them become ranges of their own.
import type { IovaStats } from '../../abi/report.ts';
import { IOVA_MAX_PFN, IovaFastCounters, roundupPow2, type IovaDomain, type IovaDomainParams } from '../iova.ts';
import { GapTree, NIL, alignDown } from './gap-tree.ts';

/**
 * A node in C: parent (with the balance in its low bits), left, right,
 * pfn_lo, pfn_hi, gap_lo, subtree max gap, subtree max aligned fit: eight
 * words, one 64-byte cache line, the same slab object size as struct iova
 * with SLAB_HWCACHE_ALIGN. The node's own gap and fit are a few instructions
 * from pfn_lo and gap_lo, so they need no words of their own (the JS layout
 * keeps the fit instead and moves the parent aside).
 */
const GAP_NODE_BYTES = 64;

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
    const node = this.tree.find(pfn);
    if (node !== NIL && node !== this.tree.anchor) this.tree.erase(node);
  }

  reserve(pfnLo: number, pfnHi: number): boolean {
    if (pfnLo > pfnHi || pfnLo < 0 || pfnHi > IOVA_MAX_PFN) return false;
    // Fill the holes between the ranges it overlaps, up to the anchor at worst.
    let lo = pfnLo;
    for (let n = this.tree.ceilByEnd(pfnLo); lo <= pfnHi; n = this.tree.next(n)) {
      if (lo < this.tree.lo(n)) this.tree.insertBefore(lo, Math.min(pfnHi, this.tree.lo(n) - 1), n);
      lo = this.tree.hi(n) + 1;
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
    return this.tree.size * GAP_NODE_BYTES;
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
    const succ = this.tree.findFit(size, align, limit);
    if (succ === NIL) return -1;
    const pfn = alignDown(Math.min(this.tree.lo(succ) - 1, limit) - size + 1, align);
    this.tree.insertBefore(pfn, pfn + size - 1, succ);
    return pfn;
  }
}
