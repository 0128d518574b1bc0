// The virtio-iommu request queue under the strict `spec` profile: each
// normative rule of virtio 1.4 §5.13.6 in its own test, the config space and
// features, and how requests are framed.
import { describe, expect, it } from 'vitest';
import { VIRTIO_IOMMU_ATTACH_F_BYPASS, VIRTIO_IOMMU_F, VIRTIO_IOMMU_MAP_F, VIRTIO_IOMMU_S as S, VIRTIO_IOMMU_T, VirtioIommuConfig, VirtioIommuReqMap } from '../../abi/virtio-iommu.ts';
import { MMIO, VIRTIO_MMIO_CONFIG } from '../../abi/virtio-mmio.ts';
import { STATUS, has } from '../../abi/virtio.ts';
import { VirtioIommu } from '../../platform/iommu/virtio-iommu.ts';
import { IommuBench, PAGE, SENTINEL, readable } from './iommu-harness.ts';
import { Host, acceptAll } from './virtio-harness.ts';

const { READ, WRITE, MMIO: MMIO_F } = VIRTIO_IOMMU_MAP_F;
const C = VirtioIommuConfig.off;

/** A bench with endpoints 8 and 16, endpoint 8 attached to domain 1. */
function attached(opts: ConstructorParameters<typeof IommuBench>[0] = {}) {
  const b = new IommuBench(opts, { endpoints: [8, 16] });
  expect(b.attach(1, 8).status).toBe(S.OK);
  return b;
}

const mappings = (b: IommuBench, domain: number) => [...(b.dev.state.domains.get(domain)?.mappings ?? [])].map((i) => [i.value.virtStart, i.value.virtEnd]);

describe('config space and features', () => {
  it('lays out page_size_mask, input_range, domain_range, probe_size and bypass as the spec tables them', () => {
    const dev = new VirtioIommu(new Host().ctx(), { awBits: 39, domainRange: [1, 1000], probeSize: 512, bootBypass: true });
    const cfg = new DataView(dev.config.buffer);
    expect(dev.config.length).toBe(40);
    expect(cfg.getBigUint64(C.page_size_mask, true)).toBe(0xffff_ffff_ffff_f000n);
    expect([cfg.getBigUint64(C.input_start, true), cfg.getBigUint64(C.input_end, true)]).toEqual([0n, 2n ** 39n - 1n]);
    expect([cfg.getUint32(C.domain_start, true), cfg.getUint32(C.domain_end, true), cfg.getUint32(C.probe_size, true), dev.config[C.bypass]]).toEqual([1, 1000, 512, 1]);
    expect(dev.deviceId).toBe(23);
  });

  it('aw-bits 64 makes the input range the whole 64-bit space; granule 64k the mask', () => {
    const dev = new VirtioIommu(new Host().ctx(), { awBits: 64, granule: '64k' });
    const cfg = new DataView(dev.config.buffer);
    expect(cfg.getBigUint64(C.input_end, true)).toBe(2n ** 64n - 1n);
    expect(cfg.getBigUint64(C.page_size_mask, true)).toBe(0xffff_ffff_ffff_0000n);
    expect(dev.granuleShift).toBe(16);
  });

  it('offers INPUT_RANGE, DOMAIN_RANGE, MAP_UNMAP, PROBE, MMIO, BYPASS_CONFIG by default, not the legacy BYPASS; each switchable', () => {
    const on = (dev: VirtioIommu) => Object.entries(VIRTIO_IOMMU_F).filter(([, b]) => has(dev.offeredFeatures, b)).map(([n]) => n);
    expect(on(new VirtioIommu(new Host().ctx()))).toEqual(['INPUT_RANGE', 'DOMAIN_RANGE', 'MAP_UNMAP', 'PROBE', 'MMIO', 'BYPASS_CONFIG']);
    expect(on(new VirtioIommu(new Host().ctx(), { features: { mmio: false, bypass: true, bypass_config: false, probe: false } }))).toEqual(['INPUT_RANGE', 'DOMAIN_RANGE', 'MAP_UNMAP', 'BYPASS']);
  });

  it('rejects properties QEMU rejects at realize', () => {
    expect(() => new VirtioIommu(new Host().ctx(), { awBits: 31 })).toThrow(/aw-bits 31 must be within \[32, 64\]/);
    expect(() => new VirtioIommu(new Host().ctx(), { reservedRegions: ['0x1000:0x1fff:2'] })).toThrow(/invalid type/);
    expect(() => new VirtioIommu(new Host().ctx(), { reservedRegions: ['0x2000:0x1fff:0'] })).toThrow(/high is below low/);
  });

  it('lets the driver write only bypass, only with BYPASS_CONFIG negotiated, and only its bit 0', () => {
    const b = new IommuBench({}, { features: (d) => acceptAll(d, VIRTIO_IOMMU_F.BYPASS_CONFIG) });
    const write = (off: number, v: number) => b.drv.t.handler.write(VIRTIO_MMIO_CONFIG + off, 1, v);
    write(C.bypass, 1);
    expect(b.dev.config[C.bypass]).toBe(0);
    const b2 = new IommuBench();
    b2.drv.t.handler.write(VIRTIO_MMIO_CONFIG + C.bypass, 1, 3);
    expect(b2.dev.config[C.bypass]).toBe(1);
    b2.drv.t.handler.write(VIRTIO_MMIO_CONFIG + C.probe_size, 4, 0);
    expect(b2.drv.t.handler.read(VIRTIO_MMIO_CONFIG + C.probe_size, 4)).toBe(512);
  });

  it('device reset detaches every endpoint and keeps bypass; system reset restores boot-bypass', () => {
    const b = attached({ bootBypass: false });
    b.drv.t.handler.write(VIRTIO_MMIO_CONFIG + C.bypass, 1, 1);
    b.drv.write(MMIO.status, 0);
    expect(b.dev.state.domains.size).toBe(0);
    expect(b.dev.config[C.bypass]).toBe(1);
    b.dev.systemReset();
    expect(b.dev.config[C.bypass]).toBe(0);
  });
});

