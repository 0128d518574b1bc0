import { describe, expect, it } from 'vitest';
import {
  DMA_MAPPING_ERROR,
  DmaDirection,
  dmaAllocCoherent,
  dmaFreeCoherent,
  dmaMapSg,
  dmaMapSingle,
  dmaSetMaskAndCoherent,
  dmaUnmapSg,
  dmaUnmapSingle,
  type ScatterEntry,
} from '../../dma/api.ts';
import type { IommuDmaDomainStats } from '../../abi/report.ts';
import { iommuDmaGetMsiPage } from '../../dma/iommu-dma.ts';
import { IOVA_DEFAULT_FQ_SIZE, IOVA_SINGLE_FQ_SIZE } from '../../dma/iova-fq.ts';
import { IOMMU_PROT, type ResvRegion } from '../../dma/iommu-ops.ts';
import { iommuDeviceRegister } from '../../dma/iommu.ts';
import { Bus, DeferredProbe, type Device } from '../../kernel/device.ts';
import type { PciDevice } from '../../kernel/pci.ts';
import type { PlatformDevice } from '../../kernel/platform-bus.ts';
import { FAKE_VIOT, FakeIommu, type FakeIommuOptions } from './fake-iommu.ts';
import { testKernel, type TestKernelOptions } from './kernel.ts';

const { TO_DEVICE, FROM_DEVICE, BIDIRECTIONAL } = DmaDirection;
const PAGE = 0x1000;
/** The platform device VIOT puts behind the fake IOMMU. */
const MMIO_EP = 0xa00_0000;
const BUF = 0x10_0000;

function setup(opts: { fake?: FakeIommuOptions } & TestKernelOptions = {}) {
  const k = testKernel({ lowMiB: 32, viot: [FAKE_VIOT], ...opts });
  const iommu = new FakeIommu(opts.fake);
  iommuDeviceRegister(k, iommu);
  const configured = <D extends Device>(dev: D, maskBits: number): D => {
    expect(k.dma.configure(dev)).toBeUndefined();
    dmaSetMaskAndCoherent(dev, maskBits);
    return dev;
  };
  return {
    k,
    iommu,
    platform: (maskBits = 64, busLimitBits = 64): PlatformDevice => configured(k.platformDevice(MMIO_EP, busLimitBits), maskBits),
    pci: (maskBits = 64, slot = 3): PciDevice => configured(k.pciDevice(slot), maskBits),
    domain: (): IommuDmaDomainStats => k.dma.stats().iommu.domains.at(-1)!,
  };
}

/** Maps one page at a time until the first failure; returns every IOVA handed out. */
function mapAll(dev: Device): bigint[] {
  const iovas: bigint[] = [];
  for (;;) {
    const a = dmaMapSingle(dev, BUF, PAGE, TO_DEVICE);
    if (a === DMA_MAPPING_ERROR) return iovas;
    iovas.push(BigInt(a));
  }
}

const within = (iovas: bigint[], lo: number, hi: number) => iovas.filter((a) => a >= BigInt(lo) && a <= BigInt(hi));

describe('IOVA allocation bounds', () => {
  it('stays under the DMA mask, the aperture end and the bus limit, whichever is lowest', () => {
    const { platform, iommu } = setup({ fake: { geometry: { apertureEnd: 0xff_ffff_ffff } } });
    const dev = platform(32);
    expect(dmaMapSingle(dev, BUF, PAGE, TO_DEVICE)).toBe(0xffff_f000);
    dmaSetMaskAndCoherent(dev, 64);
    expect(dmaMapSingle(dev, BUF, PAGE, TO_DEVICE)).toBe(0xff_ffff_f000);
    expect(iommu.translate(0xff_ffff_f123)).toBe(BigInt(BUF + 0x123));

    const limited = setup().platform(64, 36);
    expect(dmaMapSingle(limited, BUF, PAGE, TO_DEVICE)).toBe(0xf_ffff_f000);
  });

  it('stays inside the aperture, and never hands out IOVA 0', () => {
    const whole = setup({ fake: { geometry: { apertureStart: 0, apertureEnd: 0xf_ffff } } });
    const all = mapAll(whole.platform());
    expect(all).toHaveLength(0xff);
    expect(all.at(-1)).toBe(0x1000n);

    const { platform } = setup({ fake: { geometry: { apertureStart: 0x1_0000, apertureEnd: 0x1_ffff } } });
    const iovas = mapAll(platform());
    expect(iovas).toHaveLength(16);
    expect(within(iovas, 0x1_0000, 0x1_f000)).toHaveLength(16);
  });
});

