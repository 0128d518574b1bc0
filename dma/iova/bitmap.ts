// A PowerPC-style IOVA allocator (arch/powerpc/kernel/iommu.c, struct
// iommu_table): a bitmap of pfns, split into pools that each have a next-fit
// hint, with CPUs hashed onto the small pools and requests above 15 pages sent
// to a large pool (strategy `bitmap`).
//
// Layout. A flat bitmap over 2^53 pfns cannot exist, so the bitmap is sparse:
// fixed windows of 2^15 pfns (a 4 KiB Uint32Array each, like Arm's legacy
// IOVA bitmaps), created when a search first touches them and kept from then
// on. Pools live in tables, and a table is the TCE window of one DMA limit:
// the top 4 GiB of IOVA at or below the limit (2^(32 - granuleShift) pfns,
// the span of a 32-bit mask), never below startPfn. A 32-bit device's table
// is therefore its whole space; a 64-bit device gets a window of the same
// size under its mask. A table of at least 1 GiB has 4 small pools over its
// bottom three quarters, a smaller one has 1; the large pool is the top
// quarter. Tables are made at the first allocation under their limit and
// only steer searches; the bitmap behind them is shared, so tables whose
// windows overlap (limit 0xfff inside limit 0xfffff) see each other's bits.
// When a table is full, allocation fails, as with a full TCE window, even if
// the space below the window is free.
//
// Search (iommu_range_alloc): the CPU's pool (hash_32(cpu, 2)), or the large
// pool for more than 15 pages; next-fit from its hint to its end, then from
// its start, then each other small pool from its start, then the large pool,
// then give up. A range never crosses a pool boundary. After a small
// allocation the hint moves to the next 16-pfn boundary (it_blocksize, the
// TCEs in one cache line: 16 of 8 bytes in 128), so the next small mapping
// starts on a fresh line; after a large one, to its end, to waste nothing.
// Allocation is bottom-up within a pool; size-aligned ranges are aligned in
// absolute pfns. Reserve ranges before allocating in them, as dma-iommu does
// at domain init: freeing a live range clears its bits, reserved or not.
//
// Invariants:
//   - a set bit is a pfn that is live or reserved, a clear bit is free: there
//     is no other record of what is allocated, so free(pfn, size) clears
//     exactly what alloc set;
//   - a window's `used` is the number of its set bits (full windows are
//     skipped without reading them, empty ones when looking for a set bit);
//   - every reserved range is in `reserved`, and its bits are set in every
//     window that exists: at reserve time for windows already made, at
//     creation for the rest (PowerPC sets it_reserved bits at table init);
//   - a pool is [start, end) inside its table; hints may lie anywhere in it
//     or at its end.
//
// Cost: alloc is O(1) word reads when the bit at the hint is free, and at
// worst O(pool pfns / 32) word reads per pass, over at most nr_pools + 2
// passes (full windows cost O(1)). free is O(size / 32): it clears bits.
import type { IovaStats } from '../../abi/report.ts';
import { IOVA_MAX_PFN, IovaFastCounters, roundupPow2, type IovaDomain, type IovaDomainParams } from '../iova.ts';

const WINDOW_SHIFT = 15;
const WINDOW_PFNS = 1 << WINDOW_SHIFT;
const WINDOW_WORDS = WINDOW_PFNS >>> 5;
/** IOMMU_POOL_HASHBITS: 1 << 2 small pools in a table of 1 GiB or more. */
const POOL_HASH_BITS = 2;
const NR_POOLS = 1 << POOL_HASH_BITS;
/** Requests of more pages than this go to the large pool. */
const LARGE_ALLOC_PAGES = 15;
/** it_blocksize: a small allocation's hint moves to the next multiple of this. */
const HINT_BLOCK_PFNS = 16;
/** GOLDEN_RATIO_32, for hash_32(). */
const GOLDEN_RATIO_32 = 0x61c88647;

/** In a C kernel: the 4 KiB bitmap plus its pointer in the window directory. */
const WINDOW_BYTES = WINDOW_PFNS / 8 + 8;
/** struct iommu_table's header plus 5 cache-line-aligned struct iommu_pool. */
const TABLE_BYTES = 64 + (NR_POOLS + 1) * 64;
/** A reserved range: two pfns. */
const RESERVED_BYTES = 16;

