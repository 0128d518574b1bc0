// The behaviour profiles: the spec's seven UNMAP examples (virtio 1.4 §5.13.6.6)
// under every profile, then each host's documented deviations
// (shared/reference/virtio-iommu.md §5, §6, §8).
import { describe, expect, it } from 'vitest';
import { VIRTIO_IOMMU_ATTACH_F_BYPASS, VIRTIO_IOMMU_F, VIRTIO_IOMMU_MAP_F, VIRTIO_IOMMU_S as S, VirtioIommuConfig } from '../../abi/virtio-iommu.ts';
import { MMIO, VIRTIO_MMIO_CONFIG } from '../../abi/virtio-mmio.ts';
import { STATUS, has } from '../../abi/virtio.ts';
import { DMA_READ, DMA_WRITE } from '../../platform/address-space.ts';
import { PROFILES, type ProfileName } from '../../platform/iommu/profiles.ts';
import { VirtioIommu } from '../../platform/iommu/virtio-iommu.ts';
import { IommuBench, PAGE } from './iommu-harness.ts';
import { Host, acceptAll } from './virtio-harness.ts';

const C = VirtioIommuConfig.off;
const U = PAGE;
const pages = (b: IommuBench, domain = 1) => [...(b.dev.state.domains.get(domain)?.mappings ?? [])].map((i) => [Number(i.value.virtStart) / U, (Number(i.value.virtEnd) + 1) / U - 1]);

interface Example {
  readonly name: string;
  /** Mappings first, in page units: [first, last]. */
  readonly maps: readonly (readonly [number, number])[];
  readonly unmap: readonly [number, number];
  readonly expect: Readonly<Record<ProfileName, { status: number; usedLen: number; left: number[][] }>>;
}

const all = (status: number, left: number[][], usedLen = 4) => ({ spec: { status, usedLen, left }, qemu: { status, usedLen, left }, 'cloud-hypervisor': { status, usedLen, left }, crosvm: { status, usedLen, left } });

/** §5.13.6.6, one page per unit so that every profile's alignment rule is met. */
const EXAMPLES: readonly Example[] = [
  { name: '(1) unmap(0, 4) on nothing', maps: [], unmap: [0, 4], expect: all(S.OK, []) },
  { name: '(2) map(0, 9); unmap(0, 9)', maps: [[0, 9]], unmap: [0, 9], expect: all(S.OK, []) },
  { name: '(3) map(0, 4), map(5, 9); unmap(0, 9)', maps: [[0, 4], [5, 9]], unmap: [0, 9], expect: all(S.OK, []) },
  {
    name: '(4) map(0, 9); unmap(0, 4): a split',
    maps: [[0, 9]],
    unmap: [0, 4],
    // cloud-hypervisor writes RANGE, then completes with used length 0, which a driver takes as IOERR.
    expect: { ...all(S.RANGE, [[0, 9]]), 'cloud-hypervisor': { status: S.RANGE, usedLen: 0, left: [[0, 9]] } },
  },
  { name: '(5) map(0, 4), map(5, 9); unmap(0, 4)', maps: [[0, 4], [5, 9]], unmap: [0, 4], expect: all(S.OK, [[5, 9]]) },
  { name: '(6) map(0, 4); unmap(0, 9)', maps: [[0, 4]], unmap: [0, 9], expect: all(S.OK, []) },
  { name: '(7) map(0, 4), map(10, 14); unmap(0, 14)', maps: [[0, 4], [10, 14]], unmap: [0, 14], expect: all(S.OK, []) },
  {
    name: 'beyond the examples: map(0, 4), map(5, 9); unmap(0, 7) splits the second',
    maps: [[0, 4], [5, 9]],
    unmap: [0, 7],
    // QEMU's UNMAP is not atomic: the first mapping is gone before it meets the split one.
    expect: {
      spec: { status: S.RANGE, usedLen: 4, left: [[0, 4], [5, 9]] },
      qemu: { status: S.RANGE, usedLen: 4, left: [[5, 9]] },
      'cloud-hypervisor': { status: S.RANGE, usedLen: 0, left: [[0, 4], [5, 9]] },
      crosvm: { status: S.RANGE, usedLen: 4, left: [[0, 4], [5, 9]] },
    },
  },
];

