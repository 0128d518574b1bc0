import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IOVA_MAX_PFN, roundupPow2 } from '../../dma/iova.ts';
import { IOVA_MAG_SIZE } from '../../dma/iova/magazines.ts';
import { VMEM_QCACHE_MAX, VmemIovaDomain, floorLog2 } from '../../dma/iova/vmem.ts';
import { describeIovaStrategy, iovaDomain } from './iova-suite.ts';

describeIovaStrategy('vmem', (p) => new VmemIovaDomain(p));

const vmem = (opts: { startPfn?: number; cpus?: number } = {}) => {
  const d = iovaDomain((p) => new VmemIovaDomain(p), opts);
  return { ...d, iovad: d.iovad as VmemIovaDomain };
};

/** Allocates `sizes` back to back from a fresh arena (bottom-up from pfn 1) and frees those at `holes`. */
function arenaWithHoles(sizes: number[], holes: number[]) {
  const { iovad } = vmem();
  const pfns = sizes.map((s) => iovad.alloc(s, IOVA_MAX_PFN, false));
  for (const i of holes) iovad.free(pfns[i]!, sizes[i]!);
  iovad.validate();
  return { iovad, pfns };
}

describe('floorLog2', () => {
  it('is exact up to 2^53', () => {
    expect([1, 2, 3, 4, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 52 + 1, 2 ** 53 - 2].map(floorLog2)).toEqual([0, 1, 1, 2, 31, 31, 32, 52, 52]);
  });
});

