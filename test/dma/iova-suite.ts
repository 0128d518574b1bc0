// The property suite every IOVA strategy passes: random sequences of reserve,
// alloc, allocFast, free and freeFast on several CPUs, checked against a
// reference model that is nothing but the list of ranges handed out and
// reserved. Limits and reserved ranges reach the top of the pfn space, so
// IOVAs above 2^53 are covered.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IOVA_MAX_PFN, roundupPow2, type IovaDomain, type IovaDomainParams } from '../../dma/iova.ts';
import type { IovaStrategy } from '../../dma/iova/index.ts';
import { Cpus } from '../../kernel/smp.ts';
import type { Timer } from '../../kernel/timer.ts';

const NR_CPUS = 4;

/** A strategy's domain over 4 KiB pfns; `fire()` runs the timers it armed. */
export function iovaDomain(create: IovaStrategy, opts: { startPfn?: number; cpus?: number } = {}) {
  const cpus = new Cpus(opts.cpus ?? NR_CPUS);
  let timers: (() => void)[] = [];
  const params: IovaDomainParams = {
    granuleShift: 12,
    startPfn: opts.startPfn ?? 1,
    cpus,
    timers: {
      add: (_delay, fn) => {
        timers.push(fn);
        return {} as Timer;
      },
    },
  };
  const iovad = create(params);
  const fire = () => {
    const due = timers;
    timers = [];
    for (const fn of due) fn();
  };
  return { iovad, cpus, fire };
}

interface Range {
  lo: number;
  hi: number;
}

type Op =
  | { op: 'alloc'; size: number; limit: number; aligned: boolean; cpu: number }
  | { op: 'allocFast'; size: number; limit: number; cpu: number; phys: number | undefined }
  | { op: 'free'; pick: number; cpu: number }
  | { op: 'fire' };

/** Limits that matter: tiny spaces that fill up, 32-bit, 48-bit, and the very top. */
const LIMITS = [0xff, 0xfff, 0xfffff, 2 ** 36 - 1, 2 ** 52 - 1, IOVA_MAX_PFN];
const limitArb = fc.constantFrom(...LIMITS);
const sizeArb = fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 64 }), fc.constantFrom(127, 128, 129, 1024, 4096));
const cpuArb = fc.integer({ min: 0, max: NR_CPUS - 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('alloc' as const), size: sizeArb, limit: limitArb, aligned: fc.boolean(), cpu: cpuArb }) },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('allocFast' as const),
      size: sizeArb,
      limit: limitArb,
      cpu: cpuArb,
      // The guest-physical pfn the range maps: guest RAM is low, so most hints sit in the first GiB.
      phys: fc.option(fc.oneof(fc.integer({ min: 0, max: 0x3ffff }), fc.integer({ min: 0, max: IOVA_MAX_PFN })), { nil: undefined }),
    }),
  },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('free' as const), pick: fc.nat(), cpu: cpuArb }) },
  { weight: 1, arbitrary: fc.constant({ op: 'fire' as const }) },
);
/** Reserved ranges: small holes low down, the x86 MSI window, holes near 2^53 pfns. */
const reservedArb = fc.array(
  fc.oneof(
    fc.record({ lo: fc.integer({ min: 0, max: 0x1ff }), len: fc.integer({ min: 1, max: 64 }) }),
    fc.constant({ lo: 0xfee00, len: 0x100 }),
    fc.record({ lo: fc.integer({ min: IOVA_MAX_PFN - 0x3ff, max: IOVA_MAX_PFN }), len: fc.integer({ min: 1, max: 16 }) }),
  ),
  { maxLength: 4 },
);

const overlaps = (a: Range, b: Range) => a.lo <= b.hi && b.lo <= a.hi;

/**
 * Runs one sequence and checks each range handed out against the model.
 * Returns what each allocation gave, so two runs can be compared.
 */
