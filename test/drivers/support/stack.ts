// Boots the guest virtio stack on a FakeMachine with one in-test device behind
// virtio-mmio or virtio-pci, the way the kernel adds devices: DMA configured first, then bound.
import { ecamOffset } from '../../../abi/pci.ts';
import { registerVirtioDrivers, type VirtioStack } from '../../../drivers/index.ts';
import type { VirtioDevice } from '../../../drivers/virtio/core.ts';
import { enumeratePci, type PciDevice } from '../../../kernel/pci.ts';
import { PlatformDevice } from '../../../kernel/platform-bus.ts';
import { FakeMachine } from './machine.ts';
import { MmioFront, PciFront, VirtioModel, type ModelOptions, type PciOptions } from './virtio-model.ts';

export const MMIO_BASE = 0x0a00_0000;
export const MMIO_IRQ = 5;
const ECAM_BASE = 0xb000_0000;

export interface Booted {
  readonly m: FakeMachine;
  readonly model: VirtioModel;
  readonly stack: VirtioStack;
  /** The virtio device the transport registered, if it got that far. */
  vdev(): VirtioDevice | undefined;
  /** Hot-unplugs the transport device. */
  remove(): void;
}

/** `before` runs after the model exists and before the driver probes it. */
export function bootMmio(opts: ModelOptions, before?: (model: VirtioModel, front: MmioFront) => void): Booted & { readonly pdev: PlatformDevice; readonly front: MmioFront } {
  const m = new FakeMachine();
  const model = new VirtioModel(m, opts);
  const front = new MmioFront(MMIO_BASE, MMIO_IRQ, model);
  m.map(front);
  before?.(model, front);
  const stack = registerVirtioDrivers(m.k);
  const pdev = new PlatformDevice('a000000.virtio_mmio', m.k.platform, 'virtio-mmio', MMIO_BASE, front.size, MMIO_IRQ);
  m.k.platform.addDevice(pdev);
  return { m, model, stack, pdev, front, vdev: () => pdev.drvdata as VirtioDevice | undefined, remove: () => m.k.platform.removeDevice(pdev) };
}

export function bootPci(opts: ModelOptions, pci: PciOptions, before?: (model: VirtioModel) => void): Booted & { readonly pdev: PciDevice } {
  const m = new FakeMachine();
  const model = new VirtioModel(m, opts);
  new PciFront(model, ECAM_BASE + ecamOffset(0, 1, 0), pci);
  before?.(model);
  const stack = registerVirtioDrivers(m.k);
  const [pdev] = enumeratePci(m.k, { segment: 0, ecam: { base: ECAM_BASE, size: 0x10_0000 }, busStart: 0, busEnd: 0, mmio32: { base: 0xe000_0000, size: 0x1000_0000 } });
  m.k.pci.addDevice(pdev!);
  return { m, model, stack, pdev: pdev!, vdev: () => pdev!.drvdata as VirtioDevice | undefined, remove: () => m.k.pci.removeDevice(pdev!) };
}

/** virtio_blk_config bytes (virtio 1.4 §5.2.4), spec offsets written out. */
export function blkConfig(capacity: bigint, f: { sizeMax?: number; segMax?: number; blkSize?: number } = {}): Uint8Array {
  const b = new Uint8Array(60);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, capacity, true);
  dv.setUint32(8, f.sizeMax ?? 0, true);
  dv.setUint32(12, f.segMax ?? 0, true);
  dv.setUint32(20, f.blkSize ?? 0, true);
  return b;
}
