import { describe, expect, it } from 'vitest';
import { DmaDirection, dmaMapSingle } from '../../dma/api.ts';
import { parseSwiotlbOption } from '../../dma/index.ts';
import { GiB4, MiB, testKernel } from './kernel.ts';

describe('swiotlb= on the command line', () => {
  it('parses as Linux: <nslabs>[,<nareas>][,force|noforce]', () => {
    expect(parseSwiotlbOption('')).toEqual({ nslabs: undefined, force: false, noforce: false, unparsed: '' });
    expect(parseSwiotlbOption('65536,4,force')).toEqual({ nslabs: 65536, force: true, noforce: false, unparsed: '' });
    expect(parseSwiotlbOption('force')).toMatchObject({ nslabs: undefined, force: true });
    expect(parseSwiotlbOption('2048,noforce')).toMatchObject({ nslabs: 2048, noforce: true });
    expect(parseSwiotlbOption('0x800')).toMatchObject({ nslabs: 2048, force: false });
    expect(parseSwiotlbOption('1024,forced')).toMatchObject({ nslabs: 1024, force: false, unparsed: 'forced' });
  });

  it('rounds the pool up to whole 128-slot segments', () => {
    const k = testKernel({ cmdline: 'swiotlb=200' });
    expect(k.dma.swiotlb!.nslabs).toBe(256);
    const { start } = k.dma.swiotlb!;
    const hex = (v: number) => '0x' + v.toString(16).padStart(16, '0');
    expect(k.dmesg()).toContain(`software IO TLB: mapped [mem ${hex(start)}-${hex(start + 256 * 2048 - 1)}] (0MB)`);
  });

  it('warns about words it does not understand', () => {
    expect(testKernel({ cmdline: 'swiotlb=1024,forced' }).dmesg()).toContain("swiotlb: ignoring 'forced' in swiotlb=1024,forced");
  });
});

describe('when there is a pool', () => {
  it('none on a small machine with nothing asked', () => {
    expect(testKernel().dma.swiotlb).toBeUndefined();
  });

  it('one when RAM extends above 4 GiB, shrunk by halves to what low memory holds', () => {
    const k = testKernel({ lowMiB: 16, highMiB: 4 });
    const pool = k.dma.swiotlb!;
    expect(pool.nslabs).toBe(4096);
    expect(pool.start + pool.nslabs * 2048).toBeLessThanOrEqual(GiB4);
    expect(k.dmesg()).toContain('software IO TLB: SWIOTLB bounce buffer size adjusted 32768 -> 4096 slabs');
  });

  it('the default 64 MiB with swiotlb=force, and every device bounces', () => {
    const k = testKernel({ lowMiB: 80, cmdline: 'swiotlb=force' });
    expect(k.dma.swiotlb!.nslabs).toBe(32768);
    expect(k.dmesg().at(-1)).toMatch(/\(64MB\)$/);
    expect(k.device().dma.ops!.name).toBe('swiotlb');
  });

  it('none with swiotlb=noforce, even with RAM above 4 GiB', () => {
    const k = testKernel({ highMiB: 4, cmdline: 'swiotlb=noforce' });
    expect(k.dma.swiotlb).toBeUndefined();
    expect(dmaMapSingle(k.device(), GiB4, 16, DmaDirection.TO_DEVICE)).toBe(0xffff_ffff_ffff_ffffn);
  });

  it('none, with a warning, when low memory cannot hold even 1 MiB', () => {
    const k = testKernel({ lowMiB: 1, cmdline: 'swiotlb=force' });
    expect(k.dma.swiotlb).toBeUndefined();
    expect(k.dmesg()).toContain('software IO TLB: cannot allocate the bounce buffer pool');
    expect(k.device().dma.ops!.name).toBe('direct');
  });
});

describe('backend choice and stats', () => {
  it('keeps a device no IOMMU translates for on dma-direct, with no IOMMU figures', () => {
    const k = testKernel();
    expect(k.device().dma.ops!.name).toBe('direct');
    expect(k.dma.stats().iommu).toEqual({ defaultDomainType: 'dma', strict: false, iommus: [], devices: [], domains: [] });
  });

  it('reports per-device counters and the pool', () => {
    const k = testKernel({ highMiB: 4 });
    const dev = k.device('0000:00:04.0');
    dmaMapSingle(dev, GiB4 + MiB, 4096, DmaDirection.FROM_DEVICE);
    dmaMapSingle(dev, MiB, 4096, DmaDirection.FROM_DEVICE);
    expect(k.dma.stats()).toEqual({
      swiotlb: { start: k.dma.swiotlb!.start, nslabs: 4096, used: 2, hiwater: 2, bounces: 1, bytesBounced: 4096 },
      devices: [{ device: '0000:00:04.0', backend: 'direct', maps: 2, unmaps: 0, bytesMapped: 8192, mappingErrors: 0, bounces: 1 }],
      iommu: { defaultDomainType: 'dma', strict: false, iommus: [], devices: [], domains: [] },
    });
  });
});