describe('the below-4-GiB first attempt of PCI devices', () => {
  // 256 pages below 4 GiB, then the whole 64-bit space.
  const fake = { geometry: { apertureStart: 0xfff0_0000 } };

  it('puts a 64-bit PCI device below 4 GiB first, and a platform device at the top of the aperture', () => {
    const { pci, platform } = setup({ fake });
    expect(dmaMapSingle(pci(), BUF, PAGE, TO_DEVICE)).toBe(0xffff_f000);
    expect(dmaMapSingle(platform(), BUF + 0x10, 0x20, TO_DEVICE)).toBe(0xffff_ffff_ffff_f010n);
  });

  it('falls back to the full limit once the space below 4 GiB is full, says so once, and stops trying', () => {
    const { k, pci, domain } = setup({ fake });
    const dev = pci();
    const low = Array.from({ length: 256 }, () => dmaMapSingle(dev, BUF, PAGE, TO_DEVICE));
    expect(within(low.map(BigInt), 0xfff0_0000, 0xffff_f000)).toHaveLength(256);
    expect(dmaMapSingle(dev, BUF, PAGE, TO_DEVICE)).toBe(0xffff_ffff_ffff_f000n);
    expect(k.dmesg().filter((l) => l.includes('DMA addresses'))).toEqual(['0000:00:03.0: Using 64-bit DMA addresses']);
    dmaUnmapSingle(dev, low[0]!, PAGE, TO_DEVICE);
    for (let i = 0; i < 10; i++) expect(dmaMapSingle(dev, BUF, PAGE, TO_DEVICE)).toBeTypeOf('bigint');
    expect(domain().iova.failures).toBe(1);
  });
});

describe('reserved regions', () => {
  const regions: ResvRegion[] = [
    { start: 0xfee0_0000, end: 0xfeef_ffff, type: 'msi', prot: IOMMU_PROT.WRITE | IOMMU_PROT.MMIO },
    { start: 0xfec1_0000, end: 0xfec1_ffff, type: 'reserved', prot: 0 },
  ];

  it('are never handed out, hardware MSI windows included', () => {
    const { platform } = setup({ fake: { resv: regions, geometry: { apertureStart: 0xfec0_0000, apertureEnd: 0xfeff_ffff } } });
    const iovas = mapAll(platform(32));
    expect(iovas).toHaveLength(1024 - 256 - 16);
    for (const r of regions) expect(within(iovas, Number(r.start), Number(r.end))).toEqual([]);
  });

  it('include the host bridge windows for PCI devices, where a DMA would reach a peer', () => {
    const { pci } = setup({ fake: { geometry: { apertureStart: 0xdfff_0000, apertureEnd: 0xf000_ffff } } });
    const iovas = mapAll(pci(32));
    expect(iovas).toHaveLength(32);
    expect(within(iovas, 0xe000_0000, 0xefff_ffff)).toEqual([]);
  });

  it('leave the software MSI window usable; its doorbell is mapped WRITE|MMIO on demand, once', () => {
    const swMsi: ResvRegion = { start: 0x800_0000, end: 0x80f_ffff, type: 'sw-msi', prot: IOMMU_PROT.WRITE | IOMMU_PROT.MMIO };
    const { platform, iommu } = setup({ fake: { resv: [swMsi], geometry: { apertureStart: 0x800_0000, apertureEnd: 0x80f_ffff } } });
    const dev = platform();
    const msi = iommuDmaGetMsiPage(dev, 0xfee0_1004);
    expect(msi).toBe(0x80f_f004);
    expect(iommu.calls.filter((c) => c.op === 'map')).toEqual([{ op: 'map', iova: 0x80f_f000, paddr: 0xfee0_1000, size: PAGE, prot: IOMMU_PROT.WRITE | IOMMU_PROT.MMIO }]);
    expect(iommuDmaGetMsiPage(dev, 0xfee0_1008)).toBe(0x80f_f008);
    expect(iommu.count('map')).toBe(1);
    expect(iommu.translate(msi)).toBe(0xfee0_1004n);
    expect(mapAll(dev)).toHaveLength(255);
  });

  it('let a doorbell in a hardware MSI window, or of a device outside any IOMMU, through untranslated', () => {
    const { k, platform, iommu } = setup({ fake: { resv: regions } });
    expect(iommuDmaGetMsiPage(platform(), 0xfee0_1004)).toBe(0xfee0_1004);
    expect(iommu.count('map')).toBe(0);
    expect(iommuDmaGetMsiPage(k.device(), 0xfee0_1004)).toBe(0xfee0_1004);
  });
});

