import { describe, expect, it } from 'vitest';
import {
  DMA_MAPPING_ERROR,
  DmaDirection,
  dmaAllocCoherent,
  dmaFreeCoherent,
  dmaGetMask,
  dmaMapSg,
  dmaMapSingle,
  dmaMappingError,
  dmaMaxMappingSize,
  dmaSetCoherentMask,
  dmaSetMask,
  dmaSetMaskAndCoherent,
  dmaStats,
  dmaSyncSingleForCpu,
  dmaSyncSingleForDevice,
  dmaUnmapSg,
  dmaUnmapSingle,
  type ScatterEntry,
} from '../../dma/api.ts';
import { SIZE_MAX } from '../../dma/direct.ts';
import { Bus, DMA_BIT_MASK, Device } from '../../kernel/device.ts';
import { PAGE_SIZE } from '../../kernel/page-alloc.ts';
import { GiB4, MiB, pattern, testKernel } from './kernel.ts';

const { TO_DEVICE, FROM_DEVICE, BIDIRECTIONAL, NONE } = DmaDirection;

describe('dma-direct without swiotlb', () => {
  it('maps a buffer the device reaches to its physical address', () => {
    const k = testKernel();
    const dev = k.device();
    const buf = k.slab.kzalloc(512);
    expect(dmaMapSingle(dev, buf, 512, TO_DEVICE)).toBe(buf);
    dmaUnmapSingle(dev, buf, 512, TO_DEVICE);
    expect(dmaStats(dev)).toEqual({ maps: 1, unmaps: 1, bytesMapped: 512, mappingErrors: 0, bounces: 0 });
    expect(k.dma.swiotlb).toBeUndefined();
  });

  it('dma_mapping_error is true for the all-ones bigint only, never for a number', () => {
    expect(dmaMappingError(DMA_MAPPING_ERROR)).toBe(true);
    expect(dmaMappingError(2n ** 64n - 1n)).toBe(true);
    for (const a of [0, 0xffff_ffff, 2 ** 53 - 1, 2 ** 64, 2n ** 64n - 2n, 2n ** 53n]) expect(dmaMappingError(a)).toBe(false);
  });

  it('fails a buffer beyond the mask with Linux overflow warning, once per device', () => {
    const k = testKernel({ lowMiB: 32 });
    const dev = k.device('0000:00:02.0');
    expect(dmaSetMask(dev, 24)).toBe(true);
    const high = 20 * MiB;
    expect(dmaMapSingle(dev, high, 4096, TO_DEVICE)).toBe(DMA_MAPPING_ERROR);
    expect(dmaMappingError(dmaMapSingle(dev, high, 4096, TO_DEVICE))).toBe(true);
    expect(k.dmesg().filter((l) => l.includes('overflow'))).toEqual([
      '0000:00:02.0: DMA addr 0x0000000001400000+4096 overflow (mask ffffff, bus limit ffffffffffffffff).',
    ]);
    expect(dmaStats(dev).mappingErrors).toBe(2);
  });

  it('takes the bus limit into account as well as the mask', () => {
    const k = testKernel({ lowMiB: 32 });
    const dev = k.device('limited', 24);
    expect(dmaGetMask(dev)).toBe(DMA_BIT_MASK(32));
    expect(dmaMapSingle(dev, 16 * MiB - 4096, 4096, FROM_DEVICE)).toBe(16 * MiB - 4096);
    expect(dmaMapSingle(dev, 16 * MiB - 4096, 4097, FROM_DEVICE)).toBe(DMA_MAPPING_ERROR);
  });

  it('rejects what Linux rejects: no ops, a zero size, DMA_NONE', () => {
    const k = testKernel();
    const bare = new Device('bare', new Bus('test', () => {}));
    expect(() => dmaMapSingle(bare, 0x1000, 16, TO_DEVICE)).toThrow(/bare: DMA API call on a device the DMA subsystem never configured/);
    const dev = k.device('d');
    expect(dmaMapSingle(dev, 0x1000, 0, TO_DEVICE)).toBe(DMA_MAPPING_ERROR);
    expect(dmaMapSingle(dev, 0x1000, 16, NONE)).toBe(DMA_MAPPING_ERROR);
    expect(dmaMapSg(dev, [], TO_DEVICE)).toBe(0);
    expect(dmaAllocCoherent(dev, 0)).toBeUndefined();
    expect(k.dmesg()).toEqual([
      'd: DMA-API: device driver maps a buffer of 0 bytes',
      'd: DMA-API: device driver uses invalid DMA direction [NONE]',
      'd: DMA-API: device driver maps an empty scatterlist',
      'd: DMA-API: coherent allocation of 0 bytes',
    ]);
    expect(dmaStats(dev).mappingErrors).toBe(3);
  });

  it('has no mapping size limit when nothing bounces', () => {
    const k = testKernel();
    expect(dmaMaxMappingSize(k.device())).toBe(SIZE_MAX);
  });
});

