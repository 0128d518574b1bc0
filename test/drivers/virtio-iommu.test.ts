// The virtio-iommu driver against an in-test device: probe checks, config,
// PROBE parsing, domains, replay, batching, UNMAP, faults and 64-bit IOVAs.
// The IOMMU core is mocked: the tests call the driver's IommuDriver methods as the core would.
import fc from 'fast-check';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { toAddr } from '../../abi/addr.ts';
import { STATUS } from '../../abi/virtio.ts';
import { iommuDeviceRegister } from '../../dma/iommu.ts';
import { IOMMU_PROT, type IommuDriver } from '../../dma/iommu-ops.ts';
import { MSI_IOVA_BASE, parseProbeProperties, viommuReports } from '../../drivers/virtio-iommu.ts';
import { Bus, Device } from '../../kernel/device.ts';
import { RAM_BASE, RAM_SIZE } from './support/machine.ts';
import { MMIO_BASE } from './support/stack.ts';
import { S, T, VERSION_1, VF, bootViommu, concat, faultRecord, property, resvMem, type ViommuOptions } from './support/viommu-device.ts';

vi.mock('../../dma/iommu.ts', () => ({ iommuDeviceRegister: vi.fn() }));

const ALL = VERSION_1 | VF.INPUT_RANGE | VF.DOMAIN_RANGE | VF.MAP_UNMAP | VF.PROBE | VF.MMIO | VF.BYPASS_CONFIG;
const RW = IOMMU_PROT.READ | IOMMU_PROT.WRITE;
const MSI_REGION = resvMem(1, 0xfee0_0000n, 0xfeef_ffffn);

function setup(opts: Partial<ViommuOptions> = {}) {
  const b = bootViommu({ features: ALL, endpoints: [8, 16, 24], inputRange: [0n, 2n ** 48n - 1n], domainRange: [1, 1000], ...opts });
  const v = b.viommu();
  const bus = new Bus('test', () => {});
  /** An endpoint device as the IOMMU core hands it over: probed first. */
  const ep = (id: number) => {
    const dev = new Device(`ep${id}`, bus);
    expect(v.probeDevice(dev, [id])).toBe(true);
    return dev;
  };
  const reqs = (type: number) => b.dev.requests.filter((r) => r.type === type);
  const page = (n: number) => RAM_BASE + n * 0x1000;
  return { ...b, v, ep, reqs, page };
}

beforeEach(() => {
  vi.mocked(iommuDeviceRegister).mockReset();
});

