import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IOVA_MAX_PFN, roundupPow2 } from '../../dma/iova.ts';
import { IOVA_DEPOT_DELAY_NS, IOVA_MAG_SIZE, LinuxIovaDomain } from '../../dma/iova/linux.ts';
import { IovaRbTree } from '../../dma/iova/rbtree.ts';
import { Cpus } from '../../kernel/smp.ts';
import type { Timer } from '../../kernel/timer.ts';

const DMA32_LIMIT = 0xfffff; // DMA_BIT_MASK(32) >> 12
const LIMIT_64 = 2 ** 52 - 1;

/** A domain of 4 KiB pfns; `fire()` runs the timers it armed (the depot reclaim). */
function domain(opts: { startPfn?: number; cpus?: number } = {}) {
  const cpus = new Cpus(opts.cpus ?? 1);
  let timers: { delay: number; fn: () => void }[] = [];
  const iovad = new LinuxIovaDomain({
    granuleShift: 12,
    startPfn: opts.startPfn ?? 1,
    cpus,
    timers: {
      add: (delay, fn) => {
        timers.push({ delay, fn });
        return {} as Timer;
      },
    },
  });
  const fire = () => {
    const due = timers;
    timers = [];
    for (const t of due) t.fn();
    return due.map((t) => t.delay);
  };
  return { iovad, cpus, fire };
}

describe('roundupPow2', () => {
  it('is exact for every pfn count', () => {
    expect([1, 2, 3, 31, 32, 33, 2 ** 31, 2 ** 31 + 1, 2 ** 52 - 1, 2 ** 52].map(roundupPow2)).toEqual([1, 2, 4, 32, 32, 64, 2 ** 31, 2 ** 32, 2 ** 52, 2 ** 52]);
  });
});

describe('Linux IOVA allocator: the tree', () => {
  it('allocates top-down from the limit, next-fit below the last allocation', () => {
    const { iovad } = domain();
    expect(iovad.alloc(1, DMA32_LIMIT, true)).toBe(0xfffff);
    expect(iovad.alloc(1, DMA32_LIMIT, true)).toBe(0xffffe);
    expect(iovad.alloc(1, LIMIT_64, true)).toBe(LIMIT_64);
    expect(iovad.alloc(1, LIMIT_64, true)).toBe(LIMIT_64 - 1);
    expect(iovad.alloc(4, 0x1000, true)).toBe(0xffc);
  });

  it('aligns a size-aligned range to the size rounded up to a power of two, and no further', () => {
    const { iovad } = domain();
    expect(iovad.alloc(1, 0xffff, true)).toBe(0xffff);
    expect(iovad.alloc(3, 0xffff, true)).toBe(0xfffc);
    expect(iovad.alloc(33, 0xffff, true)).toBe(0xffc0);
    expect(iovad.alloc(3, 0xffff, false)).toBe(0xffbd);
    expect(iovad.stats().ranges).toBe(4);
  });

  it.each([
    ['below 4 GiB (cached32_node)', DMA32_LIMIT],
    ['above (cached_node)', LIMIT_64],
  ])('finds space freed above the cached node next, %s', (_, limit) => {
    const { iovad } = domain();
    const a = iovad.alloc(16, limit, true);
    const b = iovad.alloc(16, limit, true);
    const c = iovad.alloc(16, limit, true);
    iovad.free(c, 16); // the cached node itself
    expect(iovad.alloc(16, limit, true)).toBe(c);
    iovad.free(a, 16);
    expect(iovad.alloc(16, limit, true)).toBe(a);
    iovad.free(b, 16);
    expect(iovad.alloc(8, limit, true)).toBe(b + 8);
    iovad.validate();
  });

  it('looks above the hint again when the walk below it fails (the retry pass)', () => {
    // 1010 pages: A at the top, B under it, C under B, 110 pages left at the bottom.
    const { iovad } = domain();
    const A = iovad.alloc(400, 1010, false);
    const B = iovad.alloc(100, 1010, false);
    const C = iovad.alloc(400, 1010, false);
    expect([A, B, C]).toEqual([611, 511, 111]);
    iovad.free(B, 100);
    // Too big for B's hole: it takes the bottom, and the hint follows it down.
    expect(iovad.alloc(110, 1010, false)).toBe(1);
    // Nothing fits below the hint; B's hole above it does.
    expect(iovad.alloc(50, 1010, false)).toBe(561);
    expect(iovad.alloc(51, 1010, false)).toBe(-1);
  });

  it('below 4 GiB, fails at once what failed before until something there is freed', () => {
    const { iovad } = domain({ startPfn: 0xfff00 });
    const ranges = Array.from({ length: 8 }, () => iovad.alloc(32, DMA32_LIMIT, true));
    expect(ranges.at(-1)).toBe(0xfff00);
    expect(iovad.alloc(1, DMA32_LIMIT, true)).toBe(-1);
    expect(iovad.alloc(1, DMA32_LIMIT, true)).toBe(-1);
    iovad.free(ranges[3]!, 32);
    expect(iovad.alloc(2, DMA32_LIMIT, true)).toBe(ranges[3]! + 30);
    expect(iovad.alloc(1, LIMIT_64, true)).toBe(LIMIT_64);
  });

  it('merges a reservation into the ranges it overlaps and never hands it out', () => {
    const { iovad } = domain();
    expect(iovad.reserve(0x10, 0x20)).toBe(true);
    expect(iovad.reserve(0x18, 0x30)).toBe(true);
    expect(iovad.stats().ranges).toBe(2);
    expect(iovad.reserve(0x8, 0x40)).toBe(true);
    expect(iovad.reserve(0x3f, 0x41)).toBe(true);
    expect(iovad.stats().ranges).toBe(4);
    expect(iovad.reserve(0x20, 0x10)).toBe(false);
    expect(iovad.reserve(0, IOVA_MAX_PFN + 1)).toBe(false);
    const got = new Set<number>();
    for (let p = iovad.alloc(1, 0x47, true); p >= 0; p = iovad.alloc(1, 0x47, true)) got.add(p);
    expect([...got].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47]);
  });

  it('is exact up to pfn 2^52 - 1 (IOVAs up to 2^64 - 1)', () => {
    const { iovad } = domain();
    expect(iovad.alloc(1, LIMIT_64, true)).toBe(2 ** 52 - 1);
    expect(iovad.alloc(2 ** 40, LIMIT_64, true)).toBe(2 ** 52 - 2 ** 41);
    expect(iovad.alloc(3, LIMIT_64, true)).toBe(2 ** 52 - 2 ** 41 - 4);
    iovad.free(2 ** 52 - 2 ** 41, 2 ** 40);
    expect(iovad.alloc(2 ** 39, LIMIT_64, true)).toBe(2 ** 52 - 2 ** 40);
  });
});