describe('the spec UNMAP examples under every profile', () => {
  const cases = EXAMPLES.flatMap((e) => Object.entries(e.expect).map(([profile, want]) => [e.name, profile as ProfileName, e, want] as const));
  it.each(cases)('%s — %s', (_name, profile, e, want) => {
    const b = new IommuBench({ profile });
    expect(b.attach(1, 8).status).toBe(S.OK);
    for (const [first, last] of e.maps) expect(b.map(1, first * U, (last + 1) * U - 1, 0x10_0000 + first * U).status).toBe(S.OK);
    const r = b.unmap(1, e.unmap[0] * U, (e.unmap[1] + 1) * U - 1);
    expect({ status: r.status, usedLen: r.usedLen, left: pages(b) }).toEqual(want);
  });
});

describe('qemu', () => {
  const qemu = (opts = {}) => new IommuBench({ profile: 'qemu', ...opts }, { endpoints: [8, 16] });

  it('offers what QEMU 10 offers, with boot-bypass on and a 512-byte probe', () => {
    const dev = new VirtioIommu(new Host().ctx(), { profile: 'qemu' });
    expect(['INPUT_RANGE', 'DOMAIN_RANGE', 'MAP_UNMAP', 'PROBE', 'MMIO', 'BYPASS_CONFIG'].every((n) => has(dev.offeredFeatures, VIRTIO_IOMMU_F[n as 'MMIO']))).toBe(true);
    expect(has(dev.offeredFeatures, VIRTIO_IOMMU_F.BYPASS)).toBe(false);
    expect([dev.config[C.bypass], new DataView(dev.config.buffer).getUint32(C.probe_size, true)]).toEqual([1, 512]);
  });

  it('checks neither alignment nor the input range: the spec examples work in bytes', () => {
    const b = qemu({ awBits: 39 });
    b.attach(1, 8);
    expect(b.map(1, 0, 4, 0x10_0000).status).toBe(S.OK);
    expect(b.map(1, 5, 9, 0x10_0005).status).toBe(S.OK);
    expect(b.unmap(1, 0, 4).status).toBe(S.OK);
    expect(b.map(1, 2 ** 40, 2 ** 40 + 0xfff, 0x10_0000).status).toBe(S.OK);
  });

  it('writes UNSUPP for an unknown request type', () => {
    expect(qemu().send(Uint8Array.of(9, 0, 0, 0))).toMatchObject({ status: S.UNSUPP, usedLen: 4 });
  });

  it('answers a short request INVAL, and breaks the device on a missing head or tail (virtio_error)', () => {
    const b = qemu();
    expect(b.send(Uint8Array.of(3, 0, 0, 0, 1, 0, 0, 0))).toMatchObject({ status: S.INVAL });
    b.send(Uint8Array.of(1, 0, 0, 0), { writable: 2 });
    expect(b.dev.status & STATUS.DEVICE_NEEDS_RESET).toBeTruthy();
  });

  it('does not check ATTACH reserved bytes, and takes ATTACH_F_BYPASS without BYPASS_CONFIG negotiated', () => {
    expect(qemu().attach(1, 8, 0, 0xffff).status).toBe(S.OK);
    const b = new IommuBench({ profile: 'qemu' }, { features: (d) => acceptAll(d, VIRTIO_IOMMU_F.BYPASS_CONFIG) });
    expect(b.attach(1, 8, VIRTIO_IOMMU_ATTACH_F_BYPASS).status).toBe(S.OK);
  });

  it('re-ATTACH to the same domain detaches first: the sole endpoint takes the mappings with it', () => {
    const b = qemu();
    b.attach(1, 8);
    b.map(1, 0, 0xfff, 0x10_0000);
    expect(b.attach(1, 8).status).toBe(S.OK);
    expect(pages(b)).toEqual([]);
  });

  it('an ATTACH with a mismatched bypass flag fails after the detach: the endpoint is left unattached', () => {
    const b = qemu();
    b.attach(1, 8);
    b.attach(2, 16, VIRTIO_IOMMU_ATTACH_F_BYPASS);
    expect(b.attach(2, 8).status).toBe(S.INVAL);
    expect(b.dev.state.endpoints.get(8)?.domain).toBeUndefined();
  });

  it('DETACH of an endpoint not attached: NOENT (QEMU keeps endpoints only while attached)', () => {
    const b = qemu();
    expect(b.detach(1, 8).status).toBe(S.NOENT);
    b.attach(1, 8);
    expect(b.detach(2, 8).status).toBe(S.INVAL);
    expect(b.detach(1, 8).status).toBe(S.OK);
    expect(b.detach(1, 8).status).toBe(S.NOENT);
  });

  it('maps over reserved regions without complaint', () => {
    const b = qemu({ reservedRegions: ['0xfee00000:0xfeefffff:1'] });
    b.attach(1, 8);
    expect(b.map(1, 0xfee0_0000, 0xfee0_0fff, 0x10_0000).status).toBe(S.OK);
  });

  it('PROBE: probe_size bytes then the tail; a short buffer gets only a DEVERR tail at its start', () => {
    const b = qemu({ reservedRegions: ['0xfee00000:0xfeefffff:1'] });
    const r = b.probe(8, 600);
    expect(r.usedLen).toBe(516);
    expect(r.out[512]).toBe(S.OK);
    const short = b.probe(8, 100);
    expect(short.usedLen).toBe(4);
    expect([...short.out.subarray(0, 4)]).toEqual([S.DEVERR, 0, 0, 0]);
  });

  it('a bypass write without BYPASS_CONFIG negotiated breaks the device', () => {
    const b = new IommuBench({ profile: 'qemu', bootBypass: false }, { features: (d) => acceptAll(d, VIRTIO_IOMMU_F.BYPASS_CONFIG) });
    b.drv.t.handler.write(VIRTIO_MMIO_CONFIG + C.bypass, 1, 1);
    expect(b.drv.read(MMIO.status) & STATUS.DEVICE_NEEDS_RESET).toBeTruthy();
  });

  it('sets F_READ / F_WRITE only on permission faults', () => {
    const b = qemu({ bootBypass: false });
    b.attach(1, 8);
    b.map(1, 0, 0xfff, 0x10_0000, VIRTIO_IOMMU_MAP_F.READ);
    b.endpoint(8).resolve(0x1000, 4, DMA_READ);
    b.endpoint(8).resolve(0x0, 4, DMA_WRITE);
    expect(b.faults().map((f) => new DataView(f.buffer).getUint32(4, true))).toEqual([0x100, 0x102]);
  });
});