describe('virtio-iommu probe', () => {
  it('reads the config, accepts what Linux accepts, fills the event queue and registers with the IOMMU core', () => {
    const b = bootViommu({ features: ALL | VF.BYPASS, pageSizeMask: 0x4020_1000n, inputRange: [0x1000n, 2n ** 39n - 1n], domainRange: [3, 300], probeSize: 256, bypass: 1 });
    const v = b.viommu();
    expect(v.config).toEqual({ pageSizeMask: 0x4020_1000n, inputStart: 0x1000, inputEnd: 2 ** 39 - 1, domainStart: 3, domainEnd: 300, probeSize: 256, bypass: 1 });
    expect(b.dev.model.driverFeatures).toBe(ALL); // never the legacy BYPASS
    expect(b.m.dmesg()).toEqual(expect.arrayContaining(['virtio0: input address: 39 bits', 'virtio0: page mask: 0x40201000']));
    expect(b.dev.eventBuffersHeld()).toBe(64);
    expect(iommuDeviceRegister).toHaveBeenCalledExactlyOnceWith(b.m.k, v);
    expect(v.fw.mmioBase).toBe(MMIO_BASE);
    expect(v.caps).toEqual({ deferredFlush: true, shadowOnFlush: true });
  });

  it('takes the spec defaults for features not offered', () => {
    const v = bootViommu({ features: VERSION_1 | VF.MAP_UNMAP, inputRange: [0x1000n, 0xffffn], domainRange: [5, 6], probeSize: 64 }).viommu();
    expect(v.config).toEqual({ pageSizeMask: 0xffff_ffff_ffff_f000n, inputStart: 0, inputEnd: 0xffff_ffff_ffff_ffffn, domainStart: 0, domainEnd: 0xffff_ffff, probeSize: 0, bypass: undefined });
    const d = v.domainAlloc('dma')!;
    expect(d.geometry).toEqual({ apertureStart: 0, apertureEnd: 0xffff_ffff_ffff_ffffn, pgsizeBitmap: 0xffff_ffff_ffff_f000n });
  });

  it('is live before it registers: the core may probe endpoints from inside iommuDeviceRegister', () => {
    let probed: boolean | undefined;
    vi.mocked(iommuDeviceRegister).mockImplementation((_k, drv: IommuDriver) => void (probed = drv.probeDevice(new Device('ep8', new Bus('t', () => {})), [8])));
    const b = bootViommu({ features: ALL, endpoints: [8] });
    expect(probed).toBe(true);
    expect(b.dev.requests).toEqual([{ type: T.PROBE, endpoint: 8, status: S.OK }]);
    expect(b.dev.model.status & STATUS.DRIVER_OK).toBe(STATUS.DRIVER_OK);
  });

  it('re-reads the config until the generation is stable', () => {
    let changed = false;
    const b = bootViommu({ features: ALL, inputRange: [0n, 0xffff_ffffn] }, (dev) => {
      dev.model.onConfigRead = (off) => {
        if (off === 16 && !changed) {
          changed = true;
          dev.model.setConfig(16, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]); // end becomes 2^48 - 1 mid-read
        }
      };
    });
    expect(b.viommu().config.inputEnd).toBe(2 ** 48 - 1);
  });

  it.each([
    ['no MAP_UNMAP', { features: VERSION_1 | VF.PROBE | VF.INPUT_RANGE }, 'virtio0: device does not offer VIRTIO_IOMMU_F_MAP_UNMAP'],
    ['a granule above the page size', { features: ALL, pageSizeMask: 0xffff_ffff_ffff_0000n }, 'virtio0: granule 0x10000 larger than system page size 0x1000'],
    ['an empty page_size_mask', { features: ALL, pageSizeMask: 0n }, 'virtio0: page_size_mask is empty'],
    ['no VIOT entry', { features: ALL, noViot: true }, 'virtio0: no VIOT entry describes a000000.virtio_mmio: not registering an IOMMU'],
  ])('refuses a device with %s', (_what, opts: ViommuOptions, error) => {
    const b = bootViommu(opts);
    expect(b.stack.iommus()).toEqual([]);
    expect(b.stack.bus.failures.map((f) => f.error)).toEqual([error]);
    expect(b.dev.model.status & STATUS.FAILED).toBe(STATUS.FAILED);
    expect(iommuDeviceRegister).not.toHaveBeenCalled();
  });
});

