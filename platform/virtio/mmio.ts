// virtio-mmio version 2, device side (virtio 1.4 §4.2.2): the register block
// as a bus handler, with QEMU's virtio-mmio quirks where the spec is silent
// (wrong-size register accesses ignored, write-only registers read 0).
import type { AccessSize } from '../../abi/boot.ts';
import { MMIO, VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VERSION } from '../../abi/virtio-mmio.ts';
import type { MmioHandler } from '../bus.ts';
import type { InterruptController } from '../irq.ts';
import type { RingArea } from './queue.ts';
import type { VirtioDeviceModel, VirtioTransport } from './device.ts';

/** QEMU's VIRTIO_MMIO_VENDOR: "QEMU" in little-endian ASCII. */
export const VIRTIO_MMIO_VENDOR_ID = 0x554d4551;
/** The window one virtio-mmio device occupies (QEMU's 0x200 slots). */
export const VIRTIO_MMIO_REGION_SIZE = 0x200;

/** Queue address registers: which area and which half each programs. */
const ADDRESS_REGS: ReadonlyMap<number, readonly [RingArea, boolean]> = new Map([
  [MMIO.queue_desc_low, ['desc', false]],
  [MMIO.queue_desc_high, ['desc', true]],
  [MMIO.queue_driver_low, ['driver', false]],
  [MMIO.queue_driver_high, ['driver', true]],
  [MMIO.queue_device_low, ['device', false]],
  [MMIO.queue_device_high, ['device', true]],
]);

export class VirtioMmioTransport implements VirtioTransport {
  /** InterruptStatus: bits stay set until the driver acknowledges them. */
  interruptStatus = 0;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private queueSel = 0;

  constructor(
    readonly model: VirtioDeviceModel,
    private readonly irq: InterruptController,
    readonly line: number,
  ) {
    model.attach(this);
  }

  signalUsed(): void {
    this.raise(VIRTIO_MMIO_INT_VRING);
  }

  signalConfig(): void {
    this.raise(VIRTIO_MMIO_INT_CONFIG);
  }

  readonly handler: MmioHandler = {
    read: (off, size) => this.read(off, size),
    write: (off, size, value) => this.write(off, size, value),
  };

  private read(off: number, size: AccessSize): number {
    if (off >= VIRTIO_MMIO_CONFIG) return this.model.readConfig(off - VIRTIO_MMIO_CONFIG, size);
    if (size !== 4) return 0;
    const m = this.model;
    const q = m.queues[this.queueSel];
    switch (off) {
      case MMIO.magic:
        return VIRTIO_MMIO_MAGIC;
      case MMIO.version:
        return VIRTIO_MMIO_VERSION;
      case MMIO.device_id:
        return m.deviceId;
      case MMIO.vendor_id:
        return VIRTIO_MMIO_VENDOR_ID;
      case MMIO.device_features:
        return m.deviceFeatureWord(this.deviceFeaturesSel);
      case MMIO.queue_num_max:
        return q ? q.maxSize : 0;
      case MMIO.queue_ready:
        return q?.ready ? 1 : 0;
      case MMIO.interrupt_status:
        return this.interruptStatus;
      case MMIO.status:
        return m.status;
      case MMIO.config_generation:
        return m.configGeneration;
      // No shared memory regions: length and base read as all ones (§4.2.2).
      case MMIO.shm_len_low:
      case MMIO.shm_len_high:
      case MMIO.shm_base_low:
      case MMIO.shm_base_high:
        return 0xffff_ffff;
      default:
        return 0;
    }
  }

  private write(off: number, size: AccessSize, value: number): void {
    if (off >= VIRTIO_MMIO_CONFIG) {
      this.model.writeConfig(off - VIRTIO_MMIO_CONFIG, size, value);
      return;
    }
    if (size !== 4) return;
    const m = this.model;
    const q = m.queues[this.queueSel];
    const area = ADDRESS_REGS.get(off);
    if (area) {
      q?.setAddressWord(area[0], area[1], value);
      return;
    }
    switch (off) {
      case MMIO.device_features_sel:
        this.deviceFeaturesSel = value;
        return;
      case MMIO.driver_features:
        m.setDriverFeatureWord(this.driverFeaturesSel, value);
        return;
      case MMIO.driver_features_sel:
        this.driverFeaturesSel = value;
        return;
      case MMIO.queue_sel:
        this.queueSel = value;
        return;
      case MMIO.queue_num:
        q?.setSize(value);
        return;
      case MMIO.queue_ready:
        if (value === 1) m.enableQueue(this.queueSel);
        else if (value === 0) q?.disable();
        return;
      case MMIO.queue_notify:
        // Without NOTIFICATION_DATA the value is the queue index.
        m.queueNotify(value);
        return;
      case MMIO.interrupt_ack:
        this.interruptStatus &= ~value;
        return;
      case MMIO.status:
        m.setStatus(value);
        if ((value & 0xff) === 0) this.reset();
        return;
    }
  }

  /** Level semantics over an edge-delivering controller: assert the line on every bit that newly goes up. */
  private raise(bit: number): void {
    const fresh = bit & ~this.interruptStatus;
    this.interruptStatus |= bit;
    if (fresh) this.irq.assertLine(this.line);
  }

  private reset(): void {
    this.interruptStatus = 0;
    this.deviceFeaturesSel = this.driverFeaturesSel = this.queueSel = 0;
  }
}
