// The IOVA allocator interface that every allocation strategy implements
// (Linux include/linux/iova.h: alloc_iova, free_iova, reserve_iova and the
// DMA API's alloc_iova_fast / free_iova_fast). Linux's own strategy is in
// dma/iova/linux.ts.
//
// Everything is in page frame numbers of the domain's granule, so a 64-bit
// IOVA space (2^52 pfns of 4 KiB) is exact in a JS number. Invariants every
// strategy keeps:
//   - a range handed out is [pfn, pfn + size - 1] with startPfn <= pfn and
//     pfn + size - 1 <= limitPfn (limits are inclusive, as dma-iommu passes them);
//   - it overlaps no live range and no reserved range;
//   - a size-aligned range starts at a multiple of size rounded up to a power of two;
//   - pfns never exceed IOVA_MAX_PFN; -1 means no space.
import type { IovaStats } from '../abi/report.ts';
import type { Cpus } from '../kernel/smp.ts';
import type { Timers } from '../kernel/timer.ts';

/** The highest pfn any strategy hands out: 2^53 - 2, so `limitPfn + 1` stays exact. */
export const IOVA_MAX_PFN = Number.MAX_SAFE_INTEGER - 1;


export interface IovaDomain {
  /** The lowest pfn handed out (iova_domain.start_pfn, at least 1 so IOVA 0 stays invalid). */
  readonly startPfn: number;
  /** alloc_iova: `size` pfns at or below `limitPfn`, aligned to size's next power of two if `sizeAligned`. */
  alloc(size: number, limitPfn: number, sizeAligned: boolean): number;
  /** free_iova: releases the range `alloc` returned at `pfn` (`size` as allocated). */
  free(pfn: number, size: number): void;
  /** reserve_iova: [pfnLo, pfnHi] is never handed out. False when the range is invalid. */
  reserve(pfnLo: number, pfnHi: number): boolean;
  /**
   * alloc_iova_fast, the DMA API's path: always size-aligned, may round small
   * sizes up and serve them from caches. When nothing fits and `flushRcache`,
   * cached ranges go back to the allocator and the allocation is tried again.
   * `physPfn` is the first guest-physical pfn the range will map: only the
   * identity strategy looks at it.
   */
  allocFast(size: number, limitPfn: number, flushRcache: boolean, physPfn?: number): number;
  /** free_iova_fast: `size` as passed to allocFast; the range may be kept in a cache for reuse. */
  freeFast(pfn: number, size: number): void;
  stats(): IovaStats;
  /**
   * Bytes the allocator's own structures would take in a C kernel (tree
   * nodes, bitmaps, magazines, hash buckets), counted from what it holds now:
   * the benchmark's memory per live range.
   */
  footprintBytes(): number;
}

/** The allocFast half of IovaStats, counted the one way every strategy counts it. */
export class IovaFastCounters {
  allocs = 0;
  failures = 0;
  rcacheHits = 0;
  rcacheMisses = 0;

  /** A cache served the allocation. */
  hit(pfn: number): number {
    this.rcacheHits++;
    this.allocs++;
    return pfn;
  }

  /** The allocator proper answered `pfn`, -1 when it found no space. */
  miss(pfn: number): number {
    this.rcacheMisses++;
    if (pfn < 0) this.failures++;
    else this.allocs++;
    return pfn;
  }
}

/** What a strategy is built from: the granule, the lowest pfn, and the CPUs and timers its caches use. */
export interface IovaDomainParams {
  readonly granuleShift: number;
  readonly startPfn: number;
  readonly cpus: Cpus;
  readonly timers: Pick<Timers, 'add'>;
}

/** roundup_pow_of_two, exact for every pfn count. */
export function roundupPow2(n: number): number {
  if (n <= 1) return 1;
  if (n <= 2 ** 31) return 2 ** (32 - Math.clz32(n - 1));
  let p = 2 ** Math.ceil(Math.log2(n)); // log2 may round either way this far up
  if (p / 2 >= n) p /= 2;
  return p < n ? p * 2 : p;
}
