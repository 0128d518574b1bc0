import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { roundupPow2 } from '../../dma/iova.ts';
import { EIOVAR_SCAN, EiovarIovaDomain } from '../../dma/iova/eiovar.ts';
import { LinuxIovaDomain } from '../../dma/iova/linux.ts';
import { describeIovaStrategy, iovaDomain } from './iova-suite.ts';

describeIovaStrategy('eiovar', (p) => new EiovarIovaDomain(p));

const DMA32_LIMIT = 0xfffff;

const eiovar = (opts: { startPfn?: number; cpus?: number } = {}) => {
  const d = iovaDomain((p) => new EiovarIovaDomain(p), opts);
  return { ...d, iovad: d.iovad as EiovarIovaDomain };
};

describe('EiovaR: exact-size freelists', () => {
  afterEach(() => vi.restoreAllMocks());

  it('gives a freed range back to the next allocation of exactly its size, without the tree', () => {
    const { iovad } = eiovar();
    const a = iovad.allocFast(5, DMA32_LIMIT, true);
    expect(a % 8).toBe(0);
    iovad.freeFast(a, 5);
    expect(iovad.stats().ranges).toBe(1); // still allocated in the tree while cached
    const treeAlloc = vi.spyOn(LinuxIovaDomain.prototype, 'alloc');
    expect(iovad.allocFast(5, DMA32_LIMIT, true)).toBe(a);
    expect(treeAlloc).not.toHaveBeenCalled();
    expect(iovad.stats()).toMatchObject({ allocs: 2, rcacheHits: 1, rcacheMisses: 1, failures: 0, ranges: 1 });
  });

  it('keeps one list per size: no rounding to classes, no size above which it stops caching', () => {
    const { iovad } = eiovar();
    const a = iovad.allocFast(3, DMA32_LIMIT, true);
    const big = iovad.allocFast(4096, DMA32_LIMIT, true);
    iovad.freeFast(a, 3);
    iovad.freeFast(big, 4096);
    expect(iovad.allocFast(4, DMA32_LIMIT, true)).not.toBe(a);
    expect(iovad.allocFast(4096, DMA32_LIMIT, true)).toBe(big);
    expect(iovad.allocFast(3, DMA32_LIMIT, true)).toBe(a);
    expect(iovad.stats()).toMatchObject({ rcacheHits: 2, rcacheMisses: 3 });
  });

  it('is one list for all CPUs: a range freed on one CPU is reused on another', () => {
    const { iovad, cpus } = eiovar({ cpus: 2 });
    const a = iovad.allocFast(1, DMA32_LIMIT, true);
    iovad.freeFast(a, 1);
    expect(cpus.runOn(1, () => iovad.allocFast(1, DMA32_LIMIT, true))).toBe(a);
  });

  it('reuses the most recently freed range that fits under the limit', () => {
    const { iovad } = eiovar();
    const high = iovad.allocFast(1, 2 ** 36 - 1, true);
    const low = iovad.allocFast(1, DMA32_LIMIT, true);
    iovad.freeFast(low, 1);
    iovad.freeFast(high, 1);
    expect(iovad.allocFast(1, DMA32_LIMIT, true)).toBe(low);
    expect(iovad.allocFast(1, DMA32_LIMIT, true)).toBe(low - 1); // high does not fit: the tree
    expect(iovad.allocFast(1, 2 ** 36 - 1, true)).toBe(high);
  });

  it(`looks at most ${EIOVAR_SCAN} entries deep for one under the limit`, () => {
    const { iovad } = eiovar();
    const low = iovad.allocFast(1, DMA32_LIMIT, true);
    const highs = Array.from({ length: EIOVAR_SCAN }, () => iovad.allocFast(1, 2 ** 36 - 1, true));
    iovad.freeFast(low, 1);
    for (const p of highs) iovad.freeFast(p, 1);
    expect(iovad.allocFast(1, DMA32_LIMIT, true)).not.toBe(low);
    iovad.allocFast(1, 2 ** 36 - 1, true); // one high entry fewer on top
    expect(iovad.allocFast(1, DMA32_LIMIT, true)).toBe(low);
  });

  it('gives every freelist back to the tree and tries again when the space is full', () => {
    const { iovad } = eiovar();
    const pfns = Array.from({ length: 0xff }, () => iovad.allocFast(1, 0xff, true));
    expect(iovad.allocFast(1, 0xff, true)).toBe(-1);
    for (const p of pfns) iovad.freeFast(p, 1);
    expect(iovad.cachedRanges()).toBe(0xff);
    expect(iovad.allocFast(2, 0xff, false)).toBe(-1);
    expect(iovad.cachedRanges()).toBe(0xff);
    expect(iovad.allocFast(2, 0xff, true)).toBe(0xfe);
    expect(iovad.cachedRanges()).toBe(0);
    expect(iovad.stats()).toMatchObject({ failures: 2, ranges: 1 });
    iovad.validate();
  });

  it('counts the tree, a link per cached range and a head per size', () => {
    const { iovad } = eiovar();
    const base = iovad.footprintBytes();
    const a = iovad.allocFast(1, DMA32_LIMIT, true);
    const b = iovad.allocFast(1, DMA32_LIMIT, true);
    expect(iovad.footprintBytes()).toBe(base + 2 * 64);
    iovad.freeFast(a, 1);
    iovad.freeFast(b, 1);
    expect(iovad.footprintBytes()).toBe(base + 2 * 64 + 2 * 16 + 32);
  });

  it('keeps the tree and the freelists consistent through random sequences', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('alloc' as const), size: fc.constantFrom(1, 2, 3, 16, 17, 64), limit: fc.constantFrom(0xff, 0x3ff), fast: fc.boolean() }),
      fc.record({ kind: fc.constant('free' as const), pick: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const { iovad } = eiovar();
        const live: { pfn: number; size: number; fast: boolean }[] = [];
        for (const o of ops) {
          if (o.kind === 'free') {
            if (live.length === 0) continue;
            const [r] = live.splice(o.pick % live.length, 1);
            if (r!.fast) iovad.freeFast(r!.pfn, r!.size);
            else iovad.free(r!.pfn, r!.size);
          } else {
            const pfn = o.fast ? iovad.allocFast(o.size, o.limit, true) : iovad.alloc(o.size, o.limit, true);
            if (pfn < 0) continue;
            expect(pfn % roundupPow2(o.size)).toBe(0);
            live.push({ pfn, size: o.size, fast: o.fast });
          }
          iovad.validate();
          expect(iovad.stats().ranges).toBe(live.length + iovad.cachedRanges());
        }
      }),
    );
  });
});
