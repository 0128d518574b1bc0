// How the machine builder puts a virtio device on the machine: the device
// model for a DeviceConfig, on a virtio-pci function in a slot of the host
// bridge or in a virtio-mmio window with its wired line (QEMU's -device virtio-*-pci / virtio-*-device).
import { virtioMmioName } from '../../abi/firmware.ts';
import type { AddressSpace } from '../address-space.ts';
import type { MmioBus } from '../bus.ts';
import type { DeviceConfig } from '../config.ts';
import type { EventLoop } from '../events.ts';
import type { InterruptController } from '../irq.ts';
import type { GuestMemory } from '../memory.ts';
import type { PciHostBridge } from '../pci/host-bridge.ts';
import type { HostTrace } from '../trace.ts';
import { VirtioBlk } from '../devices/blk.ts';
import { VirtioRng } from '../devices/rng.ts';
import type { DeviceContext, VirtioDeviceModel, VirtioDeviceReport } from './device.ts';
import { VIRTIO_MMIO_REGION_SIZE, VirtioMmioTransport } from './mmio.ts';
import { type VirtioPciOptions, VirtioPciTransport } from './pci.ts';

/** What attaching needs from the machine. */
export interface MachineParts {
  readonly events: EventLoop;
  readonly trace: HostTrace;
  readonly bus: MmioBus;
  readonly mem: GuestMemory;
  readonly irq: InterruptController;
  readonly pciHost: PciHostBridge;
  /**
   * The DMA view the machine gives a new device at `where`: guest-physical, or
   * its endpoint behind the IOMMU, with the hook that switches the endpoint
   * to guest-physical when the device's driver does not accept ACCESS_PLATFORM.
   */
  endpointFor(name: string, cfg: DeviceConfig, where: Placement): { space: AddressSpace; featuresFinal?: (features: bigint) => void };
}

export type Placement = { readonly kind: 'pci'; readonly slot: number } | { readonly kind: 'mmio'; readonly base: number; readonly size: number; readonly irq: number };

export interface AttachedDevice {
  readonly name: string;
  readonly model: VirtioDeviceModel;
  readonly transport: VirtioPciTransport | VirtioMmioTransport;
  /** PCI BDF (0000:00:01.0) or virtio-mmio base address. */
  readonly location: string;
  report(): VirtioDeviceReport & { readonly transport: string; readonly location: string };
}

/** The device model a scenario's DeviceConfig describes. */
export function createVirtioDevice(cfg: DeviceConfig, ctx: DeviceContext): VirtioDeviceModel {
  switch (cfg.type) {
    case 'virtio-blk':
      return new VirtioBlk(ctx, cfg);
    case 'virtio-rng':
      return new VirtioRng(ctx, cfg);
  }
}

/** Maps a device into a virtio-mmio window; it interrupts on wired `line`. */
export function createVirtioMmio(model: VirtioDeviceModel, bus: MmioBus, base: number, irq: InterruptController, line: number): VirtioMmioTransport {
  const t = new VirtioMmioTransport(model, irq, line);
  bus.map(base, VIRTIO_MMIO_REGION_SIZE, model.name, t.handler);
  return t;
}

/** Plugs a device in as a virtio-pci function; returns the transport and the function's BDF. */
export function createVirtioPci(model: VirtioDeviceModel, host: PciHostBridge, slot: number, opts: VirtioPciOptions): { transport: VirtioPciTransport; bdf: string } {
  const transport = new VirtioPciTransport(model, opts);
  return { transport, bdf: host.plug(slot, transport.fn) };
}

/** Builds the device for `cfg` and places it as `where` says. The `index`th device is named e.g. virtio-blk.0. */
export function attachVirtioDevice(m: MachineParts, cfg: DeviceConfig, index: number, where: Placement): AttachedDevice {
  const name = `${cfg.type}.${index}`;
  const model = createVirtioDevice(cfg, { name, mem: m.mem, events: m.events, trace: m.trace, ...m.endpointFor(name, cfg, where) });
  return placeVirtioDevice(m, model, where, cfg.disableLegacy);
}

/** Puts a device model on its transport: a virtio-pci function in a slot, or a virtio-mmio window with its line. */
export function placeVirtioDevice(m: MachineParts, model: VirtioDeviceModel, where: Placement, disableLegacy = true): AttachedDevice {
  let transport: VirtioPciTransport | VirtioMmioTransport;
  let location: string;
  if (where.kind === 'pci') {
    ({ transport, bdf: location } = createVirtioPci(model, m.pciHost, where.slot, { irq: m.irq, disableLegacy }));
  } else {
    transport = createVirtioMmio(model, m.bus, where.base, m.irq, where.irq);
    location = virtioMmioName(where.base);
  }
  return {
    name: model.name,
    model,
    transport,
    location,
    report: () => ({ ...model.report(), transport: where.kind, location }),
  };
}