class BitmapWindow {
  readonly bits = new Uint32Array(WINDOW_WORDS);
  used = 0;
}

/** struct iommu_pool: [start, end) and where the next search starts. */
export interface IommuPool {
  readonly start: number;
  readonly end: number;
  hint: number;
}

/** The TCE window of one limit: [start, end) carved into small pools and the large pool. */
interface IommuTable {
  readonly start: number;
  readonly end: number;
  readonly pools: readonly IommuPool[];
  readonly largePool: IommuPool;
}

export class BitmapIovaDomain implements IovaDomain {
  readonly startPfn: number;
  /** Pfns a table spans: 4 GiB of IOVA. */
  private readonly tablePfns: number;
  private readonly windows = new Map<number, BitmapWindow>();
  private readonly tables = new Map<number, IommuTable>();
  private readonly reserved: { lo: number; hi: number }[] = [];
  // One-entry caches: most searches stay in one window and under one limit.
  private lastWindowIdx = -1;
  private lastWindow: BitmapWindow | undefined;
  private lastLimit = -1;
  private lastTable: IommuTable | undefined;
  private live = 0;
  private readonly counters = new IovaFastCounters();

  constructor(private readonly params: IovaDomainParams) {
    this.startPfn = params.startPfn;
    this.tablePfns = 2 ** (32 - params.granuleShift);
  }

  alloc(size: number, limitPfn: number, sizeAligned: boolean): number {
    const pfn = this.rangeAlloc(size, limitPfn, sizeAligned ? sizeAlignment(size) : 1);
    if (pfn >= 0) this.live++;
    return pfn;
  }

  free(pfn: number, size: number): void {
    this.clearRange(pfn, pfn + size);
    this.live--;
  }

  reserve(pfnLo: number, pfnHi: number): boolean {
    if (pfnLo > pfnHi || pfnLo < 0 || pfnHi > IOVA_MAX_PFN) return false;
    this.reserved.push({ lo: pfnLo, hi: pfnHi });
    for (const [idx, win] of this.windows) this.applyReserved(win, idx * WINDOW_PFNS, pfnLo, pfnHi);
    return true;
  }

  /** No caches: every call is a miss that goes to the bitmap. */
  allocFast(size: number, limitPfn: number, _flushRcache: boolean): number {
    return this.counters.miss(this.alloc(size, limitPfn, true));
  }

  freeFast(pfn: number, size: number): void {
    this.free(pfn, size);
  }

  stats(): IovaStats {
    return { ...this.counters, ranges: this.live + this.reserved.length };
  }

  footprintBytes(): number {
    return this.windows.size * WINDOW_BYTES + this.tables.size * TABLE_BYTES + this.reserved.length * RESERVED_BYTES;
  }

  /** For tests: the pools of the table under `limitPfn`, large pool last (made if it is not yet); hints can be moved. */
  poolsFor(limitPfn: number): readonly IommuPool[] {
    const table = this.tableFor(limitPfn);
    return table ? [...table.pools, table.largePool] : [];
  }

  /** For tests: whether `pfn` is live or reserved. */
  isSet(pfn: number): boolean {
    const bit = pfn % WINDOW_PFNS;
    return (this.window(Math.floor(pfn / WINDOW_PFNS)).bits[bit >>> 5]! & (1 << (bit & 31))) !== 0;
  }

  /** For tests: each window's count matches its bits. */
  validate(): void {
    for (const [idx, win] of this.windows) {
      let n = 0;
      for (const w of win.bits) n += popcount(w);
      if (n !== win.used) throw new Error(`window ${idx}: ${n} bits set but used ${win.used}`);
    }
  }