describe('dma-direct bouncing through swiotlb', () => {
  // 16 MiB below 4 GiB, 4 MiB above: the pool is allocated because RAM extends past 4 GiB.
  const highKernel = () => testKernel({ highMiB: 4 });

  it('bounces a buffer above 4 GiB for a 32-bit device to a slot below 4 GiB', () => {
    const k = highKernel();
    const dev = k.device();
    const orig = GiB4 + 0x3000;
    const addr = dmaMapSingle(dev, orig, 1000, TO_DEVICE);
    expect(typeof addr).toBe('number');
    expect(k.dma.swiotlb!.contains(addr as number)).toBe(true);
    expect(addr as number).toBeLessThan(GiB4);
    expect(dmaStats(dev).bounces).toBe(1);
    expect(k.trace.events.map((e) => e.name)).toContain('swiotlb_bounced');
    dmaUnmapSingle(dev, addr, 1000, TO_DEVICE);
    expect(k.dma.swiotlb!.stats().used).toBe(0);
  });

  it('does not bounce for a 64-bit device', () => {
    const k = highKernel();
    const dev = k.device();
    expect(dmaSetMaskAndCoherent(dev, 64)).toBe(true);
    expect(dmaMapSingle(dev, GiB4 + 0x3000, 1000, TO_DEVICE)).toBe(GiB4 + 0x3000);
    expect(dmaMaxMappingSize(dev)).toBe(SIZE_MAX);
  });

  it('TO_DEVICE: copies in on map; what the device writes never reaches the original', () => {
    const k = highKernel();
    const dev = k.device();
    const orig = GiB4 + 0x1000;
    const data = pattern(3000, 1);
    k.mem.write(orig, data);
    const addr = dmaMapSingle(dev, orig, 3000, TO_DEVICE) as number;
    expect(k.mem.read(addr, 3000)).toEqual(data);
    k.mem.fill(addr, 3000, 0xee); // a misbehaving device writes into a read-only buffer
    dmaSyncSingleForCpu(dev, addr, 3000, TO_DEVICE);
    dmaUnmapSingle(dev, addr, 3000, TO_DEVICE);
    expect(k.mem.read(orig, 3000)).toEqual(data);
  });

  it('FROM_DEVICE: copies out on unmap; a partial device write keeps the rest of the original', () => {
    const k = highKernel();
    const dev = k.device();
    const orig = GiB4 + 0x1000;
    const before = pattern(4096, 2);
    k.mem.write(orig, before);
    const addr = dmaMapSingle(dev, orig, 4096, FROM_DEVICE) as number;
    const written = pattern(1024, 99);
    k.mem.write(addr, written);
    expect(k.mem.read(orig, 4096)).toEqual(before); // nothing reaches the CPU before unmap
    dmaUnmapSingle(dev, addr, 4096, FROM_DEVICE);
    const after = k.mem.read(orig, 4096);
    expect(after.subarray(0, 1024)).toEqual(written);
    expect(after.subarray(1024)).toEqual(before.subarray(1024));
  });

  it('sync_for_cpu copies the device data out and sync_for_device copies CPU data in, each only its way', () => {
    const k = highKernel();
    const dev = k.device();
    const orig = GiB4 + 0x8000;
    k.mem.fill(orig, 2048, 0x11);
    const rx = dmaMapSingle(dev, orig, 2048, FROM_DEVICE) as number;
    k.mem.fill(rx, 2048, 0x22);
    dmaSyncSingleForCpu(dev, rx, 2048, FROM_DEVICE);
    expect(k.mem.read(orig, 1)[0]).toBe(0x22);
    k.mem.fill(orig, 2048, 0x33);
    dmaSyncSingleForDevice(dev, rx, 2048, FROM_DEVICE); // FROM_DEVICE: nothing to hand over
    expect(k.mem.read(rx, 1)[0]).toBe(0x22);
    dmaUnmapSingle(dev, rx, 2048, FROM_DEVICE);

    const orig2 = GiB4 + 0x10000;
    k.mem.fill(orig2, 2048, 0x44);
    const bidi = dmaMapSingle(dev, orig2, 2048, BIDIRECTIONAL) as number;
    k.mem.fill(orig2, 100, 0x55);
    dmaSyncSingleForDevice(dev, bidi, 100, BIDIRECTIONAL);
    expect(k.mem.read(bidi, 101)).toEqual(new Uint8Array([...Array(100).fill(0x55), 0x44]));
    dmaUnmapSingle(dev, bidi, 2048, BIDIRECTIONAL);
  });

  it('fails with the swiotlb overflow warning when the device cannot reach the pool either', () => {
    const k = testKernel({ lowMiB: 32, cmdline: 'swiotlb=1024' });
    const dev = k.device('tiny', 20); // bus limit 1 MiB; the pool sits at the top of low memory
    const boot = k.dmesg().length;
    const start = k.dma.swiotlb!.start;
    expect(start).toBeGreaterThan(MiB);
    expect(dmaMappingError(dmaMapSingle(dev, 24 * MiB, 2048, TO_DEVICE))).toBe(true);
    expect(k.dmesg().slice(boot)).toHaveLength(1);
    expect(k.dmesg()[boot]).toBe(`tiny: swiotlb addr 0x${start.toString(16).padStart(16, '0')}+2048 overflow (mask ffffffff, bus limit fffff).`);
    expect(k.dma.swiotlb!.stats().used).toBe(0);
  });

  it('with swiotlb=force bounces every streaming mapping and caps mappings at 256 KiB', () => {
    const k = testKernel({ cmdline: 'swiotlb=1024,force' });
    const dev = k.device();
    expect(dev.dma.ops!.name).toBe('swiotlb');
    const buf = k.slab.kzalloc(64);
    const addr = dmaMapSingle(dev, buf, 64, TO_DEVICE);
    expect(addr).not.toBe(buf);
    expect(k.dma.swiotlb!.contains(addr as number)).toBe(true);
    expect(dmaMaxMappingSize(dev)).toBe(256 * 1024);
  });

  it('caps the mapping size at a segment for a device limited below RAM', () => {
    const k = highKernel();
    expect(dmaMaxMappingSize(k.device())).toBe(256 * 1024);
  });
});