describe('vmem: the arena', () => {
  it('places bottom-up: the lowest fitting pfn of the segment chosen', () => {
    const { iovad } = vmem({ startPfn: 3 });
    expect(iovad.alloc(1, IOVA_MAX_PFN, true)).toBe(3);
    expect(iovad.alloc(4, IOVA_MAX_PFN, true)).toBe(4);
    expect(iovad.alloc(3, IOVA_MAX_PFN, true)).toBe(8);
    expect(iovad.alloc(3, IOVA_MAX_PFN, false)).toBe(11);
    expect(iovad.alloc(1, IOVA_MAX_PFN, true)).toBe(14);
    iovad.validate();
  });

  it('takes the head of the smallest list it fits, not the first segment in address order', () => {
    // Holes: [2, 3] (list 1), [5, 9] (list 2), [11, 22] (list 3); the rest from 24 up (list 52).
    const { iovad } = arenaWithHoles([1, 2, 1, 5, 1, 12, 1], [1, 3, 5]);
    expect(iovad.alloc(3, IOVA_MAX_PFN, false)).toBe(5); // list 1's head is too small; list 2's fits
    expect(iovad.alloc(2, IOVA_MAX_PFN, false)).toBe(8); // what is left of [5, 9] tops list 1
    expect(iovad.alloc(2, IOVA_MAX_PFN, false)).toBe(2);
    expect(iovad.alloc(13, IOVA_MAX_PFN, false)).toBe(24); // [11, 22] is too small
    expect(iovad.alloc(12, IOVA_MAX_PFN, false)).toBe(11);
    iovad.validate();
  });

  it('checks the alignment on the head it looks at, and goes up a list when it does not fit', () => {
    // A 5-pfn hole [5, 9]: a 4-pfn aligned range would start at 8 and end past it.
    const { iovad } = arenaWithHoles([1, 3, 5, 1], [2]);
    expect(iovad.alloc(4, IOVA_MAX_PFN, true)).toBe(12);
    expect(iovad.alloc(2, IOVA_MAX_PFN, true)).toBe(6);
    iovad.validate();
  });

  it('searches a list when its head lies above the limit, and fails only when no segment fits under it', () => {
    // Two 1-pfn holes: [2] low and, freed last so on top of list 0, [0x200] high.
    const { iovad } = vmem();
    const pfns = Array.from({ length: 0x201 }, () => iovad.alloc(1, IOVA_MAX_PFN, true));
    iovad.free(2, 1);
    iovad.free(0x200, 1);
    expect(iovad.alloc(1, 0xff, true)).toBe(2);
    expect(iovad.alloc(1, 0xff, true)).toBe(-1);
    expect(iovad.alloc(1, 0x200, true)).toBe(0x200);
    expect(pfns.at(-1)).toBe(0x201);
    iovad.validate();
  });

  it('coalesces with both neighbours: freeing everything leaves one segment', () => {
    const { iovad } = vmem();
    const sizes = [1, 7, 2, 64, 3, 1, 129, 5, 1024, 1, 1];
    const pfns = sizes.map((s, i) => iovad.alloc(s, IOVA_MAX_PFN, i % 2 === 0));
    expect(iovad.segmentCount()).toBeGreaterThan(sizes.length);
    // Every other one first (no neighbour free), then the rest (both neighbours free).
    for (const i of [1, 3, 5, 7, 9, 0, 2, 4, 6, 8, 10]) {
      iovad.free(pfns[i]!, sizes[i]!);
      iovad.validate();
    }
    expect(iovad.segmentCount()).toBe(1);
    expect(iovad.stats().ranges).toBe(0);
  });

  it('is exact at the top of the pfn space', () => {
    const { iovad } = vmem({ startPfn: 2 ** 52 });
    expect(iovad.alloc(2 ** 40, IOVA_MAX_PFN, true)).toBe(2 ** 52);
    expect(iovad.alloc(3, IOVA_MAX_PFN, true)).toBe(2 ** 52 + 2 ** 40);
    // The only 2^51-aligned place left would end at 2^53 - 1, past IOVA_MAX_PFN.
    expect(iovad.alloc(2 ** 51, IOVA_MAX_PFN, true)).toBe(-1);
    expect(iovad.alloc(2 ** 51 - 2, IOVA_MAX_PFN, true)).toBe(2 ** 52 + 2 ** 51);
    expect(iovad.alloc(2 ** 50, IOVA_MAX_PFN, false)).toBe(2 ** 52 + 2 ** 40 + 3);
    expect(iovad.alloc(1, IOVA_MAX_PFN, true)).toBe(IOVA_MAX_PFN);
    iovad.validate();
  });

  it('carves reservations out, and keeps a live range it covers out after it is freed', () => {
    const { iovad } = vmem();
    const live = iovad.alloc(4, 0xff, true);
    expect(live).toBe(4);
    expect(iovad.reserve(0x6, 0x10)).toBe(true);
    expect(iovad.reserve(0x0, 0x2)).toBe(true);
    expect(iovad.reserve(0x3, 0x3)).toBe(true);
    iovad.validate();
    iovad.free(live, 4);
    iovad.validate();
    const got: number[] = [];
    for (let p = iovad.alloc(1, 0x14, true); p >= 0; p = iovad.alloc(1, 0x14, true)) got.push(p);
    expect(got).toEqual([0x11, 0x12, 0x13, 0x14]);
    expect(iovad.stats().ranges).toBe(4 + 4); // [1, 2], [3], [4, 7] (once live), [8, 0x10]; the 4 pages
  });
});