describe('virtio-iommu PROBE and reserved regions', () => {
  const withType = (p: Uint8Array, type: number) => (new DataView(p.buffer).setUint16(0, type, true), p);

  it('parses RESV_MEM, skips unknown and malformed properties, and stops at NONE', () => {
    const props = concat(
      resvMem(0, 0x1000_0000n, 0x1000_ffffn),
      property(0x7, [1, 2, 3, 4]), // unknown type
      resvMem(9, 0x2000_0000n, 0x2000_0fffn), // unknown subtype: RESERVED
      withType(resvMem(0, 0x3000_0000n, 0x3000_0fffn), 0x1001), // reserved type bits
      property(1, new Uint8Array(8)), // RESV_MEM too short
      resvMem(0, 0x5000n, 0x4000n), // ends before it starts
      MSI_REGION,
      property(0, []), // NONE
      resvMem(0, 0x6000_0000n, 0x6000_0fffn), // after the end of the list
    );
    const t = setup({ probeProperties: () => props });
    const dev = t.ep(8);
    expect(t.reqs(T.PROBE)).toEqual([{ type: T.PROBE, endpoint: 8, status: S.OK }]);
    expect(t.v.resvRegions(dev)).toEqual([
      { start: 0x1000_0000, end: 0x1000_ffff, type: 'reserved', prot: 0 },
      { start: 0x2000_0000, end: 0x2000_0fff, type: 'reserved', prot: 0 },
      { start: 0xfee0_0000, end: 0xfeef_ffff, type: 'msi', prot: IOMMU_PROT.WRITE | IOMMU_PROT.MMIO },
    ]);
    const warnings = t.m.dmesg().filter((l) => l.startsWith('virtio0: endpoint 8:'));
    expect(warnings).toEqual([
      'virtio0: endpoint 8: unknown property 0x7, skipped',
      'virtio0: endpoint 8: unknown RESV_MEM subtype 9, taken as RESERVED',
      'virtio0: endpoint 8: property 0x1001 has reserved type bits set, ignored',
      'virtio0: endpoint 8: RESV_MEM property of 8 bytes is too short, ignored',
      'virtio0: endpoint 8: RESV_MEM [0x5000, 0x4000] ends before it starts, ignored',
    ]);
  });

  it('stops at a property that runs past probe_size, keeping what came before', () => {
    const t = setup({ probeSize: 40, probeProperties: () => concat(MSI_REGION, property(1, new Uint8Array(20))) });
    expect(t.v.resvRegions(t.ep(8)).map((r) => r.type)).toEqual(['msi']);
    expect(t.m.dmesg()).toContain('virtio0: endpoint 8: property 0x1 at 24 runs past probe_size 40');
  });

  it('adds the software MSI window exactly when no MSI region was probed', () => {
    const t = setup({ probeProperties: (ep) => (ep === 8 ? MSI_REGION : resvMem(0, 0x1000n, 0x1fffn)) });
    const swMsi = { start: MSI_IOVA_BASE, end: 0x80f_ffff, type: 'sw-msi', prot: IOMMU_PROT.WRITE | IOMMU_PROT.MMIO };
    expect(t.v.resvRegions(t.ep(8)).filter((r) => r.type === 'sw-msi')).toEqual([]);
    expect(t.v.resvRegions(t.ep(16))).toEqual([{ start: 0x1000, end: 0x1fff, type: 'reserved', prot: 0 }, swMsi]);
    expect(t.m.k.trace.events.filter((e) => e.name === 'viommu_probe_endpoint').map((e) => e.args!.sw_msi)).toEqual(['no', 'no MSI region probed: software MSI window at 0x8000000 (Linux MSI_IOVA_BASE)']);
  });

  it('sends no PROBE when PROBE is not negotiated', () => {
    const t = setup({ features: ALL & ~VF.PROBE });
    expect(t.v.resvRegions(t.ep(8)).map((r) => r.type)).toEqual(['sw-msi']);
    expect(t.dev.requests).toEqual([]);
  });

  it('refuses an endpoint whose PROBE fails', () => {
    const t = setup();
    expect(t.v.probeDevice(new Device('ep99', new Bus('t', () => {})), [99])).toBe(false);
    expect(t.m.dmesg()).toContain('virtio0: ep99: PROBE of endpoint 99 failed: ENOENT');
  });

  it('never throws on arbitrary property bytes, and every region it returns is sane and sorted', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 160 }), fc.integer({ min: 0, max: 160 }), (bytes, size) => {
        const buf = new Uint8Array(Math.max(size, bytes.length));
        buf.set(bytes);
        const regions = parseProbeProperties(new DataView(buf.buffer), 0, size, () => {});
        for (const [i, r] of regions.entries()) {
          expect(r.start <= r.end).toBe(true);
          if (i > 0) expect(regions[i - 1]!.start <= r.start).toBe(true);
        }
      }),
    );
  });
});

