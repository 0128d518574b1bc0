import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IOVA_MAX_PFN, roundupPow2, type IovaDomainParams } from '../../dma/iova.ts';
import { AugmentedIovaDomain } from '../../dma/iova/augmented.ts';
import { NODE_BYTES, NODE_SLOTS, alignedFit } from '../../dma/iova/gap-tree.ts';
import { LinuxIovaDomain } from '../../dma/iova/linux.ts';
import { Cpus } from '../../kernel/smp.ts';
import type { Timer } from '../../kernel/timer.ts';
import { describeIovaStrategy } from './iova-suite.ts';

const DMA32_LIMIT = 0xfffff; // DMA_BIT_MASK(32) >> 12
const LIMIT_64 = 2 ** 52 - 1;

describeIovaStrategy('augmented', (p) => new AugmentedIovaDomain(p));

function params(startPfn = 1): IovaDomainParams {
  return { granuleShift: 12, startPfn, cpus: new Cpus(1), timers: { add: () => ({}) as Timer } };
}

const domain = (startPfn = 1) => new AugmentedIovaDomain(params(startPfn));

/** The brute-force answer: the largest s that fits in [lo, hi] at a multiple of roundupPow2(s). */
function bruteAlignedFit(lo: number, hi: number): number {
  let best = 0;
  for (let s = 1; s <= hi - lo + 1; s++) {
    const a = roundupPow2(s);
    if (Math.ceil(lo / a) * a + s - 1 <= hi) best = s;
  }
  return best;
}

describe('augmented IOVA allocator: the aligned fit of a gap', () => {
  it('is the largest size-aligned request the gap holds, for every small gap', () => {
    for (let lo = 0; lo < 80; lo++) {
      for (let hi = lo - 1; hi < 160; hi++) expect(alignedFit(lo, hi), `[${lo}, ${hi}]`).toBe(bruteAlignedFit(lo, hi));
    }
  });

  it('is exact up to the top of the pfn space', () => {
    for (const base of [2 ** 40, 2 ** 52, 2 ** 53 - 2 ** 10]) {
      for (let lo = 0; lo < 40; lo++) {
        for (let hi = lo; hi < 80 && base + hi <= IOVA_MAX_PFN; hi++) {
          expect(alignedFit(base + lo, base + hi), `base + [${lo}, ${hi}]`).toBe(bruteAlignedFit(lo, hi));
        }
      }
    }
    // The gap below the anchor in an empty domain: 2^52 at 2^52 would end one pfn past the top.
    expect(alignedFit(1, IOVA_MAX_PFN)).toBe(IOVA_MAX_PFN - 2 ** 52 + 1);
  });
});