describe('strict invalidation (iommu.strict=1)', () => {
  it('syncs every unmap before the IOVA can be handed out again', () => {
    const { platform, iommu, domain } = setup({ cmdline: 'iommu.strict=1' });
    const dev = platform(32);
    const a = dmaMapSingle(dev, BUF, PAGE, FROM_DEVICE);
    dmaUnmapSingle(dev, a, PAGE, FROM_DEVICE);
    expect(iommu.translate(a)).toBeUndefined();
    expect(dmaMapSingle(dev, BUF + PAGE, PAGE, BIDIRECTIONAL)).toBe(a);
    expect(iommu.calls.map((c) => c.op)).toEqual(['probe', 'attach', 'map', 'syncMap', 'unmap', 'sync', 'map', 'syncMap']);
    expect(iommu.calls[2]).toMatchObject({ prot: IOMMU_PROT.WRITE });
    expect(iommu.calls[6]).toMatchObject({ prot: IOMMU_PROT.READ | IOMMU_PROT.WRITE });
    expect(iommu.violations).toEqual([]);
    expect(domain()).toMatchObject({
      invalidation: 'strict',
      flushQueue: null,
      iotlbSyncs: 1,
      flushes: 0,
      exposure: { rangesExposed: 0, maxWindowNs: 0, meanWindowNs: 0, maxStale: 0, staleNow: 0 },
    });
  });

  it('is what a driver without deferred flush gets, whatever the command line', () => {
    const { platform, domain } = setup({ fake: { caps: { deferredFlush: false, shadowOnFlush: false } } });
    platform();
    expect(domain().invalidation).toBe('strict');
  });
});

