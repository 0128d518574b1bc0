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
