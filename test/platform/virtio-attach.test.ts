import { describe, expect, it } from 'vitest';
import { PCI_CFG } from '../../abi/pci.ts';
import { MMIO, VIRTIO_MMIO_MAGIC } from '../../abi/virtio-mmio.ts';
import { DEVICE_DEFAULTS, type DeviceConfig } from '../../platform/config.ts';
import { VirtioBlk } from '../../platform/devices/blk.ts';
import { VirtioRng } from '../../platform/devices/rng.ts';
import { PciHostBridge } from '../../platform/pci/host-bridge.ts';
import { attachVirtioDevice, type MachineParts } from '../../platform/virtio/attach.ts';
import { VirtioMmioTransport } from '../../platform/virtio/mmio.ts';
import { VirtioPciTransport } from '../../platform/virtio/pci.ts';
import { Host } from './virtio-harness.ts';

function machine(): MachineParts & { names: string[] } {
  const h = new Host();
  const names: string[] = [];
  const pciHost = new PciHostBridge(h.bus, { segment: 0, ecam: { base: 0xb000_0000, size: 2 ** 24 }, busStart: 0, busEnd: 15, mmio32: { base: 0xc000_0000, size: 2 ** 28 } });
  return {
    events: h.events,
    trace: h.trace,
    bus: h.bus,
    mem: h.mem,
    irq: h.irq,
    pciHost,
    names,
    endpointFor: (name) => {
      names.push(name);
      return { space: h.space };
    },
  };
}

const cfg = (over: Partial<DeviceConfig>): DeviceConfig => ({ ...DEVICE_DEFAULTS, type: 'virtio-blk', transport: 'pci', seed: 1, ...over });

describe('attachVirtioDevice', () => {
  it('builds the model a DeviceConfig names and plugs it into a PCI slot', () => {
    const m = machine();
    const d = attachVirtioDevice(m, cfg({ capacity: 2 ** 20, readOnly: true, queueSize: 64 }), 0, { kind: 'pci', slot: 2 });
    expect(d.model).toBeInstanceOf(VirtioBlk);
    expect(d.transport).toBeInstanceOf(VirtioPciTransport);
    expect([d.name, d.location, m.names]).toEqual(['virtio-blk.0', '0000:00:02.0', ['virtio-blk.0']]);
    expect(m.bus.read(0xb000_0000 + 2 * 0x8000 + PCI_CFG.device_id, 2)).toBe(0x1042);
    expect(d.model.queues[0]!.maxSize).toBe(64);
    expect((d.model as VirtioBlk).readOnly).toBe(true);
    expect(d.report()).toMatchObject({ name: 'virtio-blk.0', device: 'virtio-blk', transport: 'pci', location: '0000:00:02.0' });
  });

  it('maps a virtio-mmio device at its window with its line', () => {
    const m = machine();
    const d = attachVirtioDevice(m, cfg({ type: 'virtio-rng', transport: 'mmio' }), 3, { kind: 'mmio', base: 0xfeb0_0600, size: 0x200, irq: 19 });
    expect(d.model).toBeInstanceOf(VirtioRng);
    expect((d.transport as VirtioMmioTransport).line).toBe(19);
    expect(m.bus.read(0xfeb0_0600 + MMIO.magic, 4)).toBe(VIRTIO_MMIO_MAGIC);
    expect(d.location).toBe('feb00600.virtio_mmio');
  });
});
