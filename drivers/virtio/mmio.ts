// virtio-mmio transport, version 2 only (virtio 1.4 §4.2.2-§4.2.3; Linux
// drivers/virtio/virtio_mmio.c): a platform driver for 'virtio-mmio' slots,
// 32-bit registers, one wired interrupt line shared by the config and every queue.
import { hi32, lo32, type Addr } from '../../abi/addr.ts';
import { VECTOR, type AccessSize } from '../../abi/boot.ts';
import { MMIO, VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VERSION } from '../../abi/virtio-mmio.ts';
import type { Driver } from '../../kernel/device.ts';
import type { Kernel } from '../../kernel/kernel.ts';
import type { PlatformDevice } from '../../kernel/platform-bus.ts';
import { VirtioDevice, VirtioError, setVirtioDmaMask, type VirtioBus, type VirtioTransport } from './core.ts';
import { createVirtqueue, type Virtqueue, type VqInfo } from './virtqueue.ts';

export const VIRTIO_MMIO_KIND = 'virtio-mmio';
const LEGACY_VERSION = 1;

class VirtioMmio implements VirtioTransport {
  readonly name = 'virtio-mmio';
  private readonly vector: number;

  constructor(
    private readonly k: Kernel,
    private readonly pdev: PlatformDevice,
  ) {
    this.vector = VECTOR.LINE_BASE + pdev.irq;
  }

  read(off: number): number {
    return this.k.boot.mmio.read(this.pdev.base + off, 4);
  }

  write(off: number, value: number): void {
    this.k.boot.mmio.write(this.pdev.base + off, 4, value);
  }

  getStatus(): number {
    return this.read(MMIO.status);
  }

  setStatus(status: number): void {
    this.write(MMIO.status, status);
  }

  getFeatures(): bigint {
    this.write(MMIO.device_features_sel, 1);
    const hi = this.read(MMIO.device_features);
    this.write(MMIO.device_features_sel, 0);
    return (BigInt(hi) << 32n) | BigInt(this.read(MMIO.device_features));
  }

  setFeatures(features: bigint): void {
    this.write(MMIO.driver_features_sel, 1);
    this.write(MMIO.driver_features, Number(features >> 32n));
    this.write(MMIO.driver_features_sel, 0);
    this.write(MMIO.driver_features, Number(features & 0xffff_ffffn));
  }

  generation(): number {
    return this.read(MMIO.config_generation);
  }

  configRead(off: number, size: AccessSize): number {
    if (off < 0 || VIRTIO_MMIO_CONFIG + off + size > this.pdev.size) throw new VirtioError('EINVAL', `${this.pdev.name}: config read at ${off} outside the window`);
    return this.k.boot.mmio.read(this.pdev.base + VIRTIO_MMIO_CONFIG + off, size);
  }

  /** vm_find_vqs: the line is requested first, as the queues' callbacks hang off it. */
  findVqs(vdev: VirtioDevice, infos: readonly VqInfo[]): Virtqueue[] {
    this.k.irqs.request(this.vector, vdev.name, () => this.interrupt(vdev));
    const vqs: Virtqueue[] = [];
    try {
      for (let i = 0; i < infos.length; i++) vqs.push(this.setupVq(vdev, i, infos[i]!));
    } catch (e) {
      this.teardown(vqs);
      throw e;
    }
    return vqs;
  }

  delVqs(vdev: VirtioDevice): void {
    this.teardown(vdev.vqs);
  }

  notify(vq: Virtqueue): void {
    this.write(MMIO.queue_notify, vq.index);
  }

  /** §4.2.3.2: select, check it is not live, size from QueueNumMax, the three areas, then QueueReady. */
  private setupVq(vdev: VirtioDevice, index: number, info: VqInfo): Virtqueue {
    this.write(MMIO.queue_sel, index);
    if (this.read(MMIO.queue_ready) !== 0) throw new VirtioError('ENOENT', `${vdev.name}: queue ${index} already set up`);
    const max = this.read(MMIO.queue_num_max);
    if (max === 0) throw new VirtioError('ENOENT', `${vdev.name}: queue ${index} does not exist`);
    const vq = createVirtqueue(vdev, index, max, info);
    if (!vq) throw new VirtioError('ENOMEM', `${vdev.name}: no memory for queue ${index} (${max} entries)`);
    this.write(MMIO.queue_num, vq.num);
    this.writeAddr(MMIO.queue_desc_low, MMIO.queue_desc_high, vq.descAddr);
    this.writeAddr(MMIO.queue_driver_low, MMIO.queue_driver_high, vq.availAddr);
    this.writeAddr(MMIO.queue_device_low, MMIO.queue_device_high, vq.usedAddr);
    this.write(MMIO.queue_ready, 1);
    return vq;
  }

  private teardown(vqs: readonly Virtqueue[]): void {
    for (const vq of vqs) {
      this.write(MMIO.queue_sel, vq.index);
      this.write(MMIO.queue_ready, 0);
      if (this.read(MMIO.queue_ready) !== 0) this.k.log.warn(`${vq.vdev.name}: queue ${vq.index} still ready after disable`);
      vq.free();
    }
    this.k.irqs.free(this.vector);
  }

  private writeAddr(lo: number, hi: number, addr: Addr): void {
    this.write(lo, lo32(addr));
    this.write(hi, hi32(addr));
  }

  /** vm_interrupt: read and acknowledge the cause, then config change (bit 1) and used buffers (bit 0). */
  private interrupt(vdev: VirtioDevice): void {
    const status = this.read(MMIO.interrupt_status);
    this.write(MMIO.interrupt_ack, status);
    if (status & VIRTIO_MMIO_INT_CONFIG) vdev.configChanged();
    if (status & VIRTIO_MMIO_INT_VRING) for (const vq of vdev.vqs) vq.interrupt();
  }
}

/** The platform driver: checks the register block, then hands the device to the virtio bus. */
export function virtioMmioDriver(k: Kernel, vbus: VirtioBus): Driver<PlatformDevice> {
  return {
    name: 'virtio-mmio',
    match: (pdev) => pdev.kind === VIRTIO_MMIO_KIND,
    probe(pdev) {
      const read = (off: number) => k.boot.mmio.read(pdev.base + off, 4);
      const magic = read(MMIO.magic);
      if (magic !== VIRTIO_MMIO_MAGIC) throw new VirtioError('ENODEV', `${pdev.name}: Wrong magic value 0x${magic.toString(16).padStart(8, '0')}!`);
      const version = read(MMIO.version);
      if (version === LEGACY_VERSION) throw new VirtioError('ENODEV', `${pdev.name}: legacy virtio-mmio (version 1) is not supported`);
      if (version !== VIRTIO_MMIO_VERSION) throw new VirtioError('ENXIO', `${pdev.name}: Version ${version} not supported!`);
      // Device ID 0 is a placeholder slot with no device behind it.
      const id = read(MMIO.device_id);
      if (id === 0) return false;
      setVirtioDmaMask(k, pdev);
      const vdev = new VirtioDevice(k, vbus, new VirtioMmio(k, pdev), id, pdev);
      pdev.drvdata = vdev;
      vbus.registerDevice(vdev);
      return true;
    },
    remove(pdev) {
      pdev.drvdata = undefined;
    },
  };
}