describe('Linux IOVA allocator: the rcache', () => {
  it('rounds small sizes up, and gives a freed range back to the next allocation of its class', () => {
    const { iovad } = domain();
    const a = iovad.allocFast(3, DMA32_LIMIT, true);
    expect(a % 4).toBe(0);
    iovad.freeFast(a, 3);
    expect(iovad.allocFast(4, DMA32_LIMIT, true)).toBe(a);
    expect(iovad.stats()).toMatchObject({ allocs: 2, rcacheHits: 1, rcacheMisses: 1, failures: 0, ranges: 1 });
  });

  it('keeps ranges above 32 pages out of the caches', () => {
    const { iovad } = domain();
    const a = iovad.allocFast(33, DMA32_LIMIT, true);
    expect(a % 64).toBe(0);
    iovad.freeFast(a, 33);
    expect(iovad.stats().ranges).toBe(0);
  });

  it('only hands out a cached range that fits under the limit', () => {
    const { iovad } = domain();
    const high = iovad.allocFast(1, LIMIT_64, true);
    iovad.freeFast(high, 1);
    expect(iovad.allocFast(1, LIMIT_64 - 1, true)).toBe(LIMIT_64 - 1);
    expect(iovad.allocFast(1, LIMIT_64, true)).toBe(high);
  });

  it('caches per CPU: a range freed on one CPU is not seen by another', () => {
    const { iovad, cpus } = domain({ cpus: 2 });
    const a = iovad.allocFast(1, DMA32_LIMIT, true);
    iovad.freeFast(a, 1);
    expect(cpus.runOn(1, () => iovad.allocFast(1, DMA32_LIMIT, true))).not.toBe(a);
    expect(iovad.allocFast(1, DMA32_LIMIT, true)).toBe(a);
  });

  it('fills loaded and prev magazines, then the depot, which a timer trims to one magazine per CPU', () => {
    const { iovad, fire } = domain();
    const n = 4 * IOVA_MAG_SIZE + 1;
    const pfns = Array.from({ length: n }, () => iovad.allocFast(1, DMA32_LIMIT, true));
    for (const p of pfns) iovad.freeFast(p, 1);
    // Full prev, one pfn in loaded, 3 full magazines in the depot; nothing went back to the tree.
    expect(iovad.stats().ranges).toBe(n);
    expect(fire()).toEqual([IOVA_DEPOT_DELAY_NS]);
    expect(iovad.stats().ranges).toBe(n - IOVA_MAG_SIZE);
    expect(fire()).toEqual([IOVA_DEPOT_DELAY_NS]);
    expect(iovad.stats().ranges).toBe(n - 2 * IOVA_MAG_SIZE);
    // At one magazine per CPU the work stops rescheduling itself.
    expect(fire()).toEqual([IOVA_DEPOT_DELAY_NS]);
    expect(fire()).toEqual([]);
    expect(iovad.stats().ranges).toBe(n - 2 * IOVA_MAG_SIZE);
  });

  it('gives every cached range back to the tree and tries again when the space is full', () => {
    const { iovad } = domain({ startPfn: 0xfff00 });
    const pfns = Array.from({ length: 256 }, () => iovad.allocFast(1, DMA32_LIMIT, true));
    expect(iovad.allocFast(1, DMA32_LIMIT, true)).toBe(-1);
    for (const p of pfns) iovad.freeFast(p, 1);
    // Every free page sits in the size-1 cache: a 2-page range fits only once they go back.
    expect(iovad.allocFast(2, DMA32_LIMIT, false)).toBe(-1);
    expect(iovad.allocFast(2, DMA32_LIMIT, true)).toBe(0xffffe);
    expect(iovad.stats()).toMatchObject({ failures: 2 });
  });
});