describe('lazy invalidation (iommu.strict=0, the default)', () => {
  /** map + 1 µs + unmap, `n` times; returns the IOVAs. */
  function cycle(k: ReturnType<typeof setup>['k'], dev: Device, n: number): number[] {
    const iovas: number[] = [];
    for (let i = 0; i < n; i++) {
      const a = dmaMapSingle(dev, BUF, PAGE, TO_DEVICE) as number;
      k.advance(1000);
      dmaUnmapSingle(dev, a, PAGE, TO_DEVICE);
      iovas.push(a);
    }
    return iovas;
  }

  it('does not reuse an IOVA before the flush; a full per-CPU queue flushes, and its IOVAs come back', () => {
    const { k, platform, iommu, domain } = setup();
    const dev = platform(32);
    const first = cycle(k, dev, IOVA_DEFAULT_FQ_SIZE - 1);
    expect(new Set(first).size).toBe(IOVA_DEFAULT_FQ_SIZE - 1);
    expect(iommu.count('flushAll')).toBe(0);
    expect(iommu.count('sync')).toBe(0);
    expect(iommu.translate(first[0]!)).toBe(BigInt(BUF)); // stale, still reachable

    // The 256th unmap finds the ring full (one slot stays empty): flush, then the 255 go back.
    cycle(k, dev, 1);
    expect(iommu.count('flushAll')).toBe(1);
    expect(iommu.translate(first[0]!)).toBeUndefined();
    expect(first).toContain(dmaMapSingle(dev, BUF, PAGE, TO_DEVICE));
    expect(iommu.violations).toEqual([]);

    // Unmapped at 1..255 µs, all invalidated at 256 µs.
    expect(domain()).toMatchObject({
      invalidation: 'lazy',
      flushQueue: { queues: 1, size: 256, timeoutNs: 10e6 },
      flushes: 1,
      iotlbSyncs: 0,
      exposure: { rangesExposed: 255, maxWindowNs: 255_000, meanWindowNs: 128_000, maxStale: 255, staleNow: 1 },
    });
  });

  it('flushes 10 ms of virtual time after the first unmap queued, and only then reuses the IOVA', () => {
    const { k, platform, iommu, domain } = setup();
    const dev = platform(32);
    const a = dmaMapSingle(dev, BUF, PAGE, TO_DEVICE);
    dmaUnmapSingle(dev, a, PAGE, TO_DEVICE);
    k.advance(10e6 - 1);
    expect(iommu.count('flushAll')).toBe(0);
    expect(dmaMapSingle(dev, BUF, PAGE, TO_DEVICE)).not.toBe(a);
    k.advance(1);
    expect(iommu.count('flushAll')).toBe(1);
    expect(dmaMapSingle(dev, BUF, PAGE, TO_DEVICE)).toBe(a);
    k.advance(50e6); // nothing queued, nothing armed
    expect(iommu.count('flushAll')).toBe(1);
    expect(domain().exposure).toEqual({ rangesExposed: 1, maxWindowNs: 10e6, meanWindowNs: 10e6, maxStale: 1, staleNow: 0 });
  });

  it('keeps one queue per CPU: each fills on its own, and the timer flushes them all', () => {
    const { k, platform, iommu, domain } = setup({ cpus: 2 });
    const dev = platform(32);
    cycle(k, dev, 200);
    k.cpus.runOn(1, () => cycle(k, dev, 200));
    expect(iommu.count('flushAll')).toBe(0);
    k.advance(10e6);
    expect(iommu.count('flushAll')).toBe(1);
    expect(domain()).toMatchObject({ flushQueue: { queues: 2 }, exposure: { rangesExposed: 400, maxStale: 400, staleNow: 0 } });
    expect(iommu.violations).toEqual([]);
  });

  it('uses one 32768-entry queue and a 1 s timer when the IOMMU shadows every flush', () => {
    const { k, platform, iommu, domain } = setup({ fake: { caps: { deferredFlush: true, shadowOnFlush: true } } });
    const dev = platform(32);
    for (let i = 0; i < IOVA_SINGLE_FQ_SIZE - 1; i++) dmaUnmapSingle(dev, dmaMapSingle(dev, BUF, PAGE, TO_DEVICE), PAGE, TO_DEVICE);
    k.advance(1e9 - 1);
    expect(iommu.count('flushAll')).toBe(0);
    dmaUnmapSingle(dev, dmaMapSingle(dev, BUF, PAGE, TO_DEVICE), PAGE, TO_DEVICE);
    expect(iommu.count('flushAll')).toBe(1);
    k.advance(1);
    expect(iommu.count('flushAll')).toBe(2);
    expect(iommu.violations).toEqual([]);
    expect(domain()).toMatchObject({
      flushQueue: { queues: 1, size: IOVA_SINGLE_FQ_SIZE, timeoutNs: 1e9 },
      exposure: { rangesExposed: IOVA_SINGLE_FQ_SIZE, maxStale: IOVA_SINGLE_FQ_SIZE - 1, maxWindowNs: 1e9 - 1 },
    });
  });
});

