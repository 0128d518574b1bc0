import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DMA_MAPPING_ERROR, DmaDirection, dmaMapSingle, dmaMappingError, dmaMaxMappingSize, dmaSetMinAlignMask, dmaUnmapSingle } from '../../dma/api.ts';
import { IO_TLB_SEGSIZE, IO_TLB_SIZE, nrSlots } from '../../dma/swiotlb.ts';
import { MiB, testKernel } from './kernel.ts';

const { TO_DEVICE, FROM_DEVICE } = DmaDirection;
const KiB = 1024;

/** A forced pool of `nslabs` slots: every mapping of `dev` goes through it. */
function forced(nslabs: number) {
  const k = testKernel({ lowMiB: 16, cmdline: `swiotlb=${nslabs},force` });
  const dev = k.device('0000:00:03.0');
  const pool = k.dma.swiotlb!;
  const orig = 8 * MiB;
  const slot = (addr: unknown) => ((addr as number) - pool.start) / IO_TLB_SIZE;
  return { k, dev, pool, orig, slot };
}

describe('swiotlb geometry', () => {
  it('maps up to one segment (256 KiB); one byte more fails as "buffer is full"', () => {
    const { k, dev, pool, orig } = forced(1024);
    const a = dmaMapSingle(dev, orig, 256 * KiB, TO_DEVICE);
    expect(dmaMappingError(a)).toBe(false);
    expect(pool.stats().used).toBe(IO_TLB_SEGSIZE);
    expect(dmaMapSingle(dev, orig, 256 * KiB + 1, TO_DEVICE)).toBe(DMA_MAPPING_ERROR);
    expect(k.dmesg().at(-1)).toBe('0000:00:03.0: swiotlb buffer is full (sz: 262145 bytes), total 1024 (slots), used 128 (slots)');
    dmaUnmapSingle(dev, a, 256 * KiB, TO_DEVICE);
    expect(pool.stats()).toMatchObject({ used: 0, hiwater: 128, bounces: 1 });
  });

  it('fails when full and recovers once mappings are unmapped', () => {
    const { k, dev, orig } = forced(128);
    const live = Array.from({ length: 128 }, () => dmaMapSingle(dev, orig, IO_TLB_SIZE, TO_DEVICE));
    expect(live.some(dmaMappingError)).toBe(false);
    expect(dmaMappingError(dmaMapSingle(dev, orig, 1, TO_DEVICE))).toBe(true);
    expect(k.dmesg().at(-1)).toBe('0000:00:03.0: swiotlb buffer is full (sz: 1 bytes), total 128 (slots), used 128 (slots)');
    dmaUnmapSingle(dev, live[77]!, IO_TLB_SIZE, TO_DEVICE);
    expect(dmaMapSingle(dev, orig, 1, TO_DEVICE)).toBe(live[77]);
  });

  it('never lets a mapping cross a 128-slot segment, even with enough free slots around it', () => {
    const { dev, pool, orig, slot } = forced(256);
    const a = dmaMapSingle(dev, orig, 100 * IO_TLB_SIZE, TO_DEVICE);
    const b = dmaMapSingle(dev, orig, 64 * IO_TLB_SIZE, TO_DEVICE);
    const c = dmaMapSingle(dev, orig, 64 * IO_TLB_SIZE, TO_DEVICE);
    expect([slot(a), slot(b), slot(c)]).toEqual([0, 128, 192]);
    // 28 slots are left, all in the first segment: 29 cannot be had, 28 can.
    expect(dmaMappingError(dmaMapSingle(dev, orig, 29 * IO_TLB_SIZE, TO_DEVICE))).toBe(true);
    expect(slot(dmaMapSingle(dev, orig, 28 * IO_TLB_SIZE, TO_DEVICE))).toBe(100);
    expect(pool.stats().used).toBe(256);
  });

  it('places mappings of a page or more on a page boundary', () => {
    const { dev, orig, slot } = forced(1024);
    expect(slot(dmaMapSingle(dev, orig, 100, TO_DEVICE))).toBe(0);
    expect(slot(dmaMapSingle(dev, orig, 4096, TO_DEVICE))).toBe(2);
    expect(slot(dmaMapSingle(dev, orig, 100, TO_DEVICE))).toBe(4);
    expect(slot(dmaMapSingle(dev, orig, 5000, TO_DEVICE))).toBe(6);
    expect(slot(dmaMapSingle(dev, orig, 2049, TO_DEVICE))).toBe(9);
  });

  it("keeps the original's offset under min_align_mask, at the cost of the largest mapping", () => {
    const { dev, orig } = forced(1024);
    dmaSetMinAlignMask(dev, 0xfff);
    for (const off of [0xa00, 0x200, 0xfff, 0x800]) {
      const a = dmaMapSingle(dev, orig + off, 300, TO_DEVICE) as number;
      expect(a & 0xfff).toBe(off);
    }
    expect(dmaMaxMappingSize(dev)).toBe(256 * KiB - 4 * KiB);
  });

  it('copies only the part a sync names, and clamps a sync that runs past the mapping', () => {
    const { k, dev, orig } = forced(1024);
    const rx = dmaMapSingle(dev, orig, 3000, FROM_DEVICE) as number;
    k.mem.fill(rx, 3000, 0x77);
    k.dma.swiotlb!.syncForCpu(dev, rx + 1000, 5000, FROM_DEVICE);
    expect(k.dmesg().at(-1)).toBe('0000:00:03.0: swiotlb: Buffer overflow detected. Allocation size: 2000. Mapping size: 5000.');
    expect(k.mem.read(orig + 999, 2)).toEqual(new Uint8Array([0, 0x77]));
    expect(k.mem.read(orig + 2999, 2)).toEqual(new Uint8Array([0x77, 0]));
  });
});

