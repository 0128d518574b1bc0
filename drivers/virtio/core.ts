// The virtio bus (Linux drivers/virtio/virtio.c): transports register devices,
// the bus binds a driver by device ID and runs the initialisation of virtio 1.4
// §3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK (re-read), driver probe, DRIVER_OK.
import type { AccessSize } from '../../abi/boot.ts';
import { F, STATUS, bit, has, hex64 } from '../../abi/virtio.ts';
import { dmaSetMaskAndCoherent } from '../../dma/api.ts';
import { Bus, Device } from '../../kernel/device.ts';
import type { Kernel } from '../../kernel/kernel.ts';
import type { Virtqueue, VqInfo } from './virtqueue.ts';

export type VirtioErrno = 'ENODEV' | 'ENXIO' | 'ENOENT' | 'ENOMEM' | 'ENOSPC' | 'EBUSY' | 'EINVAL' | 'EIO';

export class VirtioError extends Error {
  constructor(
    readonly code: VirtioErrno,
    message: string,
  ) {
    super(message);
  }
}

/** What the core needs from virtio-mmio and virtio-pci (Linux's virtio_config_ops). */
export interface VirtioTransport {
  readonly name: string;
  getStatus(): number;
  /** Writing 0 starts a reset; the core then waits until the status reads 0. */
  setStatus(status: number): void;
  getFeatures(): bigint;
  setFeatures(features: bigint): void;
  /** The config generation counter. */
  generation(): number;
  /** One access to device-specific configuration; atomic only up to 32 bits. */
  configRead(off: number, size: AccessSize): number;
  /** Sets up one queue per entry of `infos`, in order; throws VirtioError with nothing left set up. */
  findVqs(vdev: VirtioDevice, infos: readonly VqInfo[]): Virtqueue[];
  delVqs(vdev: VirtioDevice): void;
  notify(vq: Virtqueue): void;
}

export interface VirtioDriver {
  readonly name: string;
  readonly deviceId: number;
  /** Device-type feature bits the driver understands; transport bits are the core's business. */
  readonly featureTable: readonly number[];
  /** Throws when the device cannot be driven. No notification may be sent yet: DRIVER_OK comes after. */
  probe(vdev: VirtioDevice): void;
  /** Runs after the device is reset and before its queues are freed. */
  remove(vdev: VirtioDevice): void;
  configChanged?(vdev: VirtioDevice): void;
}

export interface StatusAccess {
  readonly op: 'read' | 'write';
  readonly value: number;
}

/** One device's negotiation, as the run report shows it. */
export interface VirtioDeviceReport {
  readonly device: string;
  readonly transport: string;
  /** The transport's device: a PCI function or a virtio-mmio slot. */
  readonly busDevice: string;
  readonly deviceId: number;
  offered: bigint;
  accepted: bigint;
  readonly status: StatusAccess[];
  readonly errors: string[];
  configChanges: number;
}

/** Ring and transport bits Linux keeps (vring_transport_features); the rest of 28..41 is refused. */
const TRANSPORT_FEATURES = bit(F.INDIRECT_DESC) | bit(F.EVENT_IDX) | bit(F.VERSION_1) | bit(F.ACCESS_PLATFORM);
/**
 * ivory's own knob, not Linux's: features every virtio driver pretends not to
 * know, to play an older driver (e.g. one that predates ACCESS_PLATFORM).
 */
const DROP_FEATURES_PARAM = 'virtio.drop_features';
/** How long a reset may take before the device is given up on. */
const RESET_POLL_MS = 1000;
/** A generation that never settles is a broken (or hostile) device, not a reason to spin forever. */
const MAX_GENERATION_RETRIES = 64;

export class VirtioDevice extends Device {
  /** Negotiated features. */
  features = 0n;
  vqs: readonly Virtqueue[] = [];
  readonly report: VirtioDeviceReport;
  /** The bound driver once DRIVER_OK is set; config-change notifications go to it (virtio_config_enable). */
  private configDriver: VirtioDriver | undefined;

  constructor(
    readonly k: Kernel,
    bus: VirtioBus,
    readonly transport: VirtioTransport,
    readonly id: number,
    /** The transport's device, which does the DMA (Linux's vq->dma_dev = vdev->dev.parent). */
    readonly dmaDev: Device,
  ) {
    super(bus.allocName(), bus as Bus, dmaDev);
    this.report = { device: this.name, transport: transport.name, busDevice: dmaDev.name, deviceId: id, offered: 0n, accepted: 0n, status: [], errors: [], configChanges: 0 };
  }

  getStatus(): number {
    const value = this.transport.getStatus();
    this.report.status.push({ op: 'read', value });
    return value;
  }

  /** virtio_add_status: status bits are only ever added, never cleared, short of a reset. */
  addStatus(bits: number): void {
    this.writeStatus(this.getStatus() | bits);
  }

  /** virtio_reset_device: write 0, then wait until the device reads back 0 (the spec's MUST). */
  reset(): void {
    this.writeStatus(0);
    for (let waited = 0; this.getStatus() !== 0; waited++) {
      if (waited === RESET_POLL_MS) throw new VirtioError('EIO', `${this.name}: device did not reset`);
      msleep(this.k, 1);
    }
  }

  findVqs(infos: readonly VqInfo[]): Virtqueue[] {
    const vqs = this.transport.findVqs(this, infos);
    this.vqs = vqs;
    return vqs;
  }