describe('augmented IOVA allocator: placement', () => {
  it('allocates top-down from the limit', () => {
    const iovad = domain();
    expect(iovad.alloc(1, DMA32_LIMIT, true)).toBe(0xfffff);
    expect(iovad.alloc(1, DMA32_LIMIT, true)).toBe(0xffffe);
    expect(iovad.alloc(1, LIMIT_64, true)).toBe(LIMIT_64);
    expect(iovad.alloc(1, LIMIT_64, true)).toBe(LIMIT_64 - 1);
    expect(iovad.alloc(4, 0x1000, true)).toBe(0xffc);
    expect(iovad.alloc(1, IOVA_MAX_PFN, false)).toBe(IOVA_MAX_PFN);
    iovad.validate();
  });

  it('aligns a size-aligned range to the size rounded up to a power of two, and no further', () => {
    const iovad = domain();
    expect(iovad.alloc(1, 0xffff, true)).toBe(0xffff);
    expect(iovad.alloc(3, 0xffff, true)).toBe(0xfffc);
    expect(iovad.alloc(33, 0xffff, true)).toBe(0xffc0);
    // Unlike iova.c's next-fit, the hole the alignment left above 0xffc0 + 33 comes first.
    expect(iovad.alloc(3, 0xffff, false)).toBe(0xfff9);
    expect(iovad.stats().ranges).toBe(4);
  });

  it('always takes the highest hole, wherever the last allocation went', () => {
    const iovad = domain();
    const pfns = Array.from({ length: 8 }, () => iovad.alloc(16, DMA32_LIMIT, true));
    iovad.free(pfns[6]!, 16);
    iovad.free(pfns[1]!, 16);
    expect(iovad.alloc(16, DMA32_LIMIT, true)).toBe(pfns[1]);
    expect(iovad.alloc(16, DMA32_LIMIT, true)).toBe(pfns[6]);
    // A limit inside the hole: the part of it below the limit.
    iovad.free(pfns[3]!, 16);
    expect(iovad.alloc(4, pfns[3]! + 9, true)).toBe(pfns[3]! + 4);
    iovad.validate();
  });

  it('finds a gap that fits only at a lucky alignment, and no gap that merely looks big enough', () => {
    for (const base of [0, 2 ** 52]) {
      const iovad = domain(base + 1);
      // Free: [8, 13] (6 pfns, one multiple of 8 at its start) and [17, 23] (7 pfns, none).
      iovad.reserve(base + 1, base + 7);
      iovad.reserve(base + 14, base + 16);
      iovad.reserve(base + 24, base + 63);
      const limit = base + 63;
      expect(iovad.alloc(7, limit, true)).toBe(-1);
      expect(iovad.alloc(5, limit, true)).toBe(base + 8); // 5 + 8 - 1 > 6: only the exact fit finds it
      iovad.free(base + 8, 5);
      expect(iovad.alloc(6, limit, true)).toBe(base + 8);
      expect(iovad.alloc(7, limit, false)).toBe(base + 17);
      expect(iovad.alloc(1, limit, true)).toBe(-1);
      iovad.validate();
    }
  });

  it('succeeds at once where the first pass of iova.c fails (the 1 GiB sequence of the retry commit)', () => {
    // Pfns [1, 2^18]: 1 GiB. 500 MiB, 12 MiB and 499 MiB from the top leave 13 MiB at the bottom.
    const MiB = 256;
    const limit = 2 ** 18;
    const run = (iovad: AugmentedIovaDomain | LinuxIovaDomain) => {
      const a = iovad.alloc(500 * MiB, limit, false);
      const b = iovad.alloc(12 * MiB, limit, false);
      const c = iovad.alloc(499 * MiB, limit, false);
      expect([a, b, c]).toEqual([limit - 500 * MiB + 1, limit - 512 * MiB + 1, limit - 1011 * MiB + 1]);
      iovad.free(b, 12 * MiB);
      expect(iovad.alloc(13 * MiB, limit, false)).toBe(1);
      // iova.c's hint is now the bottom range: its first pass finds nothing below it and only the retry
      // finds 12 MiB's hole above. The tree goes straight there.
      return iovad.alloc(2 * MiB, limit, false);
    };
    const aug = domain();
    expect(run(aug)).toBe(limit - 500 * MiB + 1 - 2 * MiB);
    expect(aug.lastVisited).toBeLessThanOrEqual(8);
    expect(run(new LinuxIovaDomain(params(), false))).toBe(limit - 500 * MiB + 1 - 2 * MiB);
    aug.validate();
  });

  it('fills the holes between the ranges a reservation overlaps and never hands it out', () => {
    const iovad = domain();
    const a = iovad.alloc(4, 0x3f, true); // 0x3c
    const b = iovad.alloc(4, 0x37, true); // 0x34
    expect([a, b]).toEqual([0x3c, 0x34]);
    expect(iovad.reserve(0x30, 0x3d)).toBe(true);
    expect(iovad.stats().ranges).toBe(4); // a, b, [0x30, 0x33], [0x38, 0x3b]
    expect(iovad.reserve(0x31, 0x32)).toBe(true);
    expect(iovad.stats().ranges).toBe(4);
    expect(iovad.reserve(0x20, 0x10)).toBe(false);
    expect(iovad.reserve(-1, 0x10)).toBe(false);
    expect(iovad.reserve(0, IOVA_MAX_PFN + 1)).toBe(false);
    iovad.free(a, 4);
    iovad.free(b, 4);
    const got: number[] = [];
    for (let p = iovad.alloc(1, 0x3f, true); p >= 0; p = iovad.alloc(1, 0x3f, true)) got.push(p);
    expect(got.sort((x, y) => x - y)).toEqual([...Array.from({ length: 0x2f }, (_, i) => i + 1), 0x34, 0x35, 0x36, 0x37, 0x3c, 0x3d, 0x3e, 0x3f]);
    iovad.validate();
  });
});