describe('vmem: quantum caches', () => {
  it('serves sizes up to qcacheMax from per-CPU magazines, exactly sized and aligned', () => {
    const { iovad, cpus } = vmem({ cpus: 2 });
    const a = iovad.allocFast(3, 0xfffff, true);
    expect(a % 4).toBe(0);
    iovad.freeFast(a, 3);
    expect(iovad.allocFast(4, 0xfffff, true)).not.toBe(a); // a class per size, no rounding
    expect(cpus.runOn(1, () => iovad.allocFast(3, 0xfffff, true))).not.toBe(a); // another CPU's magazines
    expect(iovad.allocFast(3, 0xfffff, true)).toBe(a);
    expect(iovad.stats()).toMatchObject({ allocs: 4, rcacheHits: 1, rcacheMisses: 3, failures: 0 });
    iovad.validate();
  });

  it('sends larger sizes straight back to the arena', () => {
    const { iovad } = vmem();
    const a = iovad.allocFast(VMEM_QCACHE_MAX + 1, 0xfffff, true);
    iovad.freeFast(a, VMEM_QCACHE_MAX + 1);
    expect(iovad.segmentCount()).toBe(1);
    expect(iovad.stats()).toMatchObject({ rcacheHits: 0, rcacheMisses: 1, ranges: 0 });
  });

  it('only hands out a cached range under the limit', () => {
    const { iovad } = vmem();
    const pfns = [iovad.allocFast(1, 0xfffff, true), iovad.allocFast(1, 0xfffff, true)];
    expect(pfns).toEqual([1, 2]);
    iovad.freeFast(1, 1);
    iovad.freeFast(2, 1);
    expect(iovad.allocFast(1, 1, true)).toBe(1);
    expect(iovad.allocFast(1, 1, true)).toBe(-1);
    expect(iovad.allocFast(1, 0xfffff, true)).toBe(2);
  });

  it('gives the caches back to the arena, coalesced, when the space is full', () => {
    const { iovad } = vmem();
    const pfns = Array.from({ length: 0xff }, () => iovad.allocFast(1, 0xff, true));
    expect(iovad.allocFast(1, 0xff, true)).toBe(-1);
    for (const p of pfns) iovad.freeFast(p, 1);
    expect(iovad.stats().ranges).toBe(0xff);
    expect(iovad.allocFast(2, 0xff, false)).toBe(-1);
    expect(iovad.allocFast(2, 0xff, true)).toBe(2);
    expect(iovad.segmentCount()).toBe(3);
    expect(iovad.stats()).toMatchObject({ failures: 2, ranges: 1 });
    iovad.validate();
  });

  it('trims the depot to a magazine per CPU on the timer', () => {
    const { iovad, fire } = vmem({ cpus: 1 });
    const n = 4 * IOVA_MAG_SIZE;
    const pfns = Array.from({ length: n }, () => iovad.allocFast(1, 0xfffff, true));
    for (const p of pfns) iovad.freeFast(p, 1);
    expect(iovad.stats().ranges).toBe(n);
    fire();
    fire();
    fire();
    expect(iovad.stats().ranges).toBe(3 * IOVA_MAG_SIZE);
    iovad.validate();
  });
});

describe('vmem: invariants after random sequences', () => {
  it('keeps the segment list, freelists, freemap, hash and caches consistent', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('alloc' as const), size: fc.integer({ min: 1, max: 40 }), limit: fc.constantFrom(0xff, 0x3ff, IOVA_MAX_PFN), aligned: fc.boolean(), fast: fc.boolean(), cpu: fc.nat(1) }),
      fc.record({ kind: fc.constant('free' as const), pick: fc.nat(), cpu: fc.nat(1) }),
      fc.record({ kind: fc.constant('reserve' as const), lo: fc.integer({ min: 0, max: 0x3ff }), len: fc.integer({ min: 1, max: 16 }) }),
      fc.constant({ kind: 'fire' as const }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 150 }), (ops) => {
        const { iovad, cpus, fire } = vmem({ cpus: 2 });
        const live: { pfn: number; size: number; fast: boolean }[] = [];
        for (const o of ops) {
          if (o.kind === 'fire') fire();
          else if (o.kind === 'reserve') iovad.reserve(o.lo, o.lo + o.len - 1);
          else if (o.kind === 'free') {
            if (live.length === 0) continue;
            const [r] = live.splice(o.pick % live.length, 1);
            cpus.runOn(o.cpu, () => (r!.fast ? iovad.freeFast(r!.pfn, r!.size) : iovad.free(r!.pfn, r!.size)));
          } else {
            const pfn = cpus.runOn(o.cpu, () => (o.fast ? iovad.allocFast(o.size, o.limit, true) : iovad.alloc(o.size, o.limit, o.aligned)));
            if (pfn >= 0) live.push({ pfn, size: o.size, fast: o.fast });
            if (pfn >= 0 && (o.fast || o.aligned)) expect(pfn % roundupPow2(o.size)).toBe(0);
          }
          iovad.validate();
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('vmem: footprint', () => {
  it('counts the arena, 64 bytes a segment, hash buckets and 1 KiB a magazine', () => {
    const { iovad } = vmem({ cpus: 2 });
    const base = iovad.footprintBytes();
    expect(base).toBe(53 * 16 + 64 + 64 + 16 * 8 + VMEM_QCACHE_MAX * 2 * 2 * 1024);
    iovad.alloc(1, 0xfffff, true);
    expect(iovad.footprintBytes()).toBe(base + 64);
  });
});
