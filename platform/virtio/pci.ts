// Modern virtio-pci, device side (virtio 1.4 §4.1), laid out as QEMU's
// virtio-pci: MSI-X table and PBA in BAR 1, and a 64-bit BAR 4 holding common
// config, ISR, device config and notify regions, each located by a vendor capability.
import type { AccessSize } from '../../abi/boot.ts';
import { PCI_CAP_ID, PCI_CFG, PCI_COMMAND } from '../../abi/pci.ts';
import { DEVICE_ID } from '../../abi/virtio.ts';
import { COMMON, VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_CAP, VIRTIO_PCI_DEVICE_ID_BASE, VIRTIO_PCI_ISR, VIRTIO_PCI_VENDOR_ID, VirtioPciCap, VirtioPciNotifyCap } from '../../abi/virtio-pci.ts';
import type { MmioHandler } from '../bus.ts';
import type { InterruptController } from '../irq.ts';
import { Msix, PciFunction } from '../pci/function.ts';
import type { RingArea } from './queue.ts';
import type { VirtioDeviceModel, VirtioTransport } from './device.ts';

export const VIRTIO_PCI_MSIX_BAR = 1;
export const VIRTIO_PCI_MODERN_BAR = 4;
/** BAR 4 layout, as QEMU's virtio-pci modern regions: 4 KiB each. */
export const VIRTIO_PCI_REGION = Object.freeze({ COMMON: 0x0000, ISR: 0x1000, DEVICE: 0x2000, NOTIFY: 0x3000, SIZE: 0x1000 });
const MODERN_BAR_SIZE = 0x4000;
/** Each queue notifies at notify + 4 * queue_notify_off, and queue_notify_off is the queue index. */
export const VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER = 4;
/** QEMU's PCI_SUBDEVICE_ID_QEMU, used as the subsystem ID of modern virtio functions. */
const SUBSYSTEM_ID_QEMU = 0x1100;
const INTERRUPT_PIN_INTA = 1;

/** Class codes QEMU gives each virtio-pci device (class << 16 | subclass << 8 | prog-if). */
const CLASS_CODE: Readonly<Record<number, number>> = {
  [DEVICE_ID.NET]: 0x020000,
  [DEVICE_ID.BLOCK]: 0x010000,
  [DEVICE_ID.CONSOLE]: 0x078000,
  [DEVICE_ID.ENTROPY]: 0x00ff00,
  [DEVICE_ID.IOMMU]: 0x088000,
};
/** Transitional (0x1000-0x103f) device IDs; such a function names its virtio type in its subsystem ID. */
const TRANSITIONAL_DEVICE_ID: Readonly<Record<number, number>> = {
  [DEVICE_ID.NET]: 0x1000,
  [DEVICE_ID.BLOCK]: 0x1001,
  [DEVICE_ID.CONSOLE]: 0x1003,
  [DEVICE_ID.ENTROPY]: 0x1005,
};

export interface VirtioPciOptions {
  readonly irq: InterruptController;
  /** MSI-X table size. Default: one vector per queue plus one for config, as QEMU's vectors=. */
  readonly msixVectors?: number;
  /** Wired line INTA# is routed to; without one INTx is not delivered. */
  readonly intxLine?: number;
  /** false makes the function transitional (0x1000 + n IDs, revision 0); no legacy I/O BAR is modelled. */
  readonly disableLegacy?: boolean;
  /** Override the class code, as QEMU's virtio-blk-pci class= (0x010000 SCSI storage or 0x018000 other storage). */
  readonly classCode?: number;
}

const ADDRESS_FIELDS: ReadonlyMap<number, readonly [RingArea, boolean]> = new Map([
  [COMMON.queue_desc_lo, ['desc', false]],
  [COMMON.queue_desc_hi, ['desc', true]],
  [COMMON.queue_driver_lo, ['driver', false]],
  [COMMON.queue_driver_hi, ['driver', true]],
  [COMMON.queue_device_lo, ['device', false]],
  [COMMON.queue_device_hi, ['device', true]],
]);

export class VirtioPciTransport implements VirtioTransport {
  readonly fn: PciFunction;
  readonly msix: Msix;
  /** ISR status: used only without MSI-X; a read returns and clears it. */
  isr = 0;
  private readonly irq: InterruptController;
  private readonly intxLine: number | undefined;
  private deviceFeatureSelect = 0;
  private driverFeatureSelect = 0;
  private queueSelect = 0;
  private configVector = VIRTIO_MSI_NO_VECTOR;
  private readonly queueVectors: number[];