describe('map_sg', () => {
  it('maps every entry and fills dmaAddress/dmaLength', () => {
    const k = testKernel();
    const dev = k.device();
    const sg: ScatterEntry[] = [0x10000, 0x20000, 0x30000].map((phys) => ({ phys, length: 512 }));
    expect(dmaMapSg(dev, sg, TO_DEVICE)).toBe(3);
    expect(sg.map((e) => [e.dmaAddress, e.dmaLength])).toEqual([
      [0x10000, 512],
      [0x20000, 512],
      [0x30000, 512],
    ]);
    dmaUnmapSg(dev, sg, TO_DEVICE);
    expect(dmaStats(dev)).toMatchObject({ maps: 3, unmaps: 3, bytesMapped: 1536 });
  });

  it('a failure in the middle returns 0 and leaves nothing mapped, and copies nothing back', () => {
    const k = testKernel({ highMiB: 4, cmdline: 'swiotlb=128' });
    const dev = k.device();
    const pool = k.dma.swiotlb!;
    const orig = GiB4 + 0x10000;
    // 100 KiB + 100 KiB fit one 256 KiB segment; the third entry does not.
    const sg: ScatterEntry[] = [0, 1, 2].map((i) => ({ phys: orig + i * 100 * 1024, length: 100 * 1024 }));
    expect(dmaMapSg(dev, sg, FROM_DEVICE)).toBe(0);
    expect(pool.stats().used).toBe(0);
    expect(sg.every((e) => e.dmaAddress === undefined)).toBe(true);
    expect(pool.stats().bytesBounced).toBe(2 * 100 * 1024); // copied in on map, never back
    expect(dmaStats(dev)).toMatchObject({ maps: 0, mappingErrors: 1 });
    expect(k.dmesg().at(-1)).toMatch(/swiotlb buffer is full \(sz: 102400 bytes\), total 128 \(slots\), used 100 \(slots\)/);
  });
});