describe('ATTACH', () => {
  it('creates the domain and attaches; the tail is the status with zeroed reserved bytes, used length 4', () => {
    const b = new IommuBench();
    const r = b.attach(1, 8);
    expect(r).toMatchObject({ status: S.OK, usedLen: 4 });
    expect([...r.out]).toEqual([0, 0, 0, 0]);
    expect(b.dev.state.domains.get(1)?.endpoints.map((e) => e.id)).toEqual([8]);
  });

  it('non-zero reserved: INVAL (MUST)', () => {
    expect(new IommuBench().attach(1, 8, 0, 1).status).toBe(S.INVAL);
  });

  it('an unknown flag bit: INVAL (MUST); ATTACH_F_BYPASS is unknown without BYPASS_CONFIG negotiated', () => {
    expect(new IommuBench().attach(1, 8, 2).status).toBe(S.INVAL);
    expect(new IommuBench({}, { features: (d) => acceptAll(d, VIRTIO_IOMMU_F.BYPASS_CONFIG) }).attach(1, 8, VIRTIO_IOMMU_ATTACH_F_BYPASS).status).toBe(S.INVAL);
  });

  it('an unknown endpoint: NOENT (MUST)', () => {
    expect(new IommuBench().attach(1, 9).status).toBe(S.NOENT);
  });

  it('a domain outside domain_range: RANGE', () => {
    const b = new IommuBench({ domainRange: [1, 10] });
    expect(b.attach(11, 8).status).toBe(S.RANGE);
    expect(b.attach(0, 8).status).toBe(S.RANGE);
    expect(b.attach(10, 8).status).toBe(S.OK);
  });

  it('re-ATTACH moves the endpoint: DETACH from the old domain (gone with its mappings) then ATTACH', () => {
    const b = attached();
    expect(b.map(1, 0, PAGE - 1, 0x10_0000).status).toBe(S.OK);
    expect(b.attach(2, 8).status).toBe(S.OK);
    expect(b.dev.state.domains.has(1)).toBe(false);
    expect(b.dev.state.domains.get(2)?.endpoints.map((e) => e.id)).toEqual([8]);
    expect(b.map(1, 0, PAGE - 1, 0x10_0000).status).toBe(S.NOENT);
  });

  it('re-ATTACH to the same domain changes nothing', () => {
    const b = attached();
    b.map(1, 0, PAGE - 1, 0x10_0000);
    expect(b.attach(1, 8).status).toBe(S.OK);
    expect(mappings(b, 1)).toEqual([[0, PAGE - 1]]);
  });

  it('several endpoints share a domain; the domain lives while one is attached', () => {
    const b = attached();
    expect(b.attach(1, 16).status).toBe(S.OK);
    b.map(1, 0, PAGE - 1, 0x10_0000);
    expect(b.detach(1, 8).status).toBe(S.OK);
    expect(mappings(b, 1)).toEqual([[0, PAGE - 1]]);
  });

  it('ATTACH_F_BYPASS inconsistent with the existing domain: INVAL, and the endpoint stays where it was', () => {
    const b = attached();
    expect(b.attach(1, 16, VIRTIO_IOMMU_ATTACH_F_BYPASS).status).toBe(S.INVAL);
    expect(b.attach(2, 16, VIRTIO_IOMMU_ATTACH_F_BYPASS).status).toBe(S.OK);
    expect(b.attach(2, 8).status).toBe(S.INVAL);
    expect(b.dev.state.endpoints.get(8)?.domain?.id).toBe(1);
  });

  it('an endpoint whose reserved region holds a mapping of the domain: UNSUPP (incompatible probe properties)', () => {
    const b = new IommuBench({}, { endpoints: [8] });
    b.endpoint(16, { host: { awBits: 39 } });
    b.attach(1, 8);
    expect(b.map(1, 2 ** 40, 2 ** 40 + PAGE - 1, 0x10_0000).status).toBe(S.OK);
    expect(b.attach(1, 16).status).toBe(S.UNSUPP);
  });
});

