// EiovaR (Malka, Amit, Tsafrir, FAST'15) as an IOVA allocator (strategy
// `eiovar`): exact-size freelists of freed ranges in front of Linux's tree.
// DMA API traffic uses a handful of sizes, so a range freed by freeFast is
// kept, still allocated in the tree, on the freelist of its size, and the next
// allocFast of that size takes it back without a tree walk. Unlike the Linux
// rcache there are no per-CPU magazines, no rounding to size classes and no
// bound on what a freelist holds: the tree gets the ranges back only when it
// runs out of space and the caller allows a flush.
//
// Invariants: the tree (dma/iova/linux.ts, without its rcache) holds every
// live, cached and reserved range; freelist s holds first pfns of ranges of
// exactly s pfns that allocFast handed out (so size-aligned), each once.
//
// Complexity: allocFast O(1) on a freelist hit: at most EIOVAR_SCAN entries
// are looked at for one under the limit, the most recently freed first; a miss
// costs the tree's walk plus O(log n) insert. freeFast O(1) (a push); free
// O(log n) (the tree's find and erase).
import type { IovaStats } from '../../abi/report.ts';
import { IovaFastCounters, type IovaDomain, type IovaDomainParams } from '../iova.ts';
import { LinuxIovaDomain } from './linux.ts';

/**
 * Freelist entries allocFast looks at for one under the limit. One limit per
 * device makes the first entry fit; a device that tries 32-bit first (as
 * PCI devices do) meets high ranges on top, and a bounded look keeps a hit
 * O(1) at the price of missing deeper ones until a flush.
 */
export const EIOVAR_SCAN = 32;
/** A freelist entry links the tree node it keeps (already counted by the tree). */
const EIOVAR_ENTRY_BYTES = 16;
/** A freelist head and its size, in a small hash by size. */
const EIOVAR_LIST_BYTES = 32;

export class EiovarIovaDomain implements IovaDomain {
  readonly startPfn: number;
  private readonly tree: LinuxIovaDomain;
  /** Exact size → first pfns of freed ranges, a stack: the most recently freed is on top. */
  private readonly freelists = new Map<number, number[]>();
  private cached = 0;
  private readonly counters = new IovaFastCounters();

  constructor(params: IovaDomainParams) {
    this.startPfn = params.startPfn;
    this.tree = new LinuxIovaDomain(params, false);
  }

  alloc(size: number, limitPfn: number, sizeAligned: boolean): number {
    return this.tree.alloc(size, limitPfn, sizeAligned);
  }

  free(pfn: number, _size?: number): void {
    this.tree.free(pfn);
  }

  reserve(pfnLo: number, pfnHi: number): boolean {
    return this.tree.reserve(pfnLo, pfnHi);
  }

  allocFast(size: number, limitPfn: number, flushRcache: boolean): number {
    const list = this.freelists.get(size);
    const pfn = list ? this.popFit(list, limitPfn + 1 - size) : -1;
    if (pfn >= 0) return this.counters.hit(pfn);
    let got = this.tree.alloc(size, limitPfn, true);
    if (got < 0 && flushRcache && this.cached > 0) {
      this.flush();
      got = this.tree.alloc(size, limitPfn, true);
    }
    return this.counters.miss(got);
  }

  freeFast(pfn: number, size: number): void {
    let list = this.freelists.get(size);
    if (!list) this.freelists.set(size, (list = []));
    list.push(pfn);
    this.cached++;
  }

  stats(): IovaStats {
    return { ...this.counters, ranges: this.tree.stats().ranges };
  }

  /** The tree's nodes (cached ranges included), a link per freelist entry, a head per size. */
  footprintBytes(): number {
    return this.tree.footprintBytes() + this.cached * EIOVAR_ENTRY_BYTES + this.freelists.size * EIOVAR_LIST_BYTES;
  }

  /** Ranges waiting on freelists (for tests). */
  cachedRanges(): number {
    return this.cached;
  }

  /** For tests: the tree's invariants hold, and every cached range is still in it. */
  validate(): void {
    this.tree.validate();
    let n = 0;
    for (const list of this.freelists.values()) n += list.length;
    if (n !== this.cached) throw new Error(`eiovar: ${n} cached ranges, counted ${this.cached}`);
  }

  /** The topmost of the first EIOVAR_SCAN entries at or below `maxPfn`, swap-removed with the top; -1 if none. */
  private popFit(list: number[], maxPfn: number): number {
    const top = list.length - 1;
    const stop = Math.max(0, list.length - EIOVAR_SCAN);
    for (let i = top; i >= stop; i--) {
      const pfn = list[i]!;
      if (pfn > maxPfn) continue;
      list[i] = list[top]!;
      list.pop();
      this.cached--;
      return pfn;
    }
    return -1;
  }

  /** Every freelist goes back to the tree. */
  private flush(): void {
    for (const list of this.freelists.values()) for (const pfn of list) this.tree.free(pfn);
    this.freelists.clear();
    this.cached = 0;
  }
}