  delVqs(): void {
    if (this.vqs.length === 0) return;
    this.transport.delVqs(this);
    this.vqs = [];
  }

  configRead(off: number, size: AccessSize): number {
    return this.transport.configRead(off, size);
  }

  /** __virtio_cread_many: repeats `read` until the config generation is the same before and after it. */
  configReadStable<T>(read: () => T): T {
    for (let tries = 0; tries < MAX_GENERATION_RETRIES; tries++) {
      const before = this.transport.generation();
      const value = read();
      if (this.transport.generation() === before) return value;
    }
    throw new VirtioError('EIO', `${this.name}: config generation never settles`);
  }

  /** virtio_config_changed, called from the transport's interrupt handler. */
  configChanged(): void {
    this.report.configChanges++;
    this.k.trace.emit('virtio_config_changed', { dev: this.name });
    if (this.getStatus() & STATUS.DEVICE_NEEDS_RESET) this.fail(`${this.name}: device needs reset`);
    this.configDriver?.configChanged?.(this);
  }

  /** Logs and records an error against this device. */
  fail(message: string): void {
    this.report.errors.push(message);
    this.k.log.err(message);
  }

  /** virtio_dev_probe: any failure ends in FAILED and leaves the device unbound. */
  probe(drv: VirtioDriver): boolean {
    try {
      this.negotiate(drv);
      drv.probe(this);
      // A driver may have set DRIVER_OK itself to use its queues during probe (virtio-iommu does).
      if (!(this.getStatus() & STATUS.DRIVER_OK)) this.addStatus(STATUS.DRIVER_OK);
      this.configDriver = drv;
      return true;
    } catch (e) {
      this.fail(e instanceof Error ? e.message : String(e));
      // No DRIVER_OK yet, so the device has not touched the queues and they can go without a reset.
      this.delVqs();
      this.addStatus(STATUS.FAILED);
      throw e;
    }
  }

  /** virtio_dev_remove: reset first, so the device stops DMA before the driver and the rings let go of memory. */
  remove(drv: VirtioDriver): void {
    this.configDriver = undefined;
    this.reset();
    drv.remove(this);
    this.delVqs();
    this.addStatus(STATUS.ACKNOWLEDGE);
  }

  private writeStatus(value: number): void {
    this.report.status.push({ op: 'write', value });
    this.transport.setStatus(value);
  }

  /** Steps DRIVER to FEATURES_OK: driver ∩ device plus the kept transport bits, then the device's verdict. */
  private negotiate(drv: VirtioDriver): void {
    this.addStatus(STATUS.DRIVER);
    const offered = this.transport.getFeatures();
    this.report.offered = offered;
    // A modern-only driver, as Linux's virtio-mmio v2 and modern virtio-pci.
    if (!has(offered, F.VERSION_1)) throw new VirtioError('ENODEV', `${this.name}: device does not offer VIRTIO_F_VERSION_1`);
    const understood = drv.featureTable.reduce((m, b) => m | bit(b), 0n);
    this.features = offered & (understood | TRANSPORT_FEATURES) & ~this.k.cmdline.u64(DROP_FEATURES_PARAM, 0n);
    this.report.accepted = this.features;
    this.k.trace.emit('virtio_features', { dev: this.name, offered: hex64(offered), accepted: hex64(this.features) });
    this.transport.setFeatures(this.features);
    this.addStatus(STATUS.FEATURES_OK);
    const status = this.getStatus();
    if (!(status & STATUS.FEATURES_OK)) throw new VirtioError('ENODEV', `virtio: device refuses features: ${status.toString(16)}`);
  }
}

export class VirtioBus extends Bus<VirtioDevice> {
  private nextIndex = 0;

  constructor(readonly k: Kernel) {
    super('virtio', (line) => k.log.warn(line));
  }

  /** Wraps a virtio driver so that binding runs the whole initialisation sequence around its probe. */
  registerVirtioDriver(drv: VirtioDriver): void {
    this.registerDriver({
      name: drv.name,
      match: (vdev) => vdev.id === drv.deviceId,
      probe: (vdev) => vdev.probe(drv),
      remove: (vdev) => vdev.remove(drv),
    });
  }

  /** register_virtio_device: reset, ACKNOWLEDGE, then bind. */
  registerDevice(vdev: VirtioDevice): void {
    vdev.reset();
    vdev.addStatus(STATUS.ACKNOWLEDGE);
    this.k.log.info(`${vdev.name}: ${vdev.transport.name} device id ${vdev.id} on ${vdev.dmaDev.name}`);
    this.addDevice(vdev);
  }

  /** Linux names virtio devices virtio0, virtio1, ... in discovery order. */
  allocName(): string {
    return `virtio${this.nextIndex++}`;
  }
}

/** Transports ask for 64-bit DMA and fall back to 32 bits, as Linux's virtio-mmio and virtio-pci do. */
export function setVirtioDmaMask(k: Kernel, dev: Device): void {
  if (dmaSetMaskAndCoherent(dev, 64) || dmaSetMaskAndCoherent(dev, 32)) return;
  k.log.warn(`${dev.name}: Failed to enable 64-bit or 32-bit DMA. Trying to continue, but this might not work.`);
}

function msleep(k: Kernel, ms: number): void {
  let expired = false;
  k.timers.add(ms * 1e6, () => (expired = true));
  k.irqs.waitEvent(() => expired, 'msleep');
}
