import { describe, expect, it } from 'vitest';
import { IOVA_MAX_PFN } from '../../dma/iova.ts';
import { BitmapIovaDomain } from '../../dma/iova/bitmap.ts';
import { describeIovaStrategy, iovaDomain } from './iova-suite.ts';

describeIovaStrategy('bitmap', (p) => new BitmapIovaDomain(p));

const DMA32_LIMIT = 0xfffff;
const LIMIT_48 = 2 ** 36 - 1;

function domain(opts: { startPfn?: number; cpus?: number } = {}) {
  const { iovad, cpus } = iovaDomain((p) => new BitmapIovaDomain(p), opts);
  return { iovad: iovad as BitmapIovaDomain, cpus };
}

describe('bitmap IOVA allocator: tables and pools', () => {
  it('gives a 4 GiB table 4 small pools over its bottom 3/4 and the large pool on top', () => {
    const { iovad } = domain({ startPfn: 0 });
    const pools = iovad.poolsFor(DMA32_LIMIT).map((p) => [p.start, p.end]);
    const q = 0x30000; // (2^20 * 3/4) / 4
    expect(pools).toEqual([
      [0, q],
      [q, 2 * q],
      [2 * q, 3 * q],
      [3 * q, 4 * q],
      [4 * q, 0x100000],
    ]);
  });

  it('gives a table under 1 GiB one small pool, and never covers pfns below startPfn', () => {
    const { iovad } = domain({ startPfn: 1 });
    expect(iovad.poolsFor(0xfff).map((p) => [p.start, p.end])).toEqual([
      [1, 3072],
      [3072, 0x1000],
    ]);
  });

  it('puts a 64-bit limit’s table at the top 4 GiB under the limit', () => {
    const { iovad } = domain();
    const pools = iovad.poolsFor(LIMIT_48);
    expect(pools[0]!.start).toBe(LIMIT_48 + 1 - 2 ** 20);
    expect(pools.at(-1)!.end).toBe(LIMIT_48 + 1);
    expect(iovad.alloc(1, LIMIT_48, true)).toBeGreaterThanOrEqual(LIMIT_48 + 1 - 2 ** 20);
  });

  it('sends each CPU to the pool hash_32(cpu, 2) picks', () => {
    const { iovad, cpus } = domain({ startPfn: 0x10 });
    const pools = iovad.poolsFor(DMA32_LIMIT);
    const poolOf = (pfn: number) => pools.findIndex((p) => p.start <= pfn && pfn < p.end);
    const got = [0, 1, 2, 3].map((cpu) => poolOf(cpus.runOn(cpu, () => iovad.allocFast(1, DMA32_LIMIT, true))));
    expect(got).toEqual([0, 1, 3, 0]);
  });

  it('sends more than 15 pages to the large pool, 15 and fewer to the CPU’s pool', () => {
    const { iovad } = domain();
    const [pool0, , , , large] = iovad.poolsFor(DMA32_LIMIT);
    const small = iovad.alloc(15, DMA32_LIMIT, false);
    const big = iovad.alloc(16, DMA32_LIMIT, false);
    expect(small).toBe(pool0!.start);
    expect(big).toBe(large!.start);
  });

  it('moves a small allocation’s hint to the next 16-pfn block, a large one’s to its end', () => {
    const { iovad } = domain();
    const [pool0, , , , large] = iovad.poolsFor(DMA32_LIMIT);
    expect([1, 2, 3].map(() => iovad.alloc(1, DMA32_LIMIT, true))).toEqual([1, 16, 32]);
    expect(pool0!.hint).toBe(48);
    const a = iovad.alloc(20, DMA32_LIMIT, false);
    expect(iovad.alloc(20, DMA32_LIMIT, false)).toBe(a + 20);
    expect(large!.hint).toBe(a + 40);
    // Size-aligned from the hint: the next multiple of 32 at or above it.
    expect(iovad.alloc(17, DMA32_LIMIT, true)).toBe(Math.ceil((a + 40) / 32) * 32);
  });

  it('is next-fit: space freed below the hint is found only after the pool runs out', () => {
    const { iovad } = domain({ startPfn: 0x10 });
    const [pool0] = iovad.poolsFor(0xff); // [0x10, 0xc4): 3/4 of the 240 pfns
    const first = iovad.alloc(1, 0xff, true);
    iovad.free(first, 1);
    expect(iovad.alloc(1, 0xff, true)).toBe(first + 16);
    pool0!.hint = pool0!.end;
    expect(iovad.alloc(1, 0xff, true)).toBe(first);
  });

  it('tries its own pool from the start, then the other pools, then the large pool', () => {
    const { iovad } = domain({ startPfn: 0x10 });
    const pools = iovad.poolsFor(0xff);
    const got: number[] = [];
    for (let pfn = iovad.alloc(1, 0xff, true); pfn >= 0; pfn = iovad.alloc(1, 0xff, true)) got.push(pfn);
    // The small pool fills first (a sweep of 16-pfn blocks, then from its start), then the large pool.
    const smallPfns = pools[0]!.end - pools[0]!.start;
    expect(got.slice(0, smallPfns).every((p) => p < pools[0]!.end)).toBe(true);
    expect(got.slice(smallPfns).every((p) => p >= pools[1]!.start)).toBe(true);
    expect(new Set(got).size).toBe(0xf0);
    // A range never crosses a pool boundary, even when the free pages would be contiguous.
    iovad.free(pools[0]!.end - 1, 1);
    iovad.free(pools[1]!.start, 1);
    expect(iovad.alloc(2, 0xff, false)).toBe(-1);
  });

  it('falls over to the next small pool when its own is full', () => {
    const { iovad, cpus } = domain({ startPfn: 0 });
    const limit = 0x3ffff; // a 1 GiB table: 4 pools of 0xc000 pfns
    const pools = iovad.poolsFor(limit);
    expect(pools[0]!.end).toBe(0xc000);
    // CPU 0 fills pool 0: a 15-page range in each 16-pfn block, then from the start the pages between them.
    for (let pfn = 0; pfn < 0xc000; pfn += 16) expect(iovad.alloc(15, limit, false)).toBe(pfn);
    for (let pfn = 15; pfn < 0xc000; pfn += 16) expect(iovad.alloc(1, limit, false)).toBe(pfn);
    expect(iovad.alloc(1, limit, false)).toBe(pools[1]!.start);
    expect(cpus.runOn(2, () => iovad.alloc(1, limit, false))).toBe(pools[3]!.start);
  });
});

