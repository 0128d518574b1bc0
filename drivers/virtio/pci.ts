// Modern virtio-pci transport (virtio 1.4 §4.1; Linux drivers/virtio/virtio_pci_modern*.c):
// vendor capabilities locate the common, notify and device config structures in
// BARs. MSI-X only: one vector for config plus one per queue, else one shared by the queues.
import { hi32, lo32, type Addr } from '../../abi/addr.ts';
import type { AccessSize } from '../../abi/boot.ts';
import { PCI_CAP_ID } from '../../abi/pci.ts';
import {
  COMMON,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_CAP,
  VIRTIO_PCI_DEVICE_ID_BASE,
  VIRTIO_PCI_VENDOR_ID,
  VirtioPciCap,
  VirtioPciNotifyCap,
} from '../../abi/virtio-pci.ts';
import type { Driver } from '../../kernel/device.ts';
import type { Kernel } from '../../kernel/kernel.ts';
import type { PciDevice } from '../../kernel/pci.ts';
import { VirtioDevice, VirtioError, setVirtioDmaMask, type VirtioBus, type VirtioTransport } from './core.ts';
import { createVirtqueue, type Virtqueue, type VqInfo } from './virtqueue.ts';

/** Transitional functions use 0x1000-0x103f; modern ones 0x1040 + virtio device ID. */
const VIRTIO_PCI_DEVICE_ID_FIRST = 0x1000;
const VIRTIO_PCI_DEVICE_ID_LAST = VIRTIO_PCI_DEVICE_ID_BASE + 0x3f;

/** A transitional function names its virtio type in its subsystem ID (virtio 1.4 §4.1.2.1), as Linux reads it. */
const virtioId = (pdev: PciDevice): number => (pdev.deviceId < VIRTIO_PCI_DEVICE_ID_BASE ? pdev.subsystemId : pdev.deviceId - VIRTIO_PCI_DEVICE_ID_BASE);
/** The virtio 1.0 common structure ends after queue_device; later fields are optional. */
const COMMON_CFG_MIN_BYTES = COMMON.queue_device_hi + 4;
/** MSI-X table entry for configuration changes; queues use the entries after it. */
const CONFIG_ENTRY = 0;
/** A notification is a 16-bit write of the queue index (no NOTIFICATION_DATA). */
const NOTIFY_BYTES = 2;

/** A configuration structure found through a vendor capability. */
interface VirtioCap {
  /** Offset of the capability in config space. */
  readonly cap: number;
  readonly addr: number;
  readonly length: number;
}

/**
 * virtio_pci_find_capability for every type at once: the first usable
 * capability of each cfg_type wins (list order is the device's preference).
 * A capability pointing at no BAR, or past its end, is ignored.
 */
function findCaps(k: Kernel, pdev: PciDevice): Map<number, VirtioCap> {
  const found = new Map<number, VirtioCap>();
  for (const { id, offset: cap } of pdev.caps) {
    if (id !== PCI_CAP_ID.VNDR) continue;
    const type = pdev.cfgRead(cap + VirtioPciCap.off.cfg_type, 1);
    if (found.has(type)) continue;
    const barNr = pdev.cfgRead(cap + VirtioPciCap.off.bar, 1);
    const offset = pdev.cfgRead(cap + VirtioPciCap.off.offset, 4);
    const length = pdev.cfgRead(cap + VirtioPciCap.off.length, 4);
    const bar = pdev.bar(barNr);
    if (!bar || offset + length > bar.size) {
      k.log.warn(`${pdev.name}: virtio capability type ${type} at 0x${cap.toString(16)} outside BAR ${barNr}, ignored`);
      continue;
    }
    found.set(type, { cap, addr: bar.addr + offset, length });
  }
  return found;
}

class VirtioPciModern implements VirtioTransport {
  readonly name = 'virtio-pci';
  private readonly notifyAddrs: number[] = [];
  private vectorPerQueue = false;