describe('swiotlb slot accounting (property)', () => {
  type Op = { kind: 'map'; size: number } | { kind: 'unmap'; pick: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('map' as const), size: fc.oneof(fc.integer({ min: 1, max: 8 * KiB }), fc.integer({ min: 1, max: 300 * KiB })) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('unmap' as const), pick: fc.nat() }) },
  );

  it('used slots equal the live mappings, slots never overlap, and a map fails only when no fitting run is free', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const { k, dev, pool, orig, slot } = forced(512);
        const live: { first: number; n: number; size: number; tag: number }[] = [];
        const busy = new Uint8Array(pool.nslabs);
        ops.forEach((o, step) => {
          if (o.kind === 'unmap') {
            if (live.length === 0) return;
            const m = live.splice(o.pick % live.length, 1)[0]!;
            dmaUnmapSingle(dev, pool.start + m.first * IO_TLB_SIZE, m.size, TO_DEVICE);
            busy.fill(0, m.first, m.first + m.n);
          } else {
            const n = nrSlots(o.size);
            const align = o.size >= 4096 ? 2 : 1; // a page or more: page-aligned
            const tag = (step % 255) + 1;
            k.mem.fill(orig, o.size, tag);
            const a = dmaMapSingle(dev, orig, o.size, TO_DEVICE);
            expect(dmaMappingError(a)).toBe(!fits(busy, n, align));
            if (dmaMappingError(a)) return;
            const first = slot(a);
            expect(first % align).toBe(0);
            expect(Math.floor(first / IO_TLB_SEGSIZE)).toBe(Math.floor((first + n - 1) / IO_TLB_SEGSIZE));
            expect(busy.subarray(first, first + n).every((b) => b === 0)).toBe(true);
            busy.fill(1, first, first + n);
            live.push({ first, n, size: o.size, tag });
          }
          expect(pool.stats().used).toBe(live.reduce((sum, m) => sum + m.n, 0));
        });
        // No mapping wrote over another: each bounce buffer still holds its own data.
        for (const m of live) {
          const a = pool.start + m.first * IO_TLB_SIZE;
          expect([k.mem.read(a, 1)[0], k.mem.read(a + m.size - 1, 1)[0]]).toEqual([m.tag, m.tag]);
        }
      }),
      { numRuns: 150 },
    );
  });
});

/** The reference model: is there a free run of `n` slots, `align`-aligned, inside one segment? */
function fits(busy: Uint8Array, n: number, align: number): boolean {
  if (n > IO_TLB_SEGSIZE) return false;
  for (let i = 0; i + n <= busy.length; i += align) {
    if (Math.floor(i / IO_TLB_SEGSIZE) !== Math.floor((i + n - 1) / IO_TLB_SEGSIZE)) continue;
    if (busy.subarray(i, i + n).every((b) => b === 0)) return true;
  }
  return false;
}