describe('mappings', () => {
  it('map a scatterlist into one IOVA range, physically contiguous entries in one map call', () => {
    const { platform, iommu } = setup();
    const dev = platform(32);
    const sg: ScatterEntry[] = [
      { phys: 0x20_0100, length: 0x100 },
      { phys: 0x20_1000, length: 0x2000 },
      { phys: 0x30_0000, length: 0x800 },
    ];
    expect(dmaMapSg(dev, sg, TO_DEVICE)).toBe(3);
    expect(sg.map((e) => [e.dmaAddress, e.dmaLength])).toEqual([
      [0xffff_c100, 0x100],
      [0xffff_d000, 0x2000],
      [0xffff_f000, 0x800],
    ]);
    expect(iommu.calls.slice(2)).toEqual([
      { op: 'map', iova: 0xffff_c000, paddr: 0x20_0000, size: 0x3000, prot: IOMMU_PROT.READ },
      { op: 'map', iova: 0xffff_f000, paddr: 0x30_0000, size: 0x1000, prot: IOMMU_PROT.READ },
      { op: 'syncMap' },
    ]);
    dmaUnmapSg(dev, sg, TO_DEVICE);
    expect(iommu.calls.at(-1)).toEqual({ op: 'unmap', iova: 0xffff_c000, size: 0x4000 });
  });

  it('undo a scatterlist whose mapping fails half way, and free its IOVA range', () => {
    const { platform, iommu } = setup({ fake: { failMap: (iova) => iova === 0xffff_f000 } });
    const dev = platform(32);
    const sg: ScatterEntry[] = [
      { phys: 0x20_0000, length: 0x1000 },
      { phys: 0x30_0000, length: 0x1000 },
    ];
    expect(dmaMapSg(dev, sg, TO_DEVICE)).toBe(0);
    expect(sg.every((e) => e.dmaAddress === undefined)).toBe(true);
    expect(iommu.calls.slice(-2)).toEqual([{ op: 'unmap', iova: 0xffff_e000, size: 0x1000 }, { op: 'sync' }]);
    expect(dmaMapSingle(dev, BUF, 2 * PAGE, TO_DEVICE)).toBe(0xffff_e000);
  });

  it('keep an IOVA range out of use when the IOMMU did not unmap it', () => {
    const { k, platform, iommu, domain } = setup({ cmdline: 'iommu.strict=1' });
    const dev = platform(32);
    dmaUnmapSingle(dev, 0x1234_5000, PAGE, TO_DEVICE);
    expect(k.dmesg()).toContain('iommu-dma: domain 1: unmap of 0x12345000+4096 removed 0 bytes; IOVA range kept out of use');
    expect(iommu.count('sync')).toBe(1);
    expect(domain()).toMatchObject({ unmaps: 0, iova: { ranges: 0 } });
  });

  it('allocate coherent buffers as zeroed pages mapped READ|WRITE under the coherent mask', () => {
    const { k, platform, iommu } = setup();
    const dev = platform(64);
    dmaSetMaskAndCoherent(dev, 32);
    const buf = dmaAllocCoherent(dev, 5000)!;
    expect(buf.dmaAddr).toBe(0xffff_e000);
    expect(buf.cpuAddr % 0x2000).toBe(0);
    expect(k.mem.read(buf.cpuAddr, 0x2000).every((b) => b === 0)).toBe(true);
    expect(iommu.calls.at(-2)).toEqual({ op: 'map', iova: 0xffff_e000, paddr: buf.cpuAddr, size: 0x2000, prot: IOMMU_PROT.READ | IOMMU_PROT.WRITE });
    const free = k.pages.available;
    dmaFreeCoherent(dev, buf);
    expect(iommu.calls.at(-1)).toEqual({ op: 'unmap', iova: 0xffff_e000, size: 0x2000 });
    expect(k.pages.available).toBe(free + 2);
  });

  it('handle IOVAs above 2^53 exactly, up to 2^64 - 1, and keep those below 2^53 numbers', () => {
    const { platform, iommu, domain } = setup();
    const dev = platform(64);
    expect(dmaMapSingle(dev, BUF + 0x234, 16, TO_DEVICE)).toBe(0xffff_ffff_ffff_f234n);
    // Two pages, aligned to two below the first.
    expect(dmaMapSingle(dev, BUF + 0x800, PAGE, TO_DEVICE)).toBe(0xffff_ffff_ffff_c800n);
    expect(iommu.calls.filter((c) => c.op === 'map').map((c) => c.op === 'map' && c.iova)).toEqual([0xffff_ffff_ffff_f000n, 0xffff_ffff_ffff_c000n]);
    expect(iommu.translate(0xffff_ffff_ffff_ffffn)).toBe(BigInt(BUF + 0xfff));
    expect(iommu.translate(0xffff_ffff_ffff_d7ffn)).toBe(BigInt(BUF + 0x17ff));
    expect(domain()).toMatchObject({ lowestIova: '0xffffffffffffc000', highestIova: '0xffffffffffffffff' });
    dmaUnmapSingle(dev, 0xffff_ffff_ffff_c800n, PAGE, TO_DEVICE);
    expect(iommu.calls.at(-1)).toEqual({ op: 'unmap', iova: 0xffff_ffff_ffff_c000n, size: 0x2000 });

    const edge = setup({ fake: { geometry: { apertureEnd: 2n ** 53n + 0xfffn } } }).platform(64);
    expect(dmaMapSingle(edge, BUF, PAGE, TO_DEVICE)).toBe(2n ** 53n);
    expect(dmaMapSingle(edge, BUF, PAGE, TO_DEVICE)).toBe(2 ** 53 - PAGE);
  });
});