describe('cloud-hypervisor', () => {
  const ch = (opts = {}) => new IommuBench({ profile: 'cloud-hypervisor', ...opts }, { endpoints: [8, 16] });

  it('page_size_mask 4K | 2M, probe_size 24, no DOMAIN_RANGE or MMIO, INPUT_RANGE only below 64 bits', () => {
    const dev = new VirtioIommu(new Host().ctx(), { profile: 'cloud-hypervisor' });
    const cfg = new DataView(dev.config.buffer);
    expect([cfg.getBigUint64(C.page_size_mask, true), cfg.getUint32(C.probe_size, true)]).toEqual([0x20_1000n, 24]);
    expect([VIRTIO_IOMMU_F.DOMAIN_RANGE, VIRTIO_IOMMU_F.MMIO, VIRTIO_IOMMU_F.INPUT_RANGE].map((f) => has(dev.offeredFeatures, f))).toEqual([false, false, false]);
    expect(has(new VirtioIommu(new Host().ctx(), { profile: 'cloud-hypervisor', awBits: 48 }).offeredFeatures, VIRTIO_IOMMU_F.INPUT_RANGE)).toBe(true);
  });

  it('writes the status of a failed request but completes it with used length 0', () => {
    const b = ch();
    expect(b.map(1, 0, 0xfff, 0)).toMatchObject({ status: S.NOENT, usedLen: 0 });
    expect(b.attach(1, 8)).toMatchObject({ status: S.OK, usedLen: 4 });
  });

  it('an unknown type: nothing written, used length 0', () => {
    expect(ch().send(Uint8Array.of(9, 0, 0, 0))).toMatchObject({ status: undefined, usedLen: 0 });
  });

  it('wants each request exactly head + body long', () => {
    const b = ch();
    const attach = new Uint8Array(24);
    attach.set([1, 0, 0, 0, 1, 0, 0, 0, 8]);
    expect(b.send(attach).status).toBe(S.INVAL);
  });

  it('attaches endpoints it does not know, and DETACH always succeeds', () => {
    const b = ch();
    expect(b.attach(1, 99).status).toBe(S.OK);
    expect(b.detach(5, 99).status).toBe(S.OK);
    expect(b.detach(5, 1234).status).toBe(S.OK);
  });

  it('never uses the event queue: faults are counted, not reported', () => {
    const b = ch({ bootBypass: false });
    b.drv.t.handler.write(VIRTIO_MMIO_CONFIG + C.bypass, 1, 0);
    expect(b.endpoint(8).resolve(0x1000, 4, DMA_READ)).toBe(-1);
    expect(b.faults()).toEqual([]);
    expect(b.dev.iommuReport().faults).toEqual({ reported: 0, dropped: 0, unreported: 1 });
  });

  it('lets unattached endpoints bypass until the driver writes bypass, whatever bypass reads', () => {
    const b = ch();
    expect(b.dev.config[C.bypass]).toBe(0);
    expect(b.endpoint(8).resolve(0x1000, 4, DMA_READ)).toBe(0x1000);
    b.drv.t.handler.write(VIRTIO_MMIO_CONFIG + C.bypass, 1, 0);
    expect(b.endpoint(8).resolve(0x1000, 4, DMA_READ)).toBe(-1);
  });

  it('PROBE answers any endpoint with the MSI region; a short buffer is a parse error', () => {
    const b = ch({ reservedRegions: ['0xfee00000:0xfeefffff:1'] });
    const r = b.probe(77, 28);
    expect(r).toMatchObject({ status: S.OK, usedLen: 28 });
    expect(r.out[4]).toBe(1);
    expect(b.probe(8, 20)).toMatchObject({ status: undefined, usedLen: 0 });
  });
});