describe('virtio-iommu domains', () => {
  it('allocates domain IDs inside domain_range at first attach, lowest free first', () => {
    const t = setup({ features: ALL & ~VF.BYPASS_CONFIG, domainRange: [10, 11] });
    const [a, b, c] = [t.ep(8), t.ep(16), t.ep(24)];
    const [d1, d2, d3] = [t.v.domainAlloc('dma')!, t.v.domainAlloc('dma')!, t.v.domainAlloc('dma')!];
    expect(d1.name).toBe('dma (no ID yet)');
    expect(t.v.attachDev(d1, a)).toBeUndefined();
    expect(t.v.attachDev(d2, b)).toBeUndefined();
    expect(t.v.attachDev(d3, c)).toBe('ENOMEM');
    expect(t.m.dmesg()).toContain('virtio0: no free domain ID in [10, 11]');
    t.v.releaseDevice(a);
    t.v.domainFree(d1);
    expect(t.v.attachDev(d3, c)).toBeUndefined();
    expect(t.reqs(T.ATTACH).map((r) => [r.domain, r.endpoint])).toEqual([[10, 8], [11, 16], [10, 24]]);
    expect(t.reqs(T.DETACH)).toEqual([{ type: T.DETACH, domain: 10, endpoint: 8, status: S.OK }]);
  });

  it('with BYPASS_CONFIG, keeps the first ID for the one identity domain, attached with ATTACH_F_BYPASS', () => {
    const t = setup({ domainRange: [10, 12] });
    const [a, b] = [t.ep(8), t.ep(16)];
    const id = t.v.domainAlloc('identity')!;
    expect(t.v.domainAlloc('identity')).toBe(id);
    expect(t.v.attachDev(id, a)).toBeUndefined();
    expect(t.v.attachDev(t.v.domainAlloc('dma')!, b)).toBeUndefined();
    expect(t.reqs(T.ATTACH).map((r) => [r.domain, r.endpoint, r.flags])).toEqual([[10, 8, 1], [11, 16, 0]]);
    expect(t.reqs(T.MAP)).toEqual([]);
    expect(t.v.iovaToPhys(id, 0x1234_5678)).toBe(0x1234_5678);
    expect(t.v.map(id, 0x1000, t.page(1), 0x1000, RW)).toBe('EINVAL');
  });

  it('without BYPASS_CONFIG, maps RAM 1:1 around the endpoint reserved regions, rounded out to the granule', () => {
    const t = setup({ features: ALL & ~VF.BYPASS_CONFIG, probeProperties: () => resvMem(0, BigInt(RAM_BASE + 0x80_0800), BigInt(RAM_BASE + 0x80_17ff)) });
    const id = t.v.domainAlloc('identity')!;
    expect(t.v.attachDev(id, t.ep(8))).toBeUndefined();
    expect(t.reqs(T.ATTACH)).toEqual([{ type: T.ATTACH, domain: 1, endpoint: 8, flags: 0, status: S.OK }]);
    const ram = (a: number) => BigInt(RAM_BASE + a);
    expect(t.reqs(T.MAP)).toEqual([
      { type: T.MAP, domain: 1, start: ram(0), end: ram(0x7f_ffff), phys: ram(0), flags: 3, status: S.OK },
      { type: T.MAP, domain: 1, start: ram(0x80_2000), end: ram(RAM_SIZE - 1), phys: ram(0x80_2000), flags: 3, status: S.OK },
    ]);
    expect(t.v.iovaToPhys(id, RAM_BASE + 0x1234)).toBe(RAM_BASE + 0x1234);
    expect(t.v.iovaToPhys(id, RAM_BASE + 0x80_1000)).toBeUndefined();
    expect(t.m.k.trace.events.some((e) => e.name === 'viommu_identity_map')).toBe(true);
  });

  it('attaches a blocked domain with no mappings and refuses to map into it', () => {
    const t = setup();
    const blocked = t.v.domainAlloc('blocked')!;
    expect(t.v.attachDev(blocked, t.ep(8))).toBeUndefined();
    expect(t.v.map(blocked, 0x1000, t.page(1), 0x1000, RW)).toBe('EINVAL');
    expect(t.dev.domains.get(2)).toEqual({ bypass: false, endpoints: new Set([8]), mappings: [] });
  });

  it('replays the shadow mappings when a domain gets its first endpoint, and only then', () => {
    const t = setup();
    const [a, b] = [t.ep(8), t.ep(16)];
    const d = t.v.domainAlloc('dma')!;
    const other = t.v.domainAlloc('dma')!;
    expect(t.v.map(d, 0x10000, t.page(16), 0x2000, RW)).toBeUndefined();
    expect(t.v.iotlbSyncMap(d)).toBeUndefined();
    expect(t.reqs(T.MAP)).toEqual([]); // the device does not know the domain yet
    expect(t.v.attachDev(d, a)).toBeUndefined();
    expect(t.v.attachDev(d, b)).toBeUndefined();
    const replay = { type: T.MAP, domain: 2, start: 0x10000n, end: 0x11fffn, phys: BigInt(t.page(16)), flags: 3, status: S.OK };
    expect(t.dev.requests.slice(2)).toEqual([{ type: T.ATTACH, domain: 2, endpoint: 8, flags: 0, status: S.OK }, replay, { type: T.ATTACH, domain: 2, endpoint: 16, flags: 0, status: S.OK }]);
    // Moving both endpoints away makes the device destroy the domain (no DETACH is sent).
    expect(t.v.attachDev(other, a)).toBeUndefined();
    expect(t.v.attachDev(other, b)).toBeUndefined();
    expect(t.dev.domains.has(2)).toBe(false);
    expect(t.v.map(d, 0x20000, t.page(32), 0x1000, RW)).toBeUndefined(); // shadow only
    expect(t.reqs(T.MAP)).toHaveLength(1);
    expect(t.v.attachDev(d, b)).toBeUndefined();
    expect(t.reqs(T.MAP).slice(1)).toEqual([replay, { ...replay, start: 0x20000n, end: 0x20fffn, phys: BigInt(t.page(32)) }]);
    expect(t.dev.domains.get(2)!.mappings).toHaveLength(2);
    expect(t.reqs(T.DETACH)).toEqual([]);
    expect(t.m.k.trace.events.filter((e) => e.name === 'viommu_replay_mappings')).toHaveLength(2);
    expect(viommuReports(t.stack.bus)[0]!.endpoints.map((e) => [e.device, e.domain])).toEqual([['ep8', '3'], ['ep16', '2']]);
  });
});