  /** iommu_range_alloc: own pool from the hint, from its start, the other pools, the large pool. */
  private rangeAlloc(npages: number, limitPfn: number, align: number): number {
    const table = this.tableFor(limitPfn);
    if (!table) return -1;
    const nr = table.pools.length;
    const home = poolHash(this.params.cpus.current) & (nr - 1);
    const own = npages > LARGE_ALLOC_PAGES ? table.largePool : table.pools[home]!;

    const from = own.hint < own.end ? own.hint : own.start;
    let pfn = this.poolAlloc(own, from, npages, align);
    if (pfn < 0 && from !== own.start) pfn = this.poolAlloc(own, own.start, npages, align);
    for (let i = 1; pfn < 0 && i <= nr; i++) {
      const pool = table.pools[(home + i) & (nr - 1)]!;
      if (pool !== own) pfn = this.poolAlloc(pool, pool.start, npages, align);
    }
    if (pfn < 0 && own !== table.largePool) pfn = this.poolAlloc(table.largePool, table.largePool.start, npages, align);
    return pfn;
  }

  /** Takes the first free, aligned area in [from, pool.end) and moves the pool's hint past it. */
  private poolAlloc(pool: IommuPool, from: number, npages: number, align: number): number {
    const pfn = this.findZeroArea(from, pool.end, npages, align);
    if (pfn < 0) return -1;
    const end = pfn + npages;
    this.setRange(pfn, end);
    pool.hint = npages > LARGE_ALLOC_PAGES ? end : Math.ceil(end / HINT_BLOCK_PFNS) * HINT_BLOCK_PFNS;
    return pfn;
  }

  /** bitmap_find_next_zero_area over [from, end): first fit of `npages` clear bits starting at a multiple of `align`. */
  private findZeroArea(from: number, end: number, npages: number, align: number): number {
    let pfn = from;
    for (;;) {
      pfn = this.findNextZero(pfn, end);
      if (pfn < 0) return -1;
      if (align > 1) pfn = Math.ceil(pfn / align) * align;
      if (pfn + npages > end) return -1;
      const busy = this.findNextSet(pfn, pfn + npages);
      if (busy < 0) return pfn;
      pfn = busy + 1;
    }
  }

  /** The first clear bit in [pfn, end), or -1. */
  private findNextZero(pfn: number, end: number): number {
    while (pfn < end) {
      const idx = Math.floor(pfn / WINDOW_PFNS);
      const base = idx * WINDOW_PFNS;
      const win = this.window(idx);
      if (win.used < WINDOW_PFNS) {
        const bit = scanWindow(win.bits, pfn - base, Math.min(end - base, WINDOW_PFNS), -1);
        if (bit >= 0) return base + bit;
      }
      pfn = base + WINDOW_PFNS;
    }
    return -1;
  }

  /** The first set bit in [pfn, end), or -1. */
  private findNextSet(pfn: number, end: number): number {
    while (pfn < end) {
      const idx = Math.floor(pfn / WINDOW_PFNS);
      const base = idx * WINDOW_PFNS;
      const win = this.window(idx);
      if (win.used > 0) {
        const bit = scanWindow(win.bits, pfn - base, Math.min(end - base, WINDOW_PFNS), 0);
        if (bit >= 0) return base + bit;
      }
      pfn = base + WINDOW_PFNS;
    }
    return -1;
  }

  private setRange(pfn: number, end: number): void {
    while (pfn < end) {
      const idx = Math.floor(pfn / WINDOW_PFNS);
      const base = idx * WINDOW_PFNS;
      const win = this.window(idx);
      win.used += fillBits(win.bits, pfn - base, Math.min(end - base, WINDOW_PFNS));
      pfn = base + WINDOW_PFNS;
    }
  }

  private clearRange(pfn: number, end: number): void {
    while (pfn < end) {
      const idx = Math.floor(pfn / WINDOW_PFNS);
      const base = idx * WINDOW_PFNS;
      const win = this.window(idx);
      win.used -= clearBits(win.bits, pfn - base, Math.min(end - base, WINDOW_PFNS));
      pfn = base + WINDOW_PFNS;
    }
  }

  /** The window holding pfns [idx * 2^15, (idx + 1) * 2^15), made with the reserved bits set if new. */
  private window(idx: number): BitmapWindow {
    if (idx === this.lastWindowIdx) return this.lastWindow!;
    let win = this.windows.get(idx);
    if (!win) {
      win = new BitmapWindow();
      const base = idx * WINDOW_PFNS;
      for (const r of this.reserved) this.applyReserved(win, base, r.lo, r.hi);
      this.windows.set(idx, win);
    }
    this.lastWindowIdx = idx;
    this.lastWindow = win;
    return win;
  }