  constructor(
    readonly model: VirtioDeviceModel,
    opts: VirtioPciOptions,
  ) {
    this.irq = opts.irq;
    this.intxLine = opts.intxLine;
    const id = model.deviceId;
    const modern = opts.disableLegacy ?? true;
    const transitionalId = TRANSITIONAL_DEVICE_ID[id];
    if (!modern && transitionalId === undefined) throw new Error(`${model.name}: virtio device ${id} has no transitional PCI ID`);
    this.fn = new PciFunction({
      vendorId: VIRTIO_PCI_VENDOR_ID,
      deviceId: modern ? VIRTIO_PCI_DEVICE_ID_BASE + id : transitionalId!,
      revision: modern ? 1 : 0,
      classCode: opts.classCode ?? CLASS_CODE[id] ?? 0x00ff00,
      subsystemVendorId: VIRTIO_PCI_VENDOR_ID,
      subsystemId: modern ? SUBSYSTEM_ID_QEMU : id,
    });
    this.fn.cfg[PCI_CFG.interrupt_pin] = INTERRUPT_PIN_INTA;
    if (opts.intxLine !== undefined) this.fn.cfg[PCI_CFG.interrupt_line] = opts.intxLine;
    this.queueVectors = new Array<number>(model.queues.length).fill(VIRTIO_MSI_NO_VECTOR);

    this.addCap(VIRTIO_PCI_CAP.COMMON_CFG, VIRTIO_PCI_REGION.COMMON);
    this.addCap(VIRTIO_PCI_CAP.ISR_CFG, VIRTIO_PCI_REGION.ISR);
    this.addCap(VIRTIO_PCI_CAP.DEVICE_CFG, VIRTIO_PCI_REGION.DEVICE);
    this.fn.addCapability(
      VirtioPciNotifyCap.encode({
        cap_vndr: PCI_CAP_ID.VNDR,
        cap_len: VirtioPciNotifyCap.span,
        cfg_type: VIRTIO_PCI_CAP.NOTIFY_CFG,
        bar: VIRTIO_PCI_MODERN_BAR,
        offset: VIRTIO_PCI_REGION.NOTIFY,
        length: VIRTIO_PCI_REGION.SIZE,
        notify_off_multiplier: VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER,
      }),
    );
    // MSI messages are posted writes through the same address space as the device's DMA.
    this.msix = new Msix(this.fn, opts.msixVectors ?? model.queues.length + 1, VIRTIO_PCI_MSIX_BAR, () => model.space);
    this.fn.setBar(VIRTIO_PCI_MSIX_BAR, { size: this.msix.barSize, is64: false, name: 'msix', handler: this.msix.handler });
    this.fn.setBar(VIRTIO_PCI_MODERN_BAR, { size: MODERN_BAR_SIZE, is64: true, name: 'virtio-pci', handler: this.bar4 });
    model.attach(this);
  }

  signalUsed(queue: number): void {
    this.interrupt(this.queueVectors[queue] ?? VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_ISR.QUEUE);
  }

  signalConfig(): void {
    this.interrupt(this.configVector, VIRTIO_PCI_ISR.CONFIG);
  }

  private readonly bar4: MmioHandler = {
    read: (off, size) => {
      const R = VIRTIO_PCI_REGION;
      if (off < R.ISR) return (this.commonRead(off) & sizeMask(size)) >>> 0;
      if (off < R.DEVICE) return off === R.ISR ? this.readIsr() : 0;
      if (off < R.NOTIFY) return this.model.readConfig(off - R.DEVICE, size);
      return 0;
    },
    write: (off, size, value) => {
      const R = VIRTIO_PCI_REGION;
      if (off < R.ISR) this.commonWrite(off, (value & sizeMask(size)) >>> 0);
      else if (off >= R.DEVICE && off < R.NOTIFY) this.model.writeConfig(off - R.DEVICE, size, value);
      else if (off >= R.NOTIFY && (off - R.NOTIFY) % VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER === 0) this.model.queueNotify((off - R.NOTIFY) / VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER);
    },
  };