describe('crosvm', () => {
  const crosvm = (opts = {}) => new IommuBench({ profile: 'crosvm', ...opts }, { endpoints: [8, 16] });

  it('has a 36-byte config without bypass, and offers no bypass at all', () => {
    const dev = new VirtioIommu(new Host().ctx(), { profile: 'crosvm' });
    expect(dev.config.length).toBe(36);
    expect([VIRTIO_IOMMU_F.BYPASS, VIRTIO_IOMMU_F.BYPASS_CONFIG].map((f) => has(dev.offeredFeatures, f))).toEqual([false, false]);
    const b = crosvm();
    expect(b.attach(1, 8, VIRTIO_IOMMU_ATTACH_F_BYPASS).status).toBe(S.INVAL);
    expect(b.endpoint(16).resolve(0x1000, 4, DMA_READ)).toBe(-1);
  });

  it('detaches, or moves, an endpoint only when it is alone in its domain', () => {
    const b = crosvm();
    b.attach(1, 8);
    b.attach(1, 16);
    expect(b.detach(1, 8).status).toBe(S.UNSUPP);
    expect(b.attach(2, 8).status).toBe(S.UNSUPP);
    expect(b.detach(7, 16).status).toBe(S.UNSUPP);
    b.attach(3, 16);
    expect(b.dev.state.endpoints.get(16)?.domain?.id).toBe(1);
  });

  it('DETACH ignores the domain field and succeeds for an unattached endpoint; an unknown one is NOENT', () => {
    const b = crosvm();
    b.attach(1, 8);
    expect(b.detach(42, 8).status).toBe(S.OK);
    expect(b.detach(1, 16).status).toBe(S.OK);
    expect(b.detach(1, 99).status).toBe(S.NOENT);
  });

  it('makes every mapping readable, and writable only with WRITE', () => {
    const b = crosvm();
    b.attach(1, 8);
    b.map(1, 0, 0xfff, 0x10_0000, VIRTIO_IOMMU_MAP_F.WRITE);
    b.map(1, 0x1000, 0x1fff, 0x20_0000, 0);
    const ep = b.endpoint(8);
    expect([ep.resolve(0, 4, DMA_READ), ep.resolve(0, 4, DMA_WRITE)]).toEqual([0x10_0000, 0x10_0000]);
    expect([ep.resolve(0x1000, 4, DMA_READ), ep.resolve(0x1000, 4, DMA_WRITE)]).toEqual([0x20_0000, -1]);
  });

  it('checks alignment but not the input range; an unknown type is returned unwritten', () => {
    const b = crosvm({ awBits: 39 });
    b.attach(1, 8);
    expect(b.map(1, 0x800, 0x17ff, 0).status).toBe(S.RANGE);
    expect(b.map(1, 2 ** 40, 2 ** 40 + 0xfff, 0).status).toBe(S.OK);
    expect(b.send(Uint8Array.of(9, 0, 0, 0))).toMatchObject({ usedLen: 0 });
  });
});

describe('profiles', () => {
  it('are frozen tables of named switches', () => {
    for (const p of Object.values(PROFILES)) {
      expect(Object.isFrozen(p)).toBe(true);
      expect(Object.isFrozen(p.features)).toBe(true);
    }
  });
});