describe('coherent allocations', () => {
  it('come zeroed, page-order aligned, below the coherent mask and the bus limit', () => {
    const k = testKernel({ lowMiB: 32 });
    const dev = k.device('d', 26);
    k.mem.fill(0, 32 * MiB, 0xff);
    const a = dmaAllocCoherent(dev, 3 * PAGE_SIZE)!;
    expect(a.cpuAddr % (4 * PAGE_SIZE)).toBe(0);
    expect(a.dmaAddr).toBe(a.cpuAddr);
    expect(k.mem.read(a.cpuAddr, 3 * PAGE_SIZE).every((b) => b === 0)).toBe(true);
    dmaFreeCoherent(dev, a);

    // Use up everything below 16 MiB: a 24-bit coherent mask then finds nothing.
    while (k.pages.alloc(1, 16 * MiB - 1) >= 0);
    expect(dmaSetCoherentMask(dev, 24)).toBe(true);
    expect(dmaAllocCoherent(dev, PAGE_SIZE)).toBeUndefined();
    // A wider mask lets it use the rest of RAM, all of it under the 64 MiB bus limit.
    expect(dmaSetCoherentMask(dev, 64)).toBe(true);
    const b = dmaAllocCoherent(dev, PAGE_SIZE)!;
    expect(b.cpuAddr).toBeGreaterThanOrEqual(16 * MiB);
  });

  it('never come from above the bus limit', () => {
    const k = testKernel({ highMiB: 4 });
    const dev = k.device('d', 32);
    dmaSetMaskAndCoherent(dev, 64);
    while (k.pages.alloc(1, GiB4 - 1) >= 0);
    expect(dmaAllocCoherent(dev, PAGE_SIZE)).toBeUndefined();
    const wide = k.device('wide');
    dmaSetMaskAndCoherent(wide, 64);
    expect(dmaAllocCoherent(wide, PAGE_SIZE)!.cpuAddr).toBeGreaterThanOrEqual(GiB4);
  });
});

describe('dma masks', () => {
  it('set_mask_and_coherent sets the coherent mask only when the streaming mask is accepted', () => {
    const k = testKernel({ lowMiB: 32 });
    const dev = k.device();
    expect(dmaSetMaskAndCoherent(dev, 20)).toBe(false); // below ZONE_DMA and below RAM
    expect(dev.dma.mask).toBe(DMA_BIT_MASK(32));
    expect(dev.dma.coherentMask).toBe(DMA_BIT_MASK(32));
    expect(dmaSetMaskAndCoherent(dev, 40)).toBe(true);
    expect(dev.dma.mask).toBe(DMA_BIT_MASK(40));
    expect(dev.dma.coherentMask).toBe(DMA_BIT_MASK(40));
    expect(dmaSetMask(dev, 24)).toBe(true); // ZONE_DMA
    expect(dev.dma.coherentMask).toBe(DMA_BIT_MASK(40));
  });

  it('accepts a narrow mask that still covers all of a small RAM', () => {
    const k = testKernel({ lowMiB: 1 });
    expect(dmaSetMask(k.device(), 20)).toBe(true);
    expect(dmaSetMask(k.device(), 19)).toBe(false);
  });
});