describe('virtio-iommu MAP and UNMAP', () => {
  function attached(opts: Partial<ViommuOptions> = {}) {
    const t = setup(opts);
    const d = t.v.domainAlloc('dma')!;
    expect(t.v.attachDev(d, t.ep(8))).toBeUndefined();
    return { ...t, d };
  }

  it('queues MAPs without a kick and sends them with one kick at the sync point', () => {
    const t = attached();
    const kicks = t.dev.model.notifies;
    for (let i = 0; i < 8; i++) expect(t.v.map(t.d, 0x10000 + i * 0x1000, t.page(i), 0x1000, RW)).toBeUndefined();
    expect(t.dev.model.notifies).toBe(kicks);
    expect(t.reqs(T.MAP)).toEqual([]);
    expect(t.v.iotlbSyncMap(t.d)).toBeUndefined();
    expect(t.dev.model.notifies).toBe(kicks + 1);
    expect(t.reqs(T.MAP).map((r) => r.start)).toEqual(Array.from({ length: 8 }, (_, i) => BigInt(0x10000 + i * 0x1000)));
    expect(t.v.iotlbSyncMap(t.d)).toBeUndefined();
    expect(t.dev.model.notifies).toBe(kicks + 1); // nothing pending, no kick
  });

  it('syncs early when the request queue is full, and loses nothing', () => {
    const t = attached({ queueSize: 8 });
    for (let i = 0; i < 20; i++) expect(t.v.map(t.d, 0x10000 + i * 0x1000, t.page(i), 0x1000, RW)).toBeUndefined();
    expect(t.v.iotlbSyncMap(t.d)).toBeUndefined();
    expect(t.dev.domains.get(2)!.mappings).toHaveLength(20);
  });

  it('never splits a mapping, removes whole mappings, and covers them with one UNMAP', () => {
    const t = attached();
    t.v.map(t.d, 0x10000, t.page(0), 0x2000, RW);
    t.v.map(t.d, 0x20000, t.page(4), 0x1000, RW);
    t.v.map(t.d, 0x30000, t.page(8), 0x1000, RW);
    t.v.iotlbSyncMap(t.d);
    expect(t.v.unmap(t.d, 0x11000, 0x1000)).toBe(0); // would split the first mapping
    expect(t.v.iovaToPhys(t.d, 0x11800)).toBe(t.page(1) + 0x800);
    expect(t.v.unmap(t.d, 0x10000, 0x1000)).toBe(0x2000); // starts in the range: removed whole
    expect(t.v.unmap(t.d, 0x20000, 0x11000)).toBe(0x2000); // two mappings and the hole between
    expect(t.reqs(T.UNMAP)).toEqual([]); // queued only
    t.v.iotlbSync(t.d);
    expect(t.reqs(T.UNMAP)).toEqual([
      { type: T.UNMAP, domain: 2, start: 0x10000n, end: 0x11fffn, status: S.OK },
      { type: T.UNMAP, domain: 2, start: 0x20000n, end: 0x30fffn, status: S.OK },
    ]);
    expect(t.dev.domains.get(2)!.mappings).toEqual([]);
    expect(t.v.iovaToPhys(t.d, 0x11800)).toBeUndefined();
    expect(t.v.unmap(t.d, 0x10000, 0x1000)).toBe(0);
  });

  it('refuses overlaps, IOVAs outside the input range, and MMIO without F_MMIO', () => {
    const t = attached({ features: ALL & ~VF.MMIO, inputRange: [0x1000n, 2n ** 39n - 1n] });
    expect(t.v.map(t.d, 0x10000, t.page(0), 0x2000, RW)).toBeUndefined();
    expect(t.v.map(t.d, 0x11000, t.page(0), 0x1000, RW)).toBe('EINVAL');
    expect(t.v.map(t.d, 0, t.page(0), 0x1000, RW)).toBe('ERANGE');
    expect(t.v.map(t.d, 2 ** 39 - 0x1000, t.page(0), 0x2000, RW)).toBe('ERANGE');
    expect(t.v.map(t.d, MSI_IOVA_BASE, 0xfee0_0000, 0x1000, IOMMU_PROT.WRITE | IOMMU_PROT.MMIO)).toBe('EINVAL');
    t.v.iotlbSyncMap(t.d);
    expect(t.reqs(T.MAP)).toHaveLength(1);
  });

  it('maps the MSI doorbell WRITE|MMIO when F_MMIO is negotiated', () => {
    const t = attached();
    expect(t.v.map(t.d, MSI_IOVA_BASE, 0xfee0_0000, 0x1000, IOMMU_PROT.WRITE | IOMMU_PROT.MMIO)).toBeUndefined();
    expect(t.v.iotlbSyncMap(t.d)).toBeUndefined();
    expect(t.reqs(T.MAP)[0]).toMatchObject({ start: BigInt(MSI_IOVA_BASE), phys: 0xfee0_0000n, flags: 2 | 4 });
  });

  it('passes IOVAs above 2^53, up to 2^64 - 1, exactly', () => {
    const t = attached({ inputRange: [0n, 2n ** 64n - 1n] });
    const high = toAddr(2n ** 53n + 0x1000n);
    const top = toAddr(2n ** 64n - 0x1000n);
    expect(t.v.map(t.d, high, t.page(3), 0x2000, RW)).toBeUndefined();
    expect(t.v.map(t.d, top, t.page(7), 0x1000, IOMMU_PROT.READ)).toBeUndefined();
    expect(t.v.iotlbSyncMap(t.d)).toBeUndefined();
    expect(t.reqs(T.MAP).map((r) => [r.start, r.end, r.flags])).toEqual([
      [2n ** 53n + 0x1000n, 2n ** 53n + 0x2fffn, 3],
      [2n ** 64n - 0x1000n, 2n ** 64n - 1n, 1],
    ]);
    expect(t.v.iovaToPhys(t.d, 2n ** 53n + 0x1801n)).toBe(t.page(3) + 0x801);
    expect(t.v.iovaToPhys(t.d, 2n ** 64n - 1n)).toBe(t.page(7) + 0xfff);
    expect(t.v.unmap(t.d, top, 0x1000)).toBe(0x1000);
    t.v.iotlbSync(t.d);
    expect(t.reqs(T.UNMAP)).toEqual([{ type: T.UNMAP, domain: 2, start: 2n ** 64n - 0x1000n, end: 2n ** 64n - 1n, status: S.OK }]);
    expect(viommuReports(t.stack.bus)[0]!.endpoints[0]).toMatchObject({ lowestIova: '0x20000000001000', highestIova: '0xffffffffffffffff', mappingsMade: 2, mappingsRemoved: 1 });
  });

  it('reports a batched failure at the sync point with its status, once', () => {
    const t = attached();
    expect(t.v.map(t.d, 0x10800, t.page(0), 0x1000, RW)).toBeUndefined(); // misaligned: the device says RANGE
    expect(t.v.iotlbSyncMap(t.d)).toBe('ERANGE');
    expect(t.v.iotlbSyncMap(t.d)).toBeUndefined();
    expect(t.m.dmesg()).toContain('virtio0: MAP request failed: RANGE');
  });

  it('gives up on requests a stalled device never answers, and takes them back when it does', () => {
    const t = attached();
    const notify = t.dev.model.notify.bind(t.dev.model);
    t.dev.model.notify = () => {}; // the kick is lost: nothing will ever run the device
    t.v.map(t.d, 0x10000, t.page(0), 0x1000, RW);
    expect(t.v.iotlbSyncMap(t.d)).toBe('EIO');
    t.dev.model.notify = notify;
    t.v.map(t.d, 0x20000, t.page(1), 0x1000, RW);
    expect(t.v.iotlbSyncMap(t.d)).toBeUndefined();
    expect(t.reqs(T.MAP).map((r) => [r.start, r.status])).toEqual([[0x10000n, S.OK], [0x20000n, S.OK]]);
    expect(viommuReports(t.stack.bus)[0]!.requests['MAP']).toEqual({ IOERR: 1, OK: 1 });
  });

  it('takes a used length of 0 as IOERR, batched or not', () => {
    const t = attached();
    t.dev.silent.add(T.MAP).add(T.ATTACH);
    t.v.map(t.d, 0x10000, t.page(0), 0x1000, RW);
    expect(t.v.iotlbSyncMap(t.d)).toBe('EIO');
    expect(t.v.attachDev(t.v.domainAlloc('dma')!, t.ep(16))).toBe('EIO');
    expect(viommuReports(t.stack.bus)[0]!.requests).toEqual({ PROBE: { OK: 2 }, ATTACH: { OK: 1, IOERR: 1 }, MAP: { IOERR: 1 } });
  });
});