  constructor(
    private readonly k: Kernel,
    private readonly pdev: PciDevice,
    private readonly common: VirtioCap,
    private readonly notifyCap: VirtioCap,
    private readonly notifyMultiplier: number,
    private readonly device: VirtioCap | undefined,
  ) {}

  getStatus(): number {
    return this.read(COMMON.device_status, 1);
  }

  setStatus(status: number): void {
    this.write(COMMON.device_status, 1, status);
  }

  getFeatures(): bigint {
    this.write(COMMON.device_feature_select, 4, 0);
    const lo = this.read(COMMON.device_feature, 4);
    this.write(COMMON.device_feature_select, 4, 1);
    return (BigInt(this.read(COMMON.device_feature, 4)) << 32n) | BigInt(lo);
  }

  setFeatures(features: bigint): void {
    this.write(COMMON.driver_feature_select, 4, 0);
    this.write(COMMON.driver_feature, 4, Number(features & 0xffff_ffffn));
    this.write(COMMON.driver_feature_select, 4, 1);
    this.write(COMMON.driver_feature, 4, Number(features >> 32n));
  }

  generation(): number {
    return this.read(COMMON.config_generation, 1);
  }

  configRead(off: number, size: AccessSize): number {
    if (!this.device || off < 0 || off + size > this.device.length) throw new VirtioError('EINVAL', `${this.pdev.name}: config read at ${off} outside the device structure`);
    return this.k.boot.mmio.read(this.device.addr + off, size);
  }

