// Assigned (VFIO-like) endpoints: a host IOMMU with its own address width under
// the guest's domain. A guest MAP the host cannot honour fails as it does on a
// real machine (reference §5.6, §9.1: the reason QEMU 9.0 added aw-bits), and
// QEMU 9.1+ tells the guest about it with RESERVED probe regions.
import { describe, expect, it } from 'vitest';
import { VIRTIO_IOMMU_S as S } from '../../abi/virtio-iommu.ts';
import { DMA_READ } from '../../platform/address-space.ts';
import { x86HostIovaRanges } from '../../platform/iommu/host-iommu.ts';
import type { ProfileName } from '../../platform/iommu/profiles.ts';
import { IommuBench } from './iommu-harness.ts';

const HIGH = 2 ** 40;
const GPA = 0x10_0000;

/** A pre-9.0 QEMU machine: aw-bits 64 in the guest, a 39-bit host IOMMU under endpoint 8. */
function assigned(profile: ProfileName, host: { awBits?: number; dmaEntryLimit?: number } = {}, expose?: boolean) {
  const b = new IommuBench({ profile, awBits: 64, bootBypass: false, reservedRegions: ['0xfee00000:0xfeefffff:1'] }, { endpoints: [] });
  const ep = b.endpoint(8, { host: { awBits: 39, ...host }, ...(expose !== undefined && { exposeHostReserved: expose }) });
  expect(b.attach(1, 8).status).toBe(S.OK);
  return { b, ep };
}

describe('a guest MAP outside the host IOMMU', () => {
  it('qemu before 9.1: the MAP succeeds, the host logs vfio_container_dma_map = -22, and the device DMA fails on the host', () => {
    const { b, ep } = assigned('qemu', {}, false);
    expect(b.map(1, HIGH, HIGH + 0xfff, GPA).status).toBe(S.OK);
    const report = b.dev.iommuReport().endpoints[0]!;
    expect(report.host?.failures.map((f) => f.message)).toEqual(['vfio_container_dma_map(ep8, 0x10000000000, 0x1000) = -22 (Invalid argument)']);
    expect(ep.resolve(HIGH, 64, DMA_READ)).toBe(-1);
    // The guest never hears of it: a host fault is not a virtio-iommu fault.
    expect(b.faults()).toEqual([]);
    expect(b.dev.iommuReport().endpoints[0]).toMatchObject({ host: { faults: 1 } });
  });

  it('cloud-hypervisor: DEVERR (with used length 0), the mapping rolled back', () => {
    const { b } = assigned('cloud-hypervisor');
    expect(b.map(1, HIGH, HIGH + 0xfff, GPA)).toMatchObject({ status: S.DEVERR, usedLen: 0 });
    expect(b.dev.state.domains.get(1)?.mappings.size).toBe(0);
  });

  it('spec: RANGE, the closest status, the mapping rolled back', () => {
    const { b } = assigned('spec', {}, false);
    expect(b.map(1, HIGH, HIGH + 0xfff, GPA).status).toBe(S.RANGE);
    expect(b.dev.state.domains.get(1)?.mappings.size).toBe(0);
  });

  it('crosvm: the mapper error ends the request with nothing written', () => {
    const { b } = assigned('crosvm');
    expect(b.map(1, HIGH, HIGH + 0xfff, GPA)).toMatchObject({ status: undefined, usedLen: 0 });
  });

  it('qemu 9.1+: the IOVA is a RESERVED region, so the same DMA faults in the virtio-iommu and the guest hears of it', () => {
    const { b, ep } = assigned('qemu');
    expect(b.map(1, HIGH, HIGH + 0xfff, GPA).status).toBe(S.OK);
    expect(ep.resolve(HIGH, 64, DMA_READ)).toBe(-1);
    expect(b.faults()).toHaveLength(1);
  });

  it('inside the host range everything works end to end', () => {
    const { b, ep } = assigned('qemu');
    expect(b.map(1, 0x8000, 0x8fff, GPA).status).toBe(S.OK);
    expect(ep.resolve(0x8010, 16, DMA_READ)).toBe(GPA + 0x10);
    expect(b.dev.iommuReport().endpoints[0]?.host).toMatchObject({ maps: 1, failures: [] });
  });

  it('past the host DMA entry limit (vfio dma_entry_limit): NOMEM under spec, logged -28 under qemu', () => {
    const { b } = assigned('spec', { dmaEntryLimit: 1 });
    expect(b.map(1, 0x1000, 0x1fff, GPA).status).toBe(S.OK);
    expect(b.map(1, 0x2000, 0x2fff, GPA).status).toBe(S.NOMEM);
    const q = assigned('qemu', { dmaEntryLimit: 1 }).b;
    q.map(1, 0x1000, 0x1fff, GPA);
    expect(q.map(1, 0x2000, 0x2fff, GPA).status).toBe(S.OK);
    expect(q.dev.iommuReport().endpoints[0]?.host?.failures[0]?.errno).toBe(-28);
  });
});