describe('virtio-iommu events', () => {
  it('logs and counts each fault, ignores records with reserved bits, and gives every buffer back', () => {
    const t = setup();
    t.ep(8);
    const { READ, WRITE, ADDRESS } = { READ: 1, WRITE: 2, ADDRESS: 0x100 };
    expect(t.dev.fault(faultRecord({ reason: 2, flags: READ | WRITE | ADDRESS, endpoint: 8, address: 2n ** 60n + 0x123n }))).toBe(true);
    expect(t.dev.fault(faultRecord({ reason: 1, flags: WRITE, endpoint: 16 }))).toBe(true);
    expect(t.dev.fault(faultRecord({ reason: 9, flags: READ, endpoint: 8 }))).toBe(true);
    expect(t.dev.fault(faultRecord({ reason: 2, flags: READ, endpoint: 8, reserved: 1 }))).toBe(true);
    expect(t.dev.fault(faultRecord({ reason: 2, flags: READ, endpoint: 8 }), 16)).toBe(true);
    expect(t.dev.eventBuffersHeld()).toBe(59);
    t.m.k.irqs.poll();
    expect(t.dev.eventBuffersHeld()).toBe(64);
    expect(t.m.dmesg().filter((l) => l.includes('fault') || l.includes('event'))).toEqual([
      'virtio0: mapping fault from EP 8 at 0x1000000000000123 [RW]',
      'virtio0: domain fault from EP 16 [W]',
      'virtio0: unknown fault from EP 8 [R]',
      'virtio0: invalid event buffer (used length 16, a fault record is 24)',
    ]);
    const r = viommuReports(t.stack.bus)[0]!;
    expect(r.faults).toEqual({ byReason: { mapping: 1, domain: 1, unknown: 1 }, byEndpoint: { 8: 2, 16: 1 }, ignored: 1, invalid: 1 });
    expect(r.endpoints[0]!.faults).toBe(2);
  });
});

