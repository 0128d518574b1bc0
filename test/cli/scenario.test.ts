import { describe, expect, it } from 'vitest';
import { parseScenario, parseSize } from '../../cli/scenario.ts';

describe('scenario files', () => {
  it('fills defaults', () => {
    const s = parseScenario({ devices: [{ type: 'virtio-blk' }] });
    expect(s.machine.preset).toBe('q35');
    expect(s.machine.ramBytes).toBe(256 * 2 ** 20);
    expect(s.machine.devices[0]).toMatchObject({ type: 'virtio-blk', transport: 'pci', iommuPlatform: false, queueSize: 256 });
    expect(s.workload.seed).toBe(1);
  });

  it('parses sizes', () => {
    expect(parseSize('x', '64K')).toBe(65536);
    expect(parseSize('x', '256MiB')).toBe(256 * 2 ** 20);
    expect(parseSize('x', '0x1000')).toBe(4096);
    expect(() => parseSize('x', '12 parsecs')).toThrow('x: expected a size');
  });

  it.each([
    [{ devices: [{ type: 'virtio-blk', transport: 'usb' }] }, 'devices[0].transport: expected one of pci, mmio, got "usb"'],
    [{ devices: [{ type: 'virtio-gpu' }] }, 'devices[0].type: expected one of virtio-blk, virtio-rng, got "virtio-gpu"'],
    [{ devices: [{ type: 'virtio-blk', queue_size: 100 }] }, 'devices[0].queue_size: must be a power of two, got 100'],
    [{ devices: [{ type: 'virtio-blk', iommu_platfrom: true }] }, 'devices[0].iommu_platfrom: unknown field'],
    [{ machine: { ram: '1M' } }, 'machine.ram: must be at least 16M and a multiple of 4K'],
    [{ machine: { preset: 'pc' } }, 'machine.preset: expected one of q35, virt, got "pc"'],
    [{ workload: { disk: { bytes: 1000 } } }, 'workload.disk.bytes: must be a non-zero multiple of 512'],
    [{ devices: [{ type: 'virtio-rng', transport: 'mmio', disable_legacy: false }] }, 'devices[0].disable_legacy: applies to PCI devices only'],
    [[], 'scenario: expected a mapping, got []'],
  ])('rejects %j with one line naming the field', (doc, message) => {
    expect(() => parseScenario(doc)).toThrow(message);
  });
});

describe('the iommu section', () => {
  it('takes the preset aw-bits default and QEMU-style reserved regions', () => {
    const s = parseScenario({ machine: { preset: 'q35' }, iommu: { reserved_regions: ['0xfee00000:0xfeefffff:1', { start: '0x100000000', end: '0x1ffffffff', type: 'reserved' }] } });
    expect(s.machine.iommu).toMatchObject({ transport: 'pci', profile: 'spec', awBits: 39, features: {} });
    expect(s.machine.iommu!.granule).toBeUndefined(); // from the profile
    expect(s.machine.iommu!.reservedRegions).toEqual([
      { start: 0xfee00000n, end: 0xfeefffffn, type: 'msi' },
      { start: 0x100000000n, end: 0x1ffffffffn, type: 'reserved' },
    ]);
    expect(parseScenario({ machine: { preset: 'virt' }, iommu: {} }).machine.iommu!.awBits).toBe(48);
  });

  it('parses assigned endpoints', () => {
    const s = parseScenario({ iommu: {}, devices: [{ type: 'virtio-blk', host_iommu: { aw_bits: 39, usable_ranges: [{ start: 0, end: '0x7fffffffff' }] } }] });
    expect(s.machine.devices[0]!.hostIommu).toEqual({ awBits: 39, usableRanges: [{ start: 0n, end: 0x7f_ffff_ffffn }], exposeReserved: false });
  });

  it.each([
    [{ iommu: { profile: 'xen' } }, 'iommu.profile: expected one of spec, qemu, cloud-hypervisor, crosvm, got "xen"'],
    [{ iommu: { aw_bits: 70 } }, 'iommu.aw_bits: expected an integer from 32 to 64, got 70'],
    [{ iommu: { reserved_regions: ['0xfee00000:0xfeefffff:2'] } }, 'iommu.reserved_regions[0]: reserved region "0xfee00000:0xfeefffff:2" has an invalid type (0 reserved, 1 msi)'],
    [{ iommu: { reserved_regions: ['0x2000:0x1000:0'] } }, 'iommu.reserved_regions[0]: reserved region "0x2000:0x1000:0": high is below low'],
    [{ iommu: { reserved_regions: [{ start: '0x2000', end: '0x1000', type: 'msi' }] } }, 'iommu.reserved_regions[0].end: must not be below start'],
    [{ iommu: { features: { teleport: true } } }, 'iommu.features.teleport: unknown field'],
    [{ iommu: { domain_range: { start: 10, end: 5 } } }, 'iommu.domain_range.end: must not be below start'],
    [{ devices: [{ type: 'virtio-blk', host_iommu: { aw_bits: 39, usable_ranges: [{ start: 'zero', end: 1 }] } }] }, 'devices[0].host_iommu.usable_ranges[0].start: expected a 64-bit value'],
  ])('rejects %j with one line naming the field', (doc, message) => {
    expect(() => parseScenario(doc)).toThrow(message);
  });
});