  private applyReserved(win: BitmapWindow, base: number, lo: number, hi: number): void {
    if (hi < base || lo >= base + WINDOW_PFNS) return;
    win.used += fillBits(win.bits, Math.max(lo - base, 0), Math.min(hi + 1 - base, WINDOW_PFNS));
  }

  /** The table of `limitPfn`, made on first use: the top 4 GiB at or below it, not below startPfn. */
  private tableFor(limitPfn: number): IommuTable | undefined {
    if (limitPfn === this.lastLimit) return this.lastTable;
    let table = this.tables.get(limitPfn);
    if (!table) {
      const end = Math.min(limitPfn, IOVA_MAX_PFN) + 1;
      const start = Math.max(end - this.tablePfns, this.startPfn);
      if (start >= end) return undefined;
      table = newTable(start, end, this.params.granuleShift);
      this.tables.set(limitPfn, table);
    }
    this.lastLimit = limitPfn;
    this.lastTable = table;
    return table;
  }
}

/** iommu_init_table's split: 4 pools over the bottom 3/4 from 1 GiB up (else 1), the large pool on top. */
function newTable(start: number, end: number, granuleShift: number): IommuTable {
  const pfns = end - start;
  const nr = pfns * 2 ** granuleShift >= 2 ** 30 ? NR_POOLS : 1;
  const poolPfns = Math.floor(Math.floor((pfns * 3) / 4) / nr);
  const pools: IommuPool[] = [];
  for (let i = 0; i < nr; i++) {
    const s = start + i * poolPfns;
    pools.push({ start: s, end: s + poolPfns, hint: s });
  }
  const largeStart = start + nr * poolPfns;
  return { start, end, pools, largePool: { start: largeStart, end, hint: largeStart } };
}

/** roundup_pow_of_two, by a shift for the sizes DMA mappings have. */
function sizeAlignment(size: number): number {
  return size <= 2 ** 30 ? 1 << (32 - Math.clz32(size - 1)) : roundupPow2(size);
}

/** hash_32(cpu, 2): spreads CPU numbers (and so SMT siblings) over the pools. */
function poolHash(cpu: number): number {
  return Math.imul(cpu, GOLDEN_RATIO_32) >>> (32 - POOL_HASH_BITS);
}

/**
 * The first bit in [from, to) of one window (0 <= from < to <= 2^15) that is
 * clear when `invert` is -1, set when it is 0; -1 if there is none. Words are
 * XORed with `invert`, so both searches look for a set bit.
 */
function scanWindow(bits: Uint32Array, from: number, to: number, invert: number): number {
  let word = from >>> 5;
  let x = (bits[word]! ^ invert) & (-1 << (from & 31));
  const lastWord = (to - 1) >>> 5;
  while (x === 0) {
    if (++word > lastWord) return -1;
    x = bits[word]! ^ invert;
  }
  const bit = (word << 5) + ctz(x);
  return bit < to ? bit : -1;
}

/** Sets bits [from, to) of one window and returns how many were clear. */
function fillBits(bits: Uint32Array, from: number, to: number): number {
  let changed = 0;
  for (let word = from >>> 5; word << 5 < to; word++) {
    const mask = wordMask(word, from, to);
    const old = bits[word]!;
    changed += popcount(mask & ~old);
    bits[word] = old | mask;
  }
  return changed;
}

/** Clears bits [from, to) of one window and returns how many were set. */
function clearBits(bits: Uint32Array, from: number, to: number): number {
  let changed = 0;
  for (let word = from >>> 5; word << 5 < to; word++) {
    const mask = wordMask(word, from, to);
    const old = bits[word]!;
    changed += popcount(mask & old);
    bits[word] = old & ~mask;
  }
  return changed;
}

/** The bits of word `word` that fall in [from, to). */
function wordMask(word: number, from: number, to: number): number {
  const lo = Math.max(from - (word << 5), 0);
  const hi = Math.min(to - (word << 5), 32);
  return (hi === 32 ? -1 : ~(-1 << hi)) & (-1 << lo);
}

/** __ffs of a non-zero word. */
function ctz(x: number): number {
  return 31 - Math.clz32(x & -x);
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}