describe('augmented IOVA allocator: O(log n) under a limit', () => {
  it('allocates below 4 GiB in a domain of 100,000 fragmented 64-bit ranges touching O(log_B n) nodes', () => {
    // The 32-bit space is 256 pfns; above it, one huge free gap and then 100,000 live ranges with holes.
    const iovad = domain(0xfff00);
    const high = Array.from({ length: 200_000 }, () => iovad.alloc(1, LIMIT_64, true));
    for (let i = 0; i < high.length; i += 2) iovad.free(high[i]!, 1);
    const low = Array.from({ length: 256 }, () => iovad.alloc(1, DMA32_LIMIT, true));
    expect(low.at(-1)).toBe(0xfff00);
    for (let i = 0; i < low.length; i += 8) iovad.free(low[i]!, 1);
    const n = iovad.stats().ranges;
    expect(n).toBeGreaterThan(100_000);
    // The walk to the limit and one descent: twice the height, 1 + log_{B/2}(n / 2) at most. A walk along
    // the leaves would touch thousands of nodes here (n / B at least).
    const bound = 2 * (1 + Math.ceil(Math.log(n / 2) / Math.log(NODE_SLOTS / 2)));
    expect(bound).toBeLessThan(n / NODE_SLOTS / 100);
    const visits: number[] = [];
    const check = (pfn: number, expected: number) => {
      expect(pfn).toBe(expected);
      visits.push(iovad.lastVisited);
    };

    check(iovad.alloc(2, DMA32_LIMIT, true), -1); // only one-pfn holes below 4 GiB
    for (let i = 0; i < low.length; i += 8) check(iovad.alloc(1, DMA32_LIMIT, true), low[i]!);
    check(iovad.alloc(1, DMA32_LIMIT, true), -1); // full
    check(iovad.allocFast(1, DMA32_LIMIT, true), -1);
    // Above 4 GiB a two-pfn range skips 100,000 one-pfn holes to the gap below them.
    check(iovad.alloc(2, LIMIT_64, true), high.at(-1)! - 2);
    check(iovad.alloc(1, LIMIT_64, true), high[0]!);
    check(iovad.alloc(1, high[1000]!, true), high[1000]!);
    expect(Math.max(...visits)).toBeLessThan(bound);
    iovad.validate();
  });
});