function runSequence(create: IovaStrategy, startPfn: number, reserved: { lo: number; len: number }[], ops: Op[]): number[] {
  const { iovad, cpus, fire } = iovaDomain(create, { startPfn });
  const held: Range[] = [];
  for (const r of reserved) {
    const hi = Math.min(r.lo + r.len - 1, IOVA_MAX_PFN);
    expect(iovad.reserve(r.lo, hi)).toBe(true);
    held.push({ lo: r.lo, hi });
  }
  const live: (Range & { size: number; fast: boolean })[] = [];
  const results: number[] = [];
  for (const o of ops) {
    if (o.op === 'fire') {
      fire();
      continue;
    }
    cpus.runOn(o.cpu, () => {
      if (o.op === 'free') {
        if (live.length === 0) return;
        const [r] = live.splice(o.pick % live.length, 1);
        if (r!.fast) iovad.freeFast(r!.lo, r!.size);
        else iovad.free(r!.lo, r!.size);
        return;
      }
      const aligned = o.op === 'allocFast' || o.aligned;
      const pfn = o.op === 'alloc' ? iovad.alloc(o.size, o.limit, o.aligned) : iovad.allocFast(o.size, o.limit, true, o.phys);
      results.push(pfn);
      if (pfn === -1) return;
      const r = { lo: pfn, hi: pfn + o.size - 1, size: o.size, fast: o.op === 'allocFast' };
      expect(Number.isSafeInteger(pfn), `pfn ${pfn}`).toBe(true);
      expect(pfn, 'below startPfn').toBeGreaterThanOrEqual(startPfn);
      expect(r.hi, 'above the limit').toBeLessThanOrEqual(o.limit);
      if (aligned) expect(pfn % roundupPow2(o.size), `pfn ${pfn} size ${o.size} not size-aligned`).toBe(0);
      const clash = held.find((h) => overlaps(h, r)) ?? live.find((h) => overlaps(h, r));
      expect(clash, `[${r.lo}, ${r.hi}] overlaps [${clash?.lo}, ${clash?.hi}]`).toBeUndefined();
      live.push(r);
    });
  }
  // Everything given back, the caches flushed by a failing allocation, the space is whole again.
  for (const r of live) cpus.runOn(0, () => (r.fast ? iovad.freeFast(r.lo, r.size) : iovad.free(r.lo, r.size)));
  fire();
  return results;
}

/** The shared suite. `name` is the strategy's `iova=` name. */
export function describeIovaStrategy(name: string, create: IovaStrategy): void {
  describe(`IOVA strategy ${name}: shared properties`, () => {
    it('never hands out a range below startPfn, above the limit, unaligned, or overlapping a live or reserved one', () => {
      fc.assert(
        fc.property(fc.constantFrom(1, 0x10, 0x100, 2 ** 45), reservedArb, fc.array(opArb, { maxLength: 200 }), (startPfn, reserved, ops) => {
          runSequence(create, startPfn, reserved, ops);
        }),
        { numRuns: 150 },
      );
    });

    it('is deterministic: the same sequence gives the same ranges', () => {
      fc.assert(
        fc.property(reservedArb, fc.array(opArb, { maxLength: 100 }), (reserved, ops) => {
          expect(runSequence(create, 1, reserved, ops)).toEqual(runSequence(create, 1, reserved, ops));
        }),
        { numRuns: 30 },
      );
    });

    it('serves a small request from an empty domain, at every limit', () => {
      for (const limit of LIMITS) {
        for (const size of [1, 3, 64]) {
          const { iovad } = iovaDomain(create);
          const pfn = iovad.allocFast(size, limit, true);
          expect(pfn, `size ${size} limit ${limit}`).toBeGreaterThanOrEqual(1);
          expect(pfn + size - 1).toBeLessThanOrEqual(limit);
        }
      }
    });

    it('hands out ranges above 2^53 bytes exactly and takes them back', () => {
      const startPfn = 2 ** 45; // a domain whose aperture starts at 2^57
      const { iovad } = iovaDomain(create, { startPfn });
      const pfns = [iovad.alloc(1, IOVA_MAX_PFN, true), iovad.allocFast(16, IOVA_MAX_PFN, true), iovad.allocFast(1, 2 ** 52 - 1, true, 2 ** 46)];
      for (const pfn of pfns) expect(pfn).toBeGreaterThanOrEqual(startPfn);
      expect(pfns[1]! % 16).toBe(0);
      expect(new Set(pfns).size).toBe(3);
      iovad.free(pfns[0]!, 1);
      iovad.freeFast(pfns[1]!, 16);
      iovad.freeFast(pfns[2]!, 1);
    });

    it('keeps a reserved range out even when it is all that is left', () => {
      const { iovad } = iovaDomain(create);
      expect(iovad.reserve(0x10, 0xfe)).toBe(true);
      const got: number[] = [];
      for (let pfn = iovad.allocFast(1, 0xff, true); pfn !== -1; pfn = iovad.allocFast(1, 0xff, true)) got.push(pfn);
      expect(got.sort((a, b) => a - b)).toEqual([...Array.from({ length: 15 }, (_, i) => i + 1), 0xff]);
    });

    it('refuses an invalid reservation', () => {
      const { iovad } = iovaDomain(create);
      expect(iovad.reserve(5, 4)).toBe(false);
      expect(iovad.reserve(0, IOVA_MAX_PFN + 1)).toBe(false);
    });

    it('gets all of a small space back after everything is freed', () => {
      const { iovad, cpus, fire } = iovaDomain(create);
      for (let round = 0; round < 3; round++) {
        const got: number[] = [];
        cpus.runOn(round % NR_CPUS, () => {
          for (let pfn = iovad.allocFast(1, 0xff, true); pfn !== -1; pfn = iovad.allocFast(1, 0xff, true)) got.push(pfn);
        });
        expect(got.length, `round ${round}`).toBe(0xff);
        cpus.runOn((round + 1) % NR_CPUS, () => got.forEach((pfn) => iovad.freeFast(pfn, 1)));
        fire();
      }
      const d: IovaDomain = iovad;
      expect(d.stats().failures).toBe(3);
    });
  });
}