  /** Common configuration (§4.1.4.3); accesses that do not start at a field read 0 and are ignored. */
  private commonRead(off: number): number {
    const m = this.model;
    const sel = this.queueSelect;
    const q = m.queues[sel];
    const area = ADDRESS_FIELDS.get(off);
    if (area) return q ? q.addressWord(area[0], area[1]) : 0;
    switch (off) {
      case COMMON.device_feature_select:
        return this.deviceFeatureSelect;
      case COMMON.device_feature:
        return m.deviceFeatureWord(this.deviceFeatureSelect);
      case COMMON.driver_feature_select:
        return this.driverFeatureSelect;
      case COMMON.driver_feature:
        return m.driverFeatureWord(this.driverFeatureSelect);
      case COMMON.config_msix_vector:
        return this.configVector;
      case COMMON.num_queues:
        return m.queues.length;
      case COMMON.device_status:
        return m.status;
      case COMMON.config_generation:
        return m.configGeneration;
      case COMMON.queue_select:
        return sel;
      case COMMON.queue_size:
        return q ? q.size : 0;
      case COMMON.queue_msix_vector:
        return q ? this.queueVectors[sel]! : VIRTIO_MSI_NO_VECTOR;
      case COMMON.queue_enable:
        return q?.ready ? 1 : 0;
      case COMMON.queue_notify_off:
        return q ? sel : 0;
      default:
        return 0;
    }
  }

  private commonWrite(off: number, value: number): void {
    const m = this.model;
    const sel = this.queueSelect;
    const q = m.queues[sel];
    const area = ADDRESS_FIELDS.get(off);
    if (area) {
      q?.setAddressWord(area[0], area[1], value);
      return;
    }
    switch (off) {
      case COMMON.device_feature_select:
        this.deviceFeatureSelect = value;
        return;
      case COMMON.driver_feature_select:
        this.driverFeatureSelect = value;
        return;
      case COMMON.driver_feature:
        m.setDriverFeatureWord(this.driverFeatureSelect, value);
        return;
      case COMMON.config_msix_vector:
        this.configVector = this.vector(value);
        return;
      case COMMON.device_status:
        m.setStatus(value);
        if ((value & 0xff) === 0) this.reset();
        return;
      case COMMON.queue_select:
        this.queueSelect = value;
        return;
      case COMMON.queue_size:
        q?.setSize(value);
        return;
      case COMMON.queue_msix_vector:
        if (q) this.queueVectors[sel] = this.vector(value);
        return;
      case COMMON.queue_enable:
        // The driver MUST NOT write 0 (§4.1.4.3.2); a queue is stopped by reset.
        if (value === 1) m.enableQueue(sel);
        return;
    }
  }

  /** A vector the table does not have reads back as NO_VECTOR, which is how the driver learns the mapping failed. */
  private vector(v: number): number {
    return v < this.msix.count ? v : VIRTIO_MSI_NO_VECTOR;
  }

  private readIsr(): number {
    const v = this.isr;
    this.isr = 0;
    return v;
  }

  /** MSI-X when enabled (an unassigned vector loses the event, as on hardware); else ISR bit and INTA#. */
  private interrupt(vector: number, isrBit: number): void {
    if (this.msix.enabled) {
      this.msix.notify(vector);
      return;
    }
    const fresh = isrBit & ~this.isr;
    this.isr |= isrBit;
    if (fresh && this.intxLine !== undefined && !(this.fn.command & PCI_COMMAND.INTX_DISABLE)) this.irq.assertLine(this.intxLine);
  }

  private addCap(cfgType: number, offset: number): void {
    this.fn.addCapability(
      VirtioPciCap.encode({
        cap_vndr: PCI_CAP_ID.VNDR,
        cap_len: VirtioPciCap.span,
        cfg_type: cfgType,
        bar: VIRTIO_PCI_MODERN_BAR,
        offset,
        length: VIRTIO_PCI_REGION.SIZE,
      }),
    );
  }

  /** Device reset also resets the transport: selectors, vectors and ISR (QEMU's virtio_pci_reset). */
  private reset(): void {
    this.isr = 0;
    this.deviceFeatureSelect = this.driverFeatureSelect = this.queueSelect = 0;
    this.configVector = VIRTIO_MSI_NO_VECTOR;
    this.queueVectors.fill(VIRTIO_MSI_NO_VECTOR);
  }
}

function sizeMask(size: AccessSize): number {
  return size === 4 ? 0xffff_ffff : (1 << (8 * size)) - 1;
}