describe('DETACH', () => {
  it('an unknown endpoint: NOENT (MUST)', () => {
    expect(attached().detach(1, 9).status).toBe(S.NOENT);
  });

  it('an endpoint not attached, or attached elsewhere: INVAL (MAY)', () => {
    const b = attached();
    expect(b.detach(1, 16).status).toBe(S.INVAL);
    expect(b.detach(2, 8).status).toBe(S.INVAL);
  });

  it('the last DETACH destroys the domain and its mappings; the ID can be reused', () => {
    const b = attached();
    b.map(1, 0, PAGE - 1, 0x10_0000);
    expect(b.detach(1, 8).status).toBe(S.OK);
    expect(b.dev.state.domains.has(1)).toBe(false);
    expect(b.map(1, 0, PAGE - 1, 0x10_0000).status).toBe(S.NOENT);
    expect(b.attach(1, 8).status).toBe(S.OK);
    expect(mappings(b, 1)).toEqual([]);
  });

  it('ignores reserved bytes (MUST)', () => {
    const b = attached();
    const req = readable(new Uint8Array(24));
    new DataView(req.buffer).setUint8(0, VIRTIO_IOMMU_T.DETACH);
    new DataView(req.buffer).setUint32(4, 1, true);
    new DataView(req.buffer).setUint32(8, 8, true);
    req.fill(0xa5, 12, 20);
    expect(b.send(req).status).toBe(S.OK);
  });
});

describe('MAP', () => {
  it('maps; an overlapping MAP: INVAL, the first mapping kept', () => {
    const b = attached();
    expect(b.map(1, 0x1000, 0x2fff, 0x10_0000).status).toBe(S.OK);
    expect(b.map(1, 0x2000, 0x3fff, 0x20_0000).status).toBe(S.INVAL);
    expect(b.map(1, 0, 0x1000, 0x20_0000, READ).status).toBe(S.RANGE); // virt_end + 1 unaligned comes first
    expect(b.map(1, 0, 0xfff, 0x20_0000).status).toBe(S.OK);
    expect(mappings(b, 1)).toEqual([
      [0, 0xfff],
      [0x1000, 0x2fff],
    ]);
  });

  it('an unknown flag: INVAL (MUST); MMIO is unknown unless F_MMIO was negotiated', () => {
    expect(attached().map(1, 0, 0xfff, 0, 8).status).toBe(S.INVAL);
    expect(attached().map(1, 0, 0xfff, 0, WRITE | MMIO_F).status).toBe(S.OK);
    const b = new IommuBench({}, { features: (d) => acceptAll(d, VIRTIO_IOMMU_F.MMIO) });
    b.attach(1, 8);
    expect(b.map(1, 0, 0xfff, 0, WRITE | MMIO_F).status).toBe(S.INVAL);
  });

  it('a domain that does not exist: NOENT', () => {
    expect(attached().map(2, 0, 0xfff, 0).status).toBe(S.NOENT);
  });

  it('virt_start, phys_start or virt_end + 1 not on the granule: RANGE, each', () => {
    const b = attached();
    expect(b.map(1, 0x800, 0x17ff, 0x10_0000).status).toBe(S.RANGE);
    expect(b.map(1, 0x1000, 0x1fff, 0x10_0800).status).toBe(S.RANGE);
    expect(b.map(1, 0x1000, 0x1ffe, 0x10_0000).status).toBe(S.RANGE);
    expect(mappings(b, 1)).toEqual([]);
  });

  it('outside input_range: RANGE', () => {
    const b = attached({ awBits: 39 });
    expect(b.map(1, 2 ** 39 - PAGE, 2 ** 39 - 1, 0x10_0000).status).toBe(S.OK);
    expect(b.map(1, 2 ** 39, 2 ** 39 + PAGE - 1, 0x10_0000).status).toBe(S.RANGE);
    expect(b.map(1, 2 ** 39 - 2 * PAGE, 2 ** 39 + PAGE - 1, 0x10_0000).status).toBe(S.RANGE);
  });

  it('virt_end not above virt_start: INVAL (a driver MUST NOT send it)', () => {
    const b = attached({ granule: '4k' });
    expect(b.map(1, 0x2000, 0x1fff, 0x10_0000).status).toBe(S.INVAL);
  });

  it('a range in a reserved region: INVAL, as for an existing mapping (the IOVAs are taken); MSI regions too', () => {
    const b = attached({ reservedRegions: ['0xfee00000:0xfeefffff:1', '0x8000000:0x80fffff:0'] });
    expect(b.map(1, 0xfee0_0000, 0xfee0_0fff, 0xfee0_0000, WRITE).status).toBe(S.INVAL);
    expect(b.map(1, 0x80f_f000, 0x810_0fff, 0x10_0000).status).toBe(S.INVAL);
    expect(b.map(1, 0x810_0000, 0x810_0fff, 0x10_0000).status).toBe(S.OK);
  });

  it('into a bypass domain: INVAL', () => {
    const b = new IommuBench();
    b.attach(3, 8, VIRTIO_IOMMU_ATTACH_F_BYPASS);
    expect(b.map(3, 0, 0xfff, 0).status).toBe(S.INVAL);
    expect(b.unmap(3, 0, 0xfff).status).toBe(S.INVAL);
  });

  it('a physical range past 2^64 - 1: RANGE', () => {
    expect(attached().map(1, 0, 0x1fff, 2n ** 64n - 0x1000n).status).toBe(S.RANGE);
  });
});