describe('augmented IOVA allocator: the tree under load', () => {
  it('keeps balance, gaps and subtree maxima exact through thousands of mixed operations', () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const iovad = domain(0x10);
    iovad.reserve(0xfee00, 0xfeeff);
    const limits = [0xfffff, 0xfee80, 2 ** 36 - 1, LIMIT_64, IOVA_MAX_PFN];
    const live: [number, number][] = [];
    for (let i = 0; i < 20_000; i++) {
      if (live.length > 0 && rand(5) < 2) {
        const [pfn, size] = live.splice(rand(live.length), 1)[0]!;
        iovad.free(pfn, size);
      } else {
        const size = rand(4) === 0 ? 1 + rand(300) : 1 + rand(4);
        const pfn = iovad.alloc(size, limits[rand(limits.length)]!, rand(3) > 0);
        if (pfn >= 0) live.push([pfn, size]);
      }
      if (i % 1000 === 0) iovad.validate();
    }
    iovad.validate();
    for (const [pfn, size] of live) iovad.free(pfn, size);
    iovad.validate();
    expect(iovad.stats().ranges).toBe(1);
  });
  it('splits, spills and merges at every level, growing to four levels or more and back to one leaf', () => {
    let seed = 11;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return Math.floor((seed / 2 ** 31) * n); // the high bits: the low ones of this generator have short periods
    };
    const iovad = domain();
    const live: number[] = [];
    const take = () => {
      const k = rand(live.length);
      const pfn = live[k]!;
      live[k] = live.at(-1)!;
      live.pop();
      return pfn;
    };
    const validateNow = (i: number) => {
      if (i % 4999 === 0) iovad.validate();
    };
    for (let i = 0; live.length < 60_000; i++) {
      // Mostly single pages from the top, some in a small window lower down, and a free now and then.
      const limit = rand(4) === 0 ? 2 ** 30 + rand(2 ** 20) : LIMIT_64;
      const pfn = iovad.alloc(1 + rand(2), limit, rand(2) === 0);
      if (pfn >= 0) live.push(pfn);
      if (rand(8) === 0) iovad.free(take());
      validateNow(i);
    }
    // The limit cuts the lowest range's gap: the walk down is all it takes, one node a level.
    expect(iovad.alloc(1, 2 ** 20, true)).toBe(2 ** 20);
    expect(iovad.lastVisited).toBeGreaterThanOrEqual(4);
    for (let i = 0; live.length > 0; i++) {
      const pfn = take();
      iovad.free(pfn);
      if (rand(4) === 0) live.push(iovad.alloc(1, pfn, false)); // straight back into the hole
      validateNow(i);
    }
    iovad.free(2 ** 20);
    iovad.validate();
    expect(iovad.stats().ranges).toBe(0);
    expect(iovad.footprintBytes()).toBe(NODE_BYTES);
  });
});

describe('augmented IOVA allocator: a freed range allocated again', () => {
  it('goes back into its leaf: a ring sweeping down the space keeps the tree as it was', () => {
    const iovad = domain();
    const ring = Array.from({ length: 256 }, () => iovad.allocFast(1, DMA32_LIMIT, true));
    const bytes = iovad.footprintBytes();
    for (let k = 0; k < 4 * ring.length; k++) {
      const s = k % ring.length;
      iovad.freeFast(ring[s]!, 1);
      expect(iovad.allocFast(1, DMA32_LIMIT, true)).toBe(ring[s]);
      iovad.validate();
    }
    expect(iovad.footprintBytes()).toBe(bytes);
  });

  it('keeps the tree exact when random ranges of a large tree are freed and allocated again', () => {
    const iovad = domain();
    const live = Array.from({ length: 5000 }, () => iovad.allocFast(1, LIMIT_64, true));
    let seed = 5;
    for (let k = 0; k < 3000; k++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const s = Math.floor((seed / 2 ** 31) * live.length);
      iovad.freeFast(live[s]!, 1);
      expect(iovad.allocFast(1, LIMIT_64, true)).toBe(live[s]);
      if (k % 100 === 0) iovad.validate();
    }
    iovad.validate();
  });
});