describe('Linux IOVA allocator against a reference model (property)', () => {
  interface Live {
    pfn: number;
    size: number; // as passed to the allocator
    span: number; // what it holds
    fast: boolean;
  }

  const op = fc.oneof(
    fc.record({
      kind: fc.constant('alloc' as const),
      size: fc.integer({ min: 1, max: 70 }),
      // A few limits over and over, so cached ranges meet them at their edges.
      limit: fc.oneof(fc.constantFrom(4095, 2047, 1023, 1022), fc.integer({ min: 0, max: 4095 })),
      aligned: fc.boolean(),
      fast: fc.boolean(),
    }),
    fc.record({ kind: fc.constant('free' as const), which: fc.nat() }),
    fc.record({ kind: fc.constant('cpu' as const), cpu: fc.integer({ min: 0, max: 1 }) }),
  );

  it('never overlaps, honours the limit, never hands out a reservation, and aligns as asked', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1, 2 ** 52 - 4096), // a low space, and one whose IOVAs lie above 2^53 bytes
        fc.array(fc.tuple(fc.integer({ min: 0, max: 600 }), fc.integer({ min: 0, max: 60 })), { maxLength: 6 }),
        fc.array(op, { maxLength: 300 }),
        (base, reservations, ops) => {
          const top = base + 4095;
          const { iovad, cpus } = domain({ startPfn: base, cpus: 2 });
          const reserved = reservations.map(([lo, len]) => [base + lo, base + lo + len] as const);
          for (const [lo, hi] of reserved) expect(iovad.reserve(lo, hi)).toBe(true);
          const live: Live[] = [];
          let cpu = 0;
          for (const o of ops) {
            if (o.kind === 'cpu') {
              cpu = o.cpu;
            } else if (o.kind === 'free') {
              if (live.length === 0) continue;
              const [r] = live.splice(o.which % live.length, 1) as [Live];
              cpus.runOn(cpu, () => (r.fast ? iovad.freeFast(r.pfn, r.size) : iovad.free(r.pfn, r.size)));
            } else {
              const limit = base + o.limit;
              const pfn = cpus.runOn(cpu, () => (o.fast ? iovad.allocFast(o.size, limit, true) : iovad.alloc(o.size, limit, o.aligned)));
              if (pfn < 0) continue;
              const span = o.fast && o.size < 32 ? roundupPow2(o.size) : o.size;
              const last = pfn + span - 1;
              expect(pfn).toBeGreaterThanOrEqual(base);
              expect(last).toBeLessThanOrEqual(Math.min(limit, top));
              if (o.fast || o.aligned) expect(pfn % roundupPow2(o.size)).toBe(0);
              for (const [lo, hi] of reserved) expect(last < lo || pfn > hi).toBe(true);
              for (const r of live) expect(last < r.pfn || pfn > r.pfn + r.span - 1).toBe(true);
              live.push({ pfn, size: o.size, span, fast: o.fast });
            }
          }
          iovad.validate();
        },
      ),
      { numRuns: 300 },
    );
  });

  it('keeps the red-black invariants through any sequence of inserts and erases', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 500 })), { maxLength: 400 }), (ops) => {
        const tree = new IovaRbTree();
        const present = new Set<number>();
        for (const [insert, key] of ops) {
          const node = tree.find(key * 2);
          if (insert && !node) {
            const n = tree.newNode(key * 2, key * 2 + 1);
            if (key % 2) tree.insert(n);
            else {
              const succ = tree.ceilByEnd(key * 2);
              if (succ) tree.insertBefore(n, succ);
              else tree.insert(n);
            }
            present.add(key);
          } else if (!insert && node) {
            tree.erase(node);
            present.delete(key);
          }
          tree.validate();
        }
        const walked: number[] = [];
        for (let n = tree.first(); n; n = tree.next(n)) walked.push(n.pfnLo / 2);
        expect(walked).toEqual([...present].sort((a, b) => a - b));
      }),
    );
  });
});

describe('Linux IOVA allocator: footprint', () => {
  it('counts 64 bytes a tree node and 1 KiB a magazine', () => {
    const { iovad } = domain({ cpus: 2 });
    const base = iovad.footprintBytes();
    expect(base).toBe(64 + 6 * 2 * 2 * 1024); // the anchor; loaded and prev per class per CPU
    iovad.alloc(1, DMA32_LIMIT, true);
    expect(iovad.footprintBytes()).toBe(base + 64);
  });
});