describe('default domains', () => {
  it('are identity with iommu.passthrough=1: attached, and DMA goes through dma-direct', () => {
    const { k, platform, iommu } = setup({ cmdline: 'iommu.passthrough=1', fake: { identity: true } });
    const dev = platform();
    expect(dev.dma.ops!.name).toBe('direct');
    expect(iommu.calls).toEqual([
      { op: 'probe', dev: dev.name, endpoints: [0x1000] },
      { op: 'attach', dev: dev.name, domain: '1', type: 'identity' },
    ]);
    expect(dmaMapSingle(dev, BUF, PAGE, TO_DEVICE)).toBe(BUF);
    expect(k.dma.stats().iommu).toMatchObject({ defaultDomainType: 'identity', devices: [{ domainType: 'identity', endpoints: [0x1000], group: 0 }], domains: [] });
  });

  it('fall back to translated when the driver has no identity domain', () => {
    const { k, platform } = setup({ cmdline: 'iommu.passthrough=1' });
    expect(platform().dma.ops!.name).toBe('iommu-dma');
    expect(k.dmesg()).toContain('iommu: a000000.virtio_mmio: fake-iommu has no identity domain, using a translated one');
  });

  it('report their device, endpoints, reserved regions and figures', () => {
    const resv: ResvRegion[] = [{ start: 0xfee0_0000, end: 0xfeef_ffff, type: 'msi', prot: IOMMU_PROT.WRITE }];
    const { k, pci, domain } = setup({ fake: { resv }, cmdline: 'iova=nonesuch' });
    const dev = pci(64, 4);
    const a = dmaMapSingle(dev, BUF, 3 * PAGE, TO_DEVICE);
    dmaUnmapSingle(dev, a, 3 * PAGE, TO_DEVICE);
    k.advance(10e6);
    dmaMapSingle(dev, BUF, 4 * PAGE, TO_DEVICE);
    expect(k.dma.stats().iommu.devices).toEqual([
      { device: '0000:00:04.0', iommu: 'fake-iommu', endpoints: [0x120], group: 0, domain: '1', domainType: 'dma', resvRegions: [{ start: '0xfee00000', end: '0xfeefffff', type: 'msi' }] },
    ]);
    expect(domain()).toMatchObject({
      granule: PAGE,
      maps: 2,
      unmaps: 1,
      flushes: 1,
      iova: { allocs: 2, rcacheHits: 1, rcacheMisses: 1, failures: 0 },
      lowestIova: '0xffffc000',
      highestIova: '0xffffffff',
    });
    expect(k.dmesg()).toContain('iommu-dma: unknown IOVA allocator iova=nonesuch, using linux-rcache');
  });
});

describe('probe deferral', () => {
  it("defers a device until its IOMMU registers; the IOMMU's own function is never deferred", () => {
    const k = testKernel({ viot: [FAKE_VIOT] });
    const dev = k.platformDevice(MMIO_EP);
    expect(k.dma.configure(dev)).toBe('defer');
    expect(k.dma.configure(k.pciDevice(5))).toBe('defer');
    const self = k.pciDevice(1);
    expect(k.dma.configure(self)).toBeUndefined();
    expect(self.dma.ops!.name).toBe('direct');
    iommuDeviceRegister(k, new FakeIommu());
    expect(k.dma.configure(dev)).toBeUndefined();
    expect(dev.dma.ops!.name).toBe('iommu-dma');
  });

  it('binds the waiting driver once the IOMMU driver has bound and registered', () => {
    const k = testKernel({ viot: [FAKE_VIOT] });
    const deferred = new DeferredProbe();
    const platformBus = new Bus<PlatformDevice>('platform', () => {}, (d) => k.dma.configure(d), deferred);
    const pciBus = new Bus<PciDevice>('pci', () => {}, (d) => k.dma.configure(d), deferred);
    platformBus.registerDriver({ name: 'virtio-mmio', match: () => true, probe: () => true, remove: () => {} });
    pciBus.registerDriver({ name: 'fake-viommu', match: (d) => d.slot === 1, probe: () => (iommuDeviceRegister(k, new FakeIommu()), true), remove: () => {} });
    const ep = k.platformDevice(MMIO_EP, 64, platformBus);
    platformBus.addDevice(ep);
    expect(ep.driver).toBeUndefined();
    expect(deferred.pending).toEqual([ep]);
    pciBus.addDevice(k.pciDevice(1, 0, pciBus));
    expect(ep.driver?.name).toBe('virtio-mmio');
    expect(ep.dma.ops!.name).toBe('iommu-dma');
    expect(deferred.pending).toEqual([]);
  });

  it('leaves a device the IOMMU refuses on dma-direct, as Linux', () => {
    const { k } = setup({ fake: { probeOk: false } });
    const dev = k.platformDevice(MMIO_EP);
    expect(k.dma.configure(dev)).toBeUndefined();
    expect(dev.dma.ops!.name).toBe('direct');
    expect(k.dmesg()).toContain('iommu: a000000.virtio_mmio: fake-iommu cannot translate for it; its DMA stays untranslated');
  });
});