describe('virtio-iommu removal and report', () => {
  it('DETACHes a released endpoint and frees its queues when the device goes', () => {
    const t = setup();
    const a = t.ep(8);
    t.v.attachDev(t.v.domainAlloc('dma')!, a);
    t.v.releaseDevice(a);
    expect(t.reqs(T.DETACH)).toEqual([{ type: T.DETACH, domain: 2, endpoint: 8, status: S.OK }]);
    const vdev = t.vdev()!;
    t.m.k.platform.removeDevice(t.pdev);
    expect(vdev.vqs).toEqual([]);
    expect(vdev.drvdata).toBeUndefined();
    expect(t.stack.iommus()).toEqual([]);
  });

  it('reports config, features, requests and endpoints as plain JSON', () => {
    const t = setup({ probeProperties: () => MSI_REGION, inputRange: [0n, 2n ** 64n - 1n] });
    const d = t.v.domainAlloc('dma')!;
    t.v.attachDev(d, t.ep(8));
    t.v.map(d, 0x10000, t.page(0), 0x1000, RW);
    t.v.iotlbSyncMap(d);
    const [r] = viommuReports(t.stack.bus);
    expect(JSON.parse(JSON.stringify(r))).toEqual({
      device: 'virtio0',
      busDevice: 'a000000.virtio_mmio',
      config: { pageSizeMask: '0xfffffffffffff000', inputStart: '0x0', inputEnd: '0xffffffffffffffff', domainStart: 1, domainEnd: 1000, probeSize: 512, bypass: 0 },
      features: ['INPUT_RANGE', 'DOMAIN_RANGE', 'MAP_UNMAP', 'PROBE', 'MMIO', 'BYPASS_CONFIG', 'VERSION_1'],
      requests: { PROBE: { OK: 1 }, ATTACH: { OK: 1 }, MAP: { OK: 1 } },
      endpoints: [
        { device: 'ep8', ids: [8], domain: '2', resvRegions: [{ start: '0xfee00000', end: '0xfeefffff', type: 'msi' }], mappingsMade: 1, mappingsRemoved: 0, lowestIova: '0x10000', highestIova: '0x10fff', faults: 0 },
      ],
      faults: { byReason: {}, byEndpoint: {}, ignored: 0, invalid: 0 },
    });
  });
});