describe('augmented IOVA allocator against a brute-force model (property)', () => {
  const SPACE = 256;
  const op = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        kind: fc.constant('alloc' as const),
        size: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 40 })),
        limit: fc.oneof(fc.constant(SPACE - 1), fc.integer({ min: 0, max: SPACE - 1 })),
        aligned: fc.boolean(),
        fast: fc.boolean(),
      }),
    },
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('free' as const), which: fc.nat() }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('reserve' as const), lo: fc.integer({ min: -8, max: SPACE - 1 }), len: fc.integer({ min: 1, max: 24 }) }) },
  );

  it('hands out exactly the highest fitting range, keeping the tree and its maxima exact', () => {
    fc.assert(
      fc.property(fc.constantFrom(8, 13, 2 ** 52), fc.array(op, { maxLength: 200 }), (base, ops) => {
        const iovad = domain(base);
        // used[i] is pfn base - 8 + i: a reservation may start below startPfn.
        const used = new Uint8Array(SPACE + 8 + 24);
        const run = new Uint16Array(used.length + 1);
        const live: { pfn: number; size: number; fast: boolean }[] = [];
        const mark = (pfn: number, size: number, v: 0 | 1) => used.fill(v, pfn - base + 8, pfn - base + 8 + size);
        const highestFit = (size: number, align: number, limit: number): number => {
          for (let i = used.length - 1; i >= 0; i--) run[i] = used[i] ? 0 : run[i + 1]! + 1;
          for (let pfn = Math.floor((limit - size + 1) / align) * align; pfn >= base; pfn -= align) {
            if (run[pfn - base + 8]! >= size) return pfn;
          }
          return -1;
        };
        for (const o of ops) {
          if (o.kind === 'alloc') {
            const limit = base + o.limit;
            const align = o.fast || o.aligned ? roundupPow2(o.size) : 1;
            const pfn = o.fast ? iovad.allocFast(o.size, limit, true) : iovad.alloc(o.size, limit, o.aligned);
            expect(pfn, `size ${o.size} align ${align} limit ${o.limit}`).toBe(highestFit(o.size, align, limit));
            if (pfn >= 0) {
              mark(pfn, o.size, 1);
              live.push({ pfn, size: o.size, fast: o.fast });
            }
          } else if (o.kind === 'free') {
            if (live.length === 0) continue;
            const [r] = live.splice(o.which % live.length, 1) as [(typeof live)[0]];
            if (r.fast) iovad.freeFast(r.pfn, r.size);
            else iovad.free(r.pfn, r.size);
            mark(r.pfn, r.size, 0);
          } else {
            // Reserved for good: live ranges it overlaps stay their owners' (a free gives them back).
            expect(iovad.reserve(base + o.lo, base + o.lo + o.len - 1)).toBe(true);
            const reserved = new Set<number>();
            for (let p = base + o.lo; p < base + o.lo + o.len; p++) if (!live.some((r) => p >= r.pfn && p < r.pfn + r.size)) reserved.add(p);
            for (const p of reserved) mark(p, 1, 1);
          }
          iovad.validate();
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('augmented IOVA allocator: stats and footprint', () => {
  it('counts every allocFast as a miss, with no cache hits', () => {
    const iovad = domain(0xfff00);
    const a = iovad.allocFast(3, DMA32_LIMIT, true);
    expect(a % 4).toBe(0);
    iovad.freeFast(a, 3);
    expect(iovad.allocFast(3, DMA32_LIMIT, true)).toBe(a);
    expect(iovad.allocFast(512, DMA32_LIMIT, true)).toBe(-1);
    iovad.alloc(1, DMA32_LIMIT, false);
    expect(iovad.stats()).toEqual({ allocs: 2, failures: 1, rcacheHits: 0, rcacheMisses: 3, ranges: 2 });
  });

  it('counts the nodes in use, a few dozen bytes a range, and gives them back', () => {
    const iovad = domain();
    expect(iovad.footprintBytes()).toBe(NODE_BYTES); // one leaf: the anchor
    const pfn = iovad.alloc(1, DMA32_LIMIT, true);
    iovad.reserve(0x10, 0x20);
    expect(iovad.footprintBytes()).toBe(NODE_BYTES);
    iovad.free(pfn, 1);
    const pfns = Array.from({ length: 10_000 }, () => iovad.alloc(1, LIMIT_64, true));
    // Top-down, every range goes in at the low end of a leaf: without spilling into the sibling
    // each leaf would be left half full, twice the bytes. With it they are nearly full.
    const ranges = iovad.stats().ranges;
    expect(iovad.footprintBytes()).toBeGreaterThanOrEqual((ranges * NODE_BYTES) / NODE_SLOTS);
    expect(iovad.footprintBytes()).toBeLessThanOrEqual(((ranges * NODE_BYTES) / NODE_SLOTS) * 1.2);
    for (const p of pfns) iovad.free(p, 1);
    expect(iovad.footprintBytes()).toBe(NODE_BYTES);
    iovad.validate();
  });
});