describe('UNMAP', () => {
  it('removes the mappings inside the range and spills over unmapped space; nothing mapped is OK', () => {
    const b = attached();
    b.map(1, 0x1000, 0x1fff, 0x10_0000);
    b.map(1, 0x3000, 0x4fff, 0x20_0000);
    b.map(1, 0x8000, 0x8fff, 0x30_0000);
    expect(b.unmap(1, 0, 0x5fff).status).toBe(S.OK);
    expect(mappings(b, 1)).toEqual([[0x8000, 0x8fff]]);
    expect(b.unmap(1, 0x10_0000, 0x10_ffff).status).toBe(S.OK);
  });

  it('a range that would split a mapping: RANGE, and nothing is removed, not even the mappings before it', () => {
    const b = attached();
    b.map(1, 0x1000, 0x1fff, 0x10_0000);
    b.map(1, 0x2000, 0x3fff, 0x20_0000);
    expect(b.unmap(1, 0x1000, 0x2fff).status).toBe(S.RANGE);
    expect(mappings(b, 1)).toEqual([
      [0x1000, 0x1fff],
      [0x2000, 0x3fff],
    ]);
  });

  it('a domain that does not exist: NOENT', () => {
    expect(attached().unmap(7, 0, 0xfff).status).toBe(S.NOENT);
  });

  it('non-zero reserved: INVAL with nothing removed (the MAY, taken strictly)', () => {
    const b = attached();
    b.map(1, 0, 0xfff, 0x10_0000);
    expect(b.unmap(1, 0, 0xfff, 1).status).toBe(S.INVAL);
    expect(mappings(b, 1)).toEqual([[0, 0xfff]]);
  });
});

