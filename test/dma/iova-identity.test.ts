import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IdentityIovaDomain } from '../../dma/iova/identity.ts';
import { describeIovaStrategy, iovaDomain } from './iova-suite.ts';

describeIovaStrategy('identity', (p) => new IdentityIovaDomain(p));

const DMA32_LIMIT = 0xfffff;

const identity = (opts: { startPfn?: number; cpus?: number } = {}) => {
  const d = iovaDomain((p) => new IdentityIovaDomain(p), opts);
  return { ...d, iovad: d.iovad as IdentityIovaDomain };
};

describe('identity: IOVA = guest-physical', () => {
  it('hands out the physical pfn when it is size-aligned, under the limit and free', () => {
    const { iovad } = identity();
    expect(iovad.allocFast(1, DMA32_LIMIT, true, 0x1234)).toBe(0x1234);
    expect(iovad.allocFast(3, DMA32_LIMIT, true, 0x2000)).toBe(0x2000);
    expect(iovad.allocFast(16, 2 ** 52 - 1, true, 2 ** 40)).toBe(2 ** 40);
    expect(iovad.stats()).toMatchObject({ allocs: 3, rcacheHits: 3, rcacheMisses: 0, ranges: 3 });
    iovad.freeFast(0x2000, 3);
    expect(iovad.allocFast(4, DMA32_LIMIT, true, 0x2000)).toBe(0x2000);
    iovad.validate();
  });

  it.each([
    ['not size-aligned', 4, 0x1002, DMA32_LIMIT, 0xffffc],
    ['below startPfn', 1, 0, DMA32_LIMIT, 0xfffff],
    ['above the limit', 1, DMA32_LIMIT + 1, DMA32_LIMIT, 0xfffff],
    ['running past the limit', 2, 0x1000, 0x1000, 0xffe],
    ['in a reserved window', 1, 0xfee05, DMA32_LIMIT, 0xfffff],
  ])('falls back top-down from the limit when the physical pfn is %s', (_, size, phys, limit, expected) => {
    const { iovad } = identity();
    iovad.reserve(0xfee00, 0xfeeff);
    expect(iovad.allocFast(size, limit, true, phys)).toBe(expected);
    expect(iovad.stats()).toMatchObject({ allocs: 1, rcacheHits: 0, rcacheMisses: 1 });
  });

  it('falls back for a second buffer in a page already mapped (sub-page buffers share pages)', () => {
    const { iovad } = identity();
    expect(iovad.allocFast(1, DMA32_LIMIT, true, 0x1234)).toBe(0x1234);
    expect(iovad.allocFast(1, DMA32_LIMIT, true, 0x1234)).toBe(DMA32_LIMIT);
    // A range overlapping it at all falls back too.
    expect(iovad.allocFast(8, DMA32_LIMIT, true, 0x1230)).toBe(DMA32_LIMIT + 1 - 16);
    // And an identity range may not land on a fallback range either (the tree goes on below its last).
    expect(iovad.allocFast(1, DMA32_LIMIT, true, DMA32_LIMIT)).toBe(DMA32_LIMIT - 16);
    expect(iovad.stats()).toMatchObject({ rcacheHits: 1, rcacheMisses: 3 });
  });

  it('uses the fallback for alloc() and for allocFast without a physical pfn', () => {
    const { iovad } = identity();
    expect(iovad.alloc(1, DMA32_LIMIT, true)).toBe(DMA32_LIMIT);
    expect(iovad.allocFast(1, DMA32_LIMIT, true)).toBe(DMA32_LIMIT - 1);
    expect(iovad.identityRanges()).toBe(0);
  });

  it('never lets the fallback hand out an identity range, even when that is all it would find', () => {
    const { iovad } = identity();
    const phys = [0xff, 0xfe, 0x80, 0x1];
    for (const p of phys) expect(iovad.allocFast(1, 0xff, true, p)).toBe(p);
    const got: number[] = [];
    for (let p = iovad.allocFast(1, 0xff, true); p >= 0; p = iovad.allocFast(1, 0xff, true)) got.push(p);
    expect(got[0]).toBe(0xfd);
    expect(got.length).toBe(0xff - phys.length);
    expect(new Set([...got, ...phys]).size).toBe(0xff);
    iovad.validate();
    // Freed, an identity range is the fallback's again.
    iovad.freeFast(0x80, 1);
    expect(iovad.allocFast(1, 0xff, true)).toBe(0x80);
    expect(iovad.allocFast(1, 0xff, true, 0x80)).toBe(-1);
    iovad.validate();
  });

  it('keeps a reservation made over a live fallback range after that range is freed', () => {
    const { iovad } = identity();
    const live = iovad.allocFast(1, 0xff, true);
    expect(live).toBe(0xff);
    expect(iovad.reserve(0xf0, 0xff)).toBe(true);
    iovad.freeFast(live, 1);
    expect(iovad.allocFast(1, 0xff, true, 0xf5)).toBe(0xef);
    const got: number[] = [];
    for (let p = iovad.allocFast(1, 0xff, true); p >= 0; p = iovad.allocFast(1, 0xff, true)) got.push(p);
    expect(Math.max(...got)).toBe(0xee);
    expect(got.length).toBe(0xee);
    iovad.validate();
  });

  it('counts the fallback tree and a node per identity range', () => {
    const { iovad } = identity();
    const base = iovad.footprintBytes();
    iovad.allocFast(1, DMA32_LIMIT, true, 0x10);
    iovad.allocFast(1, DMA32_LIMIT, true);
    expect(iovad.footprintBytes()).toBe(base + 2 * 64);
  });

  it('keeps its trees consistent through random sequences of identity and fallback ranges', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('alloc' as const), size: fc.integer({ min: 1, max: 9 }), phys: fc.option(fc.integer({ min: 0, max: 0x3ff }), { nil: undefined }), limit: fc.constantFrom(0xff, 0x3ff) }),
      fc.record({ kind: fc.constant('free' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('reserve' as const), lo: fc.integer({ min: 0, max: 0x3ff }), len: fc.integer({ min: 1, max: 8 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const { iovad } = identity();
        const live: { pfn: number; size: number }[] = [];
        for (const o of ops) {
          if (o.kind === 'reserve') iovad.reserve(o.lo, o.lo + o.len - 1);
          else if (o.kind === 'free') {
            if (live.length === 0) continue;
            const [r] = live.splice(o.pick % live.length, 1);
            iovad.freeFast(r!.pfn, r!.size);
          } else {
            const pfn = iovad.allocFast(o.size, o.limit, true, o.phys);
            if (pfn < 0) continue;
            for (const r of live) expect(pfn + o.size <= r.pfn || r.pfn + r.size <= pfn).toBe(true);
            live.push({ pfn, size: o.size });
          }
          iovad.validate();
        }
      }),
    );
  });
});