  /** vp_find_vqs_msix: vectors first, then each queue, and queue_enable only once all are set up. */
  findVqs(vdev: VirtioDevice, infos: readonly VqInfo[]): Virtqueue[] {
    const wanted = 1 + infos.length;
    const vectors = this.pdev.enableMsix(wanted, vdev.name, (entry) => this.interrupt(vdev, entry));
    if (vectors.length < 2) {
      this.pdev.disableMsix();
      throw new VirtioError('ENODEV', `${vdev.name}: needs 2 MSI-X vectors, got ${vectors.length}`);
    }
    this.vectorPerQueue = vectors.length >= wanted;
    const vqs: Virtqueue[] = [];
    try {
      this.setVector(COMMON.config_msix_vector, CONFIG_ENTRY);
      for (let i = 0; i < infos.length; i++) vqs.push(this.setupVq(vdev, i, infos[i]!, this.vectorPerQueue ? 1 + i : 1));
      for (const vq of vqs) {
        this.write(COMMON.queue_select, 2, vq.index);
        this.write(COMMON.queue_enable, 2, 1);
      }
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
    this.k.boot.mmio.write(this.notifyAddrs[vq.index]!, NOTIFY_BYTES, vq.index);
  }

  private setupVq(vdev: VirtioDevice, index: number, info: VqInfo, entry: number): Virtqueue {
    if (index >= this.read(COMMON.num_queues, 2)) throw new VirtioError('ENOENT', `${vdev.name}: queue ${index} beyond num_queues`);
    this.write(COMMON.queue_select, 2, index);
    const max = this.read(COMMON.queue_size, 2);
    if (max === 0 || this.read(COMMON.queue_enable, 2) !== 0) throw new VirtioError('ENOENT', `${vdev.name}: queue ${index} unavailable`);
    const vq = createVirtqueue(vdev, index, max, info);
    if (!vq) throw new VirtioError('ENOMEM', `${vdev.name}: no memory for queue ${index} (${max} entries)`);
    try {
      this.write(COMMON.queue_size, 2, vq.num);
      this.writeAddr(COMMON.queue_desc_lo, vq.descAddr);
      this.writeAddr(COMMON.queue_driver_lo, vq.availAddr);
      this.writeAddr(COMMON.queue_device_lo, vq.usedAddr);
      this.setVector(COMMON.queue_msix_vector, entry);
      const off = this.read(COMMON.queue_notify_off, 2) * this.notifyMultiplier;
      if (off + NOTIFY_BYTES > this.notifyCap.length) throw new VirtioError('EINVAL', `${vdev.name}: queue ${index} notify offset 0x${off.toString(16)} outside the notify structure`);
      this.notifyAddrs[index] = this.notifyCap.addr + off;
    } catch (e) {
      vq.free();
      throw e;
    }
    return vq;
  }

  /** Queues cannot be disabled short of a reset: detach their vectors and free the rings (vp_del_vqs). */
  private teardown(vqs: readonly Virtqueue[]): void {
    for (const vq of vqs) {
      this.write(COMMON.queue_select, 2, vq.index);
      this.write(COMMON.queue_msix_vector, 2, VIRTIO_MSI_NO_VECTOR);
      vq.free();
    }
    this.write(COMMON.config_msix_vector, 2, VIRTIO_MSI_NO_VECTOR);
    this.pdev.disableMsix();
  }

  /** The device answers VIRTIO_MSI_NO_VECTOR when it could not take the vector (Linux: -EBUSY). */
  private setVector(off: number, entry: number): void {
    this.write(off, 2, entry);
    if (this.read(off, 2) === VIRTIO_MSI_NO_VECTOR) throw new VirtioError('EBUSY', `${this.pdev.name}: MSI-X entry ${entry} refused`);
  }

  private interrupt(vdev: VirtioDevice, entry: number): void {
    if (entry === CONFIG_ENTRY) vdev.configChanged();
    else if (this.vectorPerQueue) vdev.vqs[entry - 1]?.interrupt();
    else for (const vq of vdev.vqs) vq.interrupt();
  }

  private read(off: number, size: AccessSize): number {
    return this.k.boot.mmio.read(this.common.addr + off, size);
  }

  private write(off: number, size: AccessSize, value: number): void {
    this.k.boot.mmio.write(this.common.addr + off, size, value);
  }

  /** 64-bit fields are written as two 32-bit halves, low word first. */
  private writeAddr(loOff: number, addr: Addr): void {
    this.write(loOff, 4, lo32(addr));
    this.write(loOff + 4, 4, hi32(addr));
  }
}

/** The PCI driver: finds the capabilities, enables the function, then hands the device to the virtio bus. */
export function virtioPciDriver(k: Kernel, vbus: VirtioBus): Driver<PciDevice> {
  return {
    name: 'virtio-pci',
    match: (pdev) => pdev.vendor === VIRTIO_PCI_VENDOR_ID && pdev.deviceId >= VIRTIO_PCI_DEVICE_ID_FIRST && pdev.deviceId <= VIRTIO_PCI_DEVICE_ID_LAST,
    probe(pdev) {
      const caps = findCaps(k, pdev);
      const common = caps.get(VIRTIO_PCI_CAP.COMMON_CFG);
      const notify = caps.get(VIRTIO_PCI_CAP.NOTIFY_CFG);
      if (!common || common.length < COMMON_CFG_MIN_BYTES) throw new VirtioError('ENODEV', `${pdev.name}: no usable common config capability, leaving for legacy driver`);
      if (!notify) throw new VirtioError('ENODEV', `${pdev.name}: no notify capability`);
      // Without MSI-X we would need INTx and the ISR; ivory drives modern devices through MSI-X only.
      if (!pdev.caps.some((c) => c.id === PCI_CAP_ID.MSIX)) throw new VirtioError('ENODEV', `${pdev.name}: no MSI-X capability (INTx is not supported)`);
      pdev.enable();
      setVirtioDmaMask(k, pdev);
      const multiplier = pdev.cfgRead(notify.cap + VirtioPciNotifyCap.off.notify_off_multiplier, 4);
      const transport = new VirtioPciModern(k, pdev, common, notify, multiplier, caps.get(VIRTIO_PCI_CAP.DEVICE_CFG));
      const vdev = new VirtioDevice(k, vbus, transport, virtioId(pdev), pdev);
      pdev.drvdata = vdev;
      vbus.registerDevice(vdev);
      return true;
    },
    remove(pdev) {
      pdev.drvdata = undefined;
      pdev.disable();
    },
  };
}