describe('bitmap IOVA allocator: bits', () => {
  it('sets reserved bits at reserve time in windows that exist, and when a window is made', () => {
    const { iovad } = domain();
    const pfn = iovad.alloc(1, DMA32_LIMIT, true); // makes the window of pfns 0..0x7fff
    expect(iovad.reserve(0x20, 0x9000)).toBe(true); // into that window and the next, not yet made
    expect(iovad.footprintBytes()).toBeGreaterThan(0);
    for (const p of [0x20, 0x7fff, 0x8000, 0x9000]) expect(iovad.isSet(p), `pfn ${p}`).toBe(true);
    for (const p of [0x1f, 0x9001]) expect(iovad.isSet(p), `pfn ${p}`).toBe(false);
    iovad.validate();
    iovad.free(pfn, 1);
    expect(iovad.isSet(pfn)).toBe(false);
    iovad.validate();
  });

  it('never hands out a reserved pfn, even at the top of the pfn space', () => {
    const { iovad } = domain();
    expect(iovad.reserve(IOVA_MAX_PFN - 3, IOVA_MAX_PFN)).toBe(true);
    const large = iovad.poolsFor(IOVA_MAX_PFN).at(-1)!;
    large.hint = IOVA_MAX_PFN - 19;
    expect(iovad.alloc(16, IOVA_MAX_PFN, false)).toBe(IOVA_MAX_PFN - 19); // ends just below the reserved pfns
    // Nothing is left between the hint and the end of the pool: the search goes back to the pool's start.
    expect(iovad.alloc(16, IOVA_MAX_PFN, false)).toBe(large.start);
    for (const p of [IOVA_MAX_PFN - 3, IOVA_MAX_PFN]) expect(iovad.isSet(p)).toBe(true);
    iovad.validate();
  });

  it('allocates and frees ranges across window boundaries, counting bits exactly', () => {
    const { iovad } = domain({ startPfn: 0 });
    const [, , , , large] = iovad.poolsFor(DMA32_LIMIT);
    large!.hint = 0xc0000 + 0x7ff0;
    const pfn = iovad.alloc(0x10020, DMA32_LIMIT, false);
    expect(pfn).toBe(0xc7ff0);
    for (const p of [pfn, pfn + 0x10, pfn + 0x8010, pfn + 0x1001f]) expect(iovad.isSet(p)).toBe(true);
    expect(iovad.isSet(pfn + 0x10020)).toBe(false);
    iovad.validate();
    iovad.free(pfn, 0x10020);
    for (const p of [pfn, pfn + 0x8010, pfn + 0x1001f]) expect(iovad.isSet(p)).toBe(false);
    iovad.validate();
  });

  it('counts allocFast calls as misses, with no caching', () => {
    const { iovad } = domain();
    const a = iovad.allocFast(3, 0xff, true);
    expect(a % 4).toBe(0);
    iovad.freeFast(a, 3);
    expect(iovad.allocFast(4096, 0xff, true)).toBe(-1);
    expect(iovad.stats()).toEqual({ allocs: 1, failures: 1, rcacheHits: 0, rcacheMisses: 2, ranges: 0 });
  });
});
