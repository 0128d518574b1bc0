import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IOVA_MAX_PFN } from '../../dma/iova.ts';
import { BuddyIovaDomain } from '../../dma/iova/buddy.ts';
import { describeIovaStrategy, iovaDomain } from './iova-suite.ts';

describeIovaStrategy('buddy', (p) => new BuddyIovaDomain(p));

const DMA32_LIMIT = 0xfffff;
const LIMIT_64 = 2 ** 52 - 1;

function domain(opts: { startPfn?: number; cpus?: number } = {}) {
  return iovaDomain((p) => new BuddyIovaDomain(p), opts).iovad as BuddyIovaDomain;
}

describe('buddy IOVA allocator', () => {
  it('starts as the maximal aligned blocks tiling [startPfn, IOVA_MAX_PFN]', () => {
    const iovad = domain({ startPfn: 1 });
    const blocks = iovad.freeBlocks();
    // Orders 0..51 climbing from pfn 1 to 2^52, then 51..0 down to the last pfn, 2^53 - 2.
    expect(blocks).toHaveLength(104);
    expect(blocks.slice(0, 3)).toEqual([
      [1, 0],
      [2, 1],
      [4, 2],
    ]);
    expect(blocks[51]).toEqual([2 ** 51, 51]);
    expect(blocks[52]).toEqual([2 ** 52, 51]);
    expect(blocks.at(-1)).toEqual([IOVA_MAX_PFN, 0]);
    iovad.validate();
    expect(domain({ startPfn: 0x10 }).freeBlocks()[0]).toEqual([0x10, 4]);
  });

  it('takes the highest block that ends at or below the limit', () => {
    const iovad = domain();
    expect(iovad.alloc(1, DMA32_LIMIT, true)).toBe(0xfffff);
    expect(iovad.alloc(1, DMA32_LIMIT, true)).toBe(0xffffe);
    expect(iovad.alloc(2, DMA32_LIMIT, true)).toBe(0xffffc);
    expect(iovad.alloc(1, LIMIT_64, true)).toBe(LIMIT_64);
    expect(iovad.alloc(4, 0x1000, true)).toBe(0xffc);
    // A limit inside a free block: the top aligned block under it, split out of the block across it.
    expect(iovad.alloc(8, 0x2abc, true)).toBe(0x2ab0);
    iovad.validate();
  });

  it('splits a block down to the size asked for and merges the halves back when it is freed', () => {
    const iovad = domain();
    const before = iovad.freeBlocks();
    const pfn = iovad.alloc(1, 0x1ff, true);
    expect(pfn).toBe(0x1ff);
    // The order-8 block [0x100, 0x1ff] split into halves 0x100 (order 7), 0x180 (6) ... 0x1fe (0).
    const inBlock = iovad.freeBlocks().filter(([p]) => p >= 0x100 && p <= 0x1ff);
    expect(inBlock).toEqual(Array.from({ length: 8 }, (_, i) => [0x200 - 2 ** (8 - i), 7 - i]));
    iovad.validate();
    iovad.free(pfn, 1);
    expect(iovad.freeBlocks()).toEqual(before);
    iovad.validate();
  });

  it('rounds 3 pages up to a 4-page block, aligned even when not asked, and frees the whole block', () => {
    const iovad = domain();
    const before = iovad.freeBlocks();
    const a = iovad.alloc(3, 0xff, false);
    expect(a).toBe(0xfc);
    expect(iovad.alloc(1, 0xff, false)).toBe(0xfb); // 0xff is inside a's block
    expect(iovad.alloc(5, 0xff, false)).toBe(0xf0);
    iovad.free(a, 3);
    expect(iovad.alloc(4, 0xff, true)).toBe(0xfc);
    iovad.free(0xfc, 4);
    iovad.free(0xfb, 1);
    iovad.free(0xf0, 5);
    expect(iovad.freeBlocks()).toEqual(before);
    iovad.validate();
  });

  it('carves a reserved range out of the blocks it overlaps', () => {
    const iovad = domain();
    expect(iovad.reserve(0x10, 0xfe)).toBe(true);
    expect(iovad.freeBlocks().filter(([p]) => p <= 0xff)).toEqual([
      [1, 0],
      [2, 1],
      [4, 2],
      [8, 3],
      [0xff, 0],
    ]);
    iovad.validate();
    expect(iovad.alloc(2, 0xff, true)).toBe(0xe);
    expect(iovad.alloc(1, 0xff, true)).toBe(0xff);
    // Overlapping an earlier reservation: only the free blocks are carved, the live one at 0xe stays live.
    expect(iovad.reserve(0x8, 0x20)).toBe(true);
    expect(iovad.freeBlocks().filter(([p]) => p <= 0xff)).toEqual([
      [1, 0],
      [2, 1],
      [4, 2],
    ]);
    expect(iovad.stats().ranges).toBe(4);
    iovad.validate();
    expect(iovad.reserve(5, 4)).toBe(false);
  });

  it('carves reservations near the top of the pfn space', () => {
    const iovad = domain({ startPfn: 2 ** 45 });
    expect(iovad.reserve(IOVA_MAX_PFN - 0x3ff, IOVA_MAX_PFN - 0x3f0)).toBe(true);
    expect(iovad.alloc(0x10, IOVA_MAX_PFN, true)).toBe(IOVA_MAX_PFN + 2 - 0x20);
    // The order-10 block on top lost its last pfn to the reservation: the next one down is taken.
    expect(iovad.alloc(0x400, IOVA_MAX_PFN, true)).toBe(IOVA_MAX_PFN + 2 - 0xc00);
    iovad.validate();
  });

  it('counts allocFast calls as misses, with no caching', () => {
    const iovad = domain();
    const a = iovad.allocFast(3, 0xff, true);
    iovad.freeFast(a, 3);
    expect(iovad.allocFast(4096, 0xff, true)).toBe(-1);
    expect(iovad.stats()).toEqual({ allocs: 1, failures: 1, rcacheHits: 0, rcacheMisses: 2, ranges: 0 });
  });

  it('keeps its free lists valid through random sequences and gets its first blocks back once all is freed', () => {
    const limits = [0xff, 0xfff, DMA32_LIMIT, 2 ** 36 - 1, LIMIT_64, IOVA_MAX_PFN];
    const op = fc.oneof(
      fc.record({ size: fc.oneof(fc.integer({ min: 1, max: 70 }), fc.constantFrom(255, 256, 4096, 2 ** 20)), limit: fc.constantFrom(...limits) }),
      fc.record({ pick: fc.nat() }),
    );
    const reserved = fc.array(
      fc.oneof(
        fc.record({ lo: fc.integer({ min: 0, max: 0x1ff }), len: fc.integer({ min: 1, max: 64 }) }),
        fc.record({ lo: fc.integer({ min: IOVA_MAX_PFN - 0x3ff, max: IOVA_MAX_PFN }), len: fc.integer({ min: 1, max: 16 }) }),
      ),
      { maxLength: 3 },
    );
    fc.assert(
      fc.property(fc.constantFrom(1, 0x10, 2 ** 45), reserved, fc.array(op, { maxLength: 120 }), (startPfn, res, ops) => {
        const iovad = domain({ startPfn });
        for (const r of res) iovad.reserve(r.lo, Math.min(r.lo + r.len - 1, IOVA_MAX_PFN));
        const initial = iovad.freeBlocks();
        const live: { pfn: number; size: number }[] = [];
        for (const o of ops) {
          if ('size' in o) {
            const pfn = iovad.alloc(o.size, o.limit, false);
            if (pfn >= 0) live.push({ pfn, size: o.size });
          } else if (live.length > 0) {
            const [r] = live.splice(o.pick % live.length, 1);
            iovad.free(r!.pfn, r!.size);
          }
          iovad.validate();
        }
        for (const r of live) iovad.free(r.pfn, r.size);
        iovad.validate();
        expect(iovad.freeBlocks()).toEqual(initial);
      }),
      { numRuns: 100 },
    );
  });
});