describe('PROBE', () => {
  const regions = ['0xfee00000:0xfeefffff:1', '0x0:0xfff:0'];

  it('answers one RESV_MEM property per region, length 20, sorted, zero-filled to probe_size, then the tail', () => {
    const b = new IommuBench({ reservedRegions: regions });
    const r = b.probe(8, 512 + 4);
    expect(r).toMatchObject({ status: S.OK, usedLen: 516 });
    const hex = (a: Uint8Array) => Buffer.from(a).toString('hex');
    expect(hex(r.out.subarray(0, 48))).toBe(
      '0100' + '1400' + '00' + '000000' + '0000000000000000' + 'ff0f000000000000' + // RESERVED 0x0-0xfff
        '0100' + '1400' + '01' + '000000' + '0000e0fe00000000' + 'ffffeffe00000000', // MSI 0xfee00000-0xfeefffff
    );
    expect(r.out.subarray(48, 512).every((x) => x === 0)).toBe(true);
    expect([...r.out.subarray(512)]).toEqual([S.OK, 0, 0, 0]);
    expect(b.dev.iommuReport().endpoints[0]).toMatchObject({ id: 8, probes: 1 });
  });

  it('an unknown endpoint: NOENT', () => {
    expect(new IommuBench().probe(9, 516).status).toBe(S.NOENT);
  });

  it('a properties buffer smaller than probe_size: INVAL, no property written, the tail last', () => {
    const r = new IommuBench({ reservedRegions: regions }).probe(8, 100);
    expect(r).toMatchObject({ status: S.INVAL, usedLen: 100 });
    expect(r.out.subarray(0, 96).every((x) => x === 0)).toBe(true);
  });

  it('more properties than probe_size holds: INVAL', () => {
    expect(new IommuBench({ reservedRegions: regions, probeSize: 24 }).probe(8, 28).status).toBe(S.INVAL);
    expect(new IommuBench({ reservedRegions: regions, probeSize: 48 }).probe(8, 52).status).toBe(S.OK);
  });

  it('without F_PROBE offered: nothing written, used length 0', () => {
    const r = new IommuBench({ features: { probe: false } }).probe(8, 516);
    expect(r).toMatchObject({ status: undefined, usedLen: 0 });
  });
});

describe('framing', () => {
  it('an unknown request type: nothing written, used length 0', () => {
    const b = new IommuBench();
    const r = b.send(Uint8Array.of(9, 0, 0, 0, 1, 0, 0, 0));
    expect(r).toMatchObject({ status: undefined, usedLen: 0 });
    expect(r.out.every((x) => x === SENTINEL)).toBe(true);
    expect(b.dev.iommuReport().requests['UNKNOWN']).toEqual({ NONE: 1 });
  });

  it('a request too short for its type: the device cannot find the tail, returns it unwritten', () => {
    const b = attached();
    const map = readable(VirtioIommuReqMap.encode({ type: VIRTIO_IOMMU_T.MAP, domain: 1, virt_start: 0n, virt_end: 0xfffn, phys_start: 0n, flags: READ, status: 0 }));
    expect(b.send(map.subarray(0, 30))).toMatchObject({ status: undefined, usedLen: 0 });
    expect(mappings(b, 1)).toEqual([]);
  });

  it('no room for a head or a tail: returned unwritten', () => {
    const b = attached();
    expect(b.send(Uint8Array.of(1, 0), {})).toMatchObject({ usedLen: 0 });
    expect(b.send(readable(new Uint8Array(24)), { writable: 2 })).toMatchObject({ usedLen: 0 });
  });

  it('MAP and UNMAP without MAP_UNMAP negotiated are unknown requests', () => {
    const b = new IommuBench({}, { features: (d) => acceptAll(d, VIRTIO_IOMMU_F.MAP_UNMAP) });
    b.attach(1, 8);
    expect(b.map(1, 0, 0xfff, 0)).toMatchObject({ status: undefined, usedLen: 0 });
  });

  it('reads a request split over descriptors, and reads each byte once: copied, then checked', () => {
    const b = attached();
    const map = readable(VirtioIommuReqMap.encode({ type: VIRTIO_IOMMU_T.MAP, domain: 1, virt_start: 0x1000n, virt_end: 0x1fffn, phys_start: 0x10_0000n, flags: READ, status: 0 }));
    const before = b.dev.report().dma.readBytes;
    expect(b.send(map, { splitAt: 10 }).status).toBe(S.OK);
    expect(b.dev.report().dma.readBytes - before).toBe(map.length);
    expect(mappings(b, 1)).toEqual([[0x1000, 0x1fff]]);
  });

  it('counts requests by type and status in the report', () => {
    const b = attached();
    b.attach(1, 99);
    b.map(1, 0, 0xfff, 0);
    expect(b.dev.iommuReport().requests).toEqual({ ATTACH: { OK: 1, NOENT: 1 }, MAP: { OK: 1 } });
    expect(b.dev.report().stats).toMatchObject({ attach: 2, attachFailed: 1, map: 1, mapFailed: 0 });
  });
});

describe('negotiation', () => {
  it('a driver that declines BYPASS_CONFIG still finds unattached endpoints in bypass when the device set bypass = 1', () => {
    const b = new IommuBench({ bootBypass: true }, { features: (d) => acceptAll(d, VIRTIO_IOMMU_F.BYPASS_CONFIG) });
    expect(b.endpoint(8).resolve(0x1000, 4, 1)).toBe(0x1000);
    expect(has(b.dev.driverFeatures, VIRTIO_IOMMU_F.BYPASS_CONFIG)).toBe(false);
    expect(b.dev.status & STATUS.FEATURES_OK).toBeTruthy();
  });
});