describe('the host IOMMU follows the domain', () => {
  it('ATTACH replays the domain mappings into it, DETACH takes them out', () => {
    const b = new IommuBench({ bootBypass: false }, { endpoints: [16] });
    const ep = b.endpoint(8, { host: { awBits: 48 } });
    b.attach(1, 16);
    b.map(1, 0x1000, 0x1fff, GPA);
    b.map(1, 0x2000, 0x2fff, GPA, 4 | 2); // MMIO: never given to VFIO
    b.attach(1, 8);
    expect(b.dev.iommuReport().endpoints.find((e) => e.id === 8)?.host).toMatchObject({ maps: 1 });
    expect(ep.resolve(0x1000, 4, DMA_READ)).toBe(GPA);
    b.detach(1, 8);
    expect(b.dev.iommuReport().endpoints.find((e) => e.id === 8)?.host).toMatchObject({ unmaps: 1 });
  });
});

describe('host geometry as RESERVED probe regions (QEMU 9.1+)', () => {
  it('probes the complement of the usable ranges, with the MSI property laid over it', () => {
    const b = new IommuBench({ profile: 'qemu', reservedRegions: ['0xfee00000:0xfeefffff:1'] }, { endpoints: [] });
    b.endpoint(8, { host: { awBits: 39, usableRanges: x86HostIovaRanges(39) } });
    expect(b.dev.iommuReport().endpoints[0]?.reservedRegions).toEqual([
      { start: '0xfee00000', end: '0xfeefffff', type: 'msi' },
      { start: '0x8000000000', end: '0xffffffffffffffff', type: 'reserved' },
    ]);
    const r = b.probe(8, 516);
    expect(r.status).toBe(S.OK);
    expect(Buffer.from(r.out.subarray(24, 48)).toString('hex')).toBe('0100' + '1400' + '00' + '000000' + '0000000080000000' + 'ffffffffffffffff');
  });

  it('is a switch: off, only the property regions are probed (cloud-hypervisor and crosvm never do it)', () => {
    const { b } = assigned('qemu', {}, false);
    expect(b.dev.iommuReport().endpoints[0]?.reservedRegions).toEqual([{ start: '0xfee00000', end: '0xfeefffff', type: 'msi' }]);
    expect(assigned('cloud-hypervisor').b.dev.iommuReport().endpoints[0]?.reservedRegions).toHaveLength(1);
  });

  it('spec: a MAP into the host-reserved range is refused before it reaches the host', () => {
    const { b } = assigned('spec', {}, false);
    expect(b.map(1, HIGH, HIGH + 0xfff, GPA).status).toBe(S.RANGE);
    expect(b.dev.iommuReport().endpoints[0]?.host?.failures).toHaveLength(1);
    const { b: b2 } = assigned('spec', {}, true);
    expect(b2.map(1, 2 ** 39, 2 ** 39 + 0xfff, GPA).status).toBe(S.INVAL);
    expect(b2.dev.iommuReport().endpoints[0]?.host?.failures).toHaveLength(0);
  });

  it('crosvm narrows input_range to the assigned devices instead', () => {
    const b = new IommuBench({ profile: 'crosvm' }, { endpoints: [] });
    b.endpoint(8, { host: { awBits: 39 } });
    expect(b.dev.iommuReport().config.inputRange).toEqual(['0x0', '0x7fffffffff']);
  });
});
