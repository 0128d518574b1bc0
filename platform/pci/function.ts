// A PCI function on the host side: its 4 KiB configuration space with
// write masks, the capability list, BARs that appear on the bus when memory
// decoding is enabled, and the MSI-X capability (PCI Local Bus 3.0 §6.2, §6.8.2).
import type { AccessSize } from '../../abi/boot.ts';
import {
  MSIX_CTRL,
  MSIX_ENTRY_CTRL_MASKED,
  MsixCap,
  MsixEntry,
  PCI_BAR,
  PCI_CFG,
  PCI_COMMAND,
  PCI_CONFIG_SPACE_SIZE,
  PCI_STATUS_CAP_LIST,
  PCI_CAP_ID,
  pciBarOffset,
} from '../../abi/pci.ts';
import { fromHiLo } from '../../abi/addr.ts';
import type { AddressSpace } from '../address-space.ts';
import { readSized, writeSized, type MmioBus, type MmioHandler } from '../bus.ts';

export interface PciIds {
  readonly vendorId: number;
  readonly deviceId: number;
  readonly revision: number;
  readonly classCode: number;
  readonly subsystemVendorId: number;
  readonly subsystemId: number;
}

export interface BarSpec {
  /** A power of two of at least 16 bytes. */
  readonly size: number;
  readonly is64: boolean;
  readonly name: string;
  readonly handler: MmioHandler;
}

const CAP_START = 0x40;
const CAP_END = 0x100;

export class PciFunction {
  readonly cfg = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly dv = new DataView(this.cfg.buffer);
  /** Bits the driver may change, byte by byte. */
  private readonly wmask = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly bars: (BarSpec | undefined)[] = [];
  private readonly mapped = new Map<number, number>();
  private nextCap = CAP_START;
  private lastCapNext = PCI_CFG.cap_ptr;
  private bus: MmioBus | undefined;
  /** Unique prefix for this function's BAR names on the bus. */
  name = 'pci';
  /** Called after every config write the function itself does not handle (capability registers). */
  private readonly capWriteHooks: { start: number; end: number; fn: () => void }[] = [];

  constructor(ids: PciIds) {
    this.dv.setUint16(PCI_CFG.vendor_id, ids.vendorId, true);
    this.dv.setUint16(PCI_CFG.device_id, ids.deviceId, true);
    this.cfg[PCI_CFG.revision] = ids.revision;
    this.cfg[PCI_CFG.prog_if] = ids.classCode & 0xff;
    this.cfg[PCI_CFG.subclass] = (ids.classCode >> 8) & 0xff;
    this.cfg[PCI_CFG.class_code] = (ids.classCode >> 16) & 0xff;
    this.dv.setUint16(PCI_CFG.subsystem_vendor_id, ids.subsystemVendorId, true);
    this.dv.setUint16(PCI_CFG.subsystem_id, ids.subsystemId, true);
    this.setWritable(PCI_CFG.command, 2, PCI_COMMAND.MEMORY | PCI_COMMAND.MASTER | PCI_COMMAND.INTX_DISABLE);
    this.cfg[PCI_CFG.interrupt_line] = 0xff;
    this.wmask[PCI_CFG.interrupt_line] = 0xff;
  }

  get command(): number {
    return this.dv.getUint16(PCI_CFG.command, true);
  }

  /** Bus Master Enable: without it a function may neither DMA nor signal MSI. */
  get busMaster(): boolean {
    return (this.command & PCI_COMMAND.MASTER) !== 0;
  }

  setBar(index: number, spec: BarSpec): void {
    if (spec.size < 16 || (spec.size & (spec.size - 1)) !== 0) throw new Error(`BAR ${index}: size ${spec.size} is not a power of two >= 16`);
    this.bars[index] = spec;
    const off = pciBarOffset(index);
    const flags = spec.is64 ? PCI_BAR.MEM_TYPE_64 : 0;
    this.dv.setUint32(off, flags, true);
    // Size is read back from the bits that stay zero when all ones are written.
    const lowMask = spec.size >= 2 ** 32 ? 0 : ~(spec.size - 1) & PCI_BAR.MEM_MASK;
    this.setWritable(off, 4, lowMask >>> 0);
    if (spec.is64) this.setWritable(off + 4, 4, spec.size >= 2 ** 32 ? ~(spec.size / 2 ** 32 - 1) >>> 0 : 0xffff_ffff);
  }

  barAddress(index: number): number {
    const off = pciBarOffset(index);
    const lo = this.dv.getUint32(off, true) & PCI_BAR.MEM_MASK;
    const hi = this.bars[index]?.is64 ? this.dv.getUint32(off + 4, true) : 0;
    return Number(fromHiLo(hi, lo >>> 0));
  }

  /** Firmware BAR placement: the host bridge writes the address the way SeaBIOS would. */
  assignBar(index: number, addr: number): void {
    const off = pciBarOffset(index);
    const spec = this.bars[index]!;
    this.dv.setUint32(off, ((addr % 2 ** 32) & PCI_BAR.MEM_MASK) | (spec.is64 ? PCI_BAR.MEM_TYPE_64 : 0), true);
    if (spec.is64) this.dv.setUint32(off + 4, Math.floor(addr / 2 ** 32), true);
  }

  barSpecs(): readonly (BarSpec | undefined)[] {
    return this.bars;
  }

  /** Appends a capability whose body starts with its ID byte; returns its offset. */
  addCapability(body: Uint8Array, writable: { offset: number; size: number; mask: number }[] = []): number {
    const off = this.nextCap;
    if (off + body.length > CAP_END) throw new Error('PCI capability list full');
    this.cfg.set(body, off);
    this.cfg[off + 1] = 0;
    this.cfg[this.lastCapNext] = off;
    this.lastCapNext = off + 1;
    this.nextCap = (off + body.length + 3) & ~3;
    this.dv.setUint16(PCI_CFG.status, this.dv.getUint16(PCI_CFG.status, true) | PCI_STATUS_CAP_LIST, true);
    for (const w of writable) this.setWritable(off + w.offset, w.size, w.mask);
    return off;
  }

  onCapWrite(start: number, end: number, fn: () => void): void {
    this.capWriteHooks.push({ start, end, fn });
  }

  cfgRead(off: number, size: AccessSize): number {
    if (off + size > PCI_CONFIG_SPACE_SIZE) return size === 4 ? 0xffff_ffff : (1 << (8 * size)) - 1;
    return size === 1 ? this.cfg[off]! : size === 2 ? this.dv.getUint16(off, true) : this.dv.getUint32(off, true);
  }

  cfgWrite(off: number, size: AccessSize, value: number): void {
    if (off + size > PCI_CONFIG_SPACE_SIZE) return;
    for (let i = 0; i < size; i++) {
      const b = (value >>> (8 * i)) & 0xff;
      const m = this.wmask[off + i]!;
      this.cfg[off + i] = (this.cfg[off + i]! & ~m) | (b & m);
    }
    const end = off + size;
    if (off < pciBarOffset(6) && end > PCI_CFG.command) this.updateMappings();
    for (const h of this.capWriteHooks) if (off < h.end && end > h.start) h.fn();
  }

  /** Called by the host bridge when the function is plugged in. */
  attach(bus: MmioBus, name: string): void {
    this.bus = bus;
    this.name = name;
    this.updateMappings();
  }

  /** BARs decode on the bus only while memory space is enabled and the BAR holds an address. */
  private updateMappings(): void {
    if (!this.bus) return;
    const decode = (this.command & PCI_COMMAND.MEMORY) !== 0;
    this.bars.forEach((spec, i) => {
      if (!spec) return;
      const want = decode ? this.barAddress(i) : 0;
      const have = this.mapped.get(i) ?? 0;
      if (want === have) return;
      const name = `${this.name}/${spec.name}`;
      if (have) this.bus!.unmap(name);
      this.mapped.delete(i);
      if (want) {
        this.bus!.map(want, spec.size, name, spec.handler);
        this.mapped.set(i, want);
      }
    });
  }

  private setWritable(off: number, size: number, mask: number): void {
    for (let i = 0; i < size; i++) this.wmask[off + i] = (mask >>> (8 * i)) & 0xff;
  }
}

/**
 * MSI-X: the capability, the table and the pending bit array, which live in
 * one BAR of their own (QEMU puts them in BAR 1 for virtio-pci). Messages are
 * posted writes through the function's DMA address space, so an IOMMU can
 * see them.
 */
export class Msix {
  readonly table: Uint8Array;
  private readonly tdv: DataView;
  private readonly pending: Uint8Array;
  readonly capOffset: number;
  readonly pbaOffset: number;
  /** Messages dropped: no bus mastering, or a write the address space refused. */
  dropped = 0;

  constructor(
    private readonly fn: PciFunction,
    readonly count: number,
    bar: number,
    private readonly space: () => AddressSpace,
  ) {
    this.table = new Uint8Array(count * MsixEntry.span);
    this.tdv = new DataView(this.table.buffer);
    for (let i = 0; i < count; i++) this.tdv.setUint32(i * MsixEntry.span + MsixEntry.off.vector_ctrl, MSIX_ENTRY_CTRL_MASKED, true);
    this.pbaOffset = Math.max(0x800, this.table.length);
    this.pending = new Uint8Array(Math.ceil(count / 64) * 8);
    this.capOffset = fn.addCapability(
      MsixCap.encode({ cap_id: PCI_CAP_ID.MSIX, cap_next: 0, msg_ctrl: count - 1, table: bar, pba: this.pbaOffset | bar }),
      [{ offset: MsixCap.off.msg_ctrl, size: 2, mask: MSIX_CTRL.ENABLE | MSIX_CTRL.FUNCTION_MASK }],
    );
    fn.onCapWrite(this.capOffset, this.capOffset + MsixCap.span, () => this.deliverPending());
  }

  /** Size of the BAR the table and PBA need. */
  get barSize(): number {
    let size = 16;
    while (size < this.pbaOffset + this.pending.length) size *= 2;
    return size;
  }

  get enabled(): boolean {
    return (this.ctrl & MSIX_CTRL.ENABLE) !== 0;
  }

  /** Signals `entry`: sent now, or left pending while masked. False if MSI-X is off (the caller falls back to INTx). */
  notify(entry: number): boolean {
    if (!this.enabled) return false;
    if (entry >= this.count) return true; // no vector assigned: the event is lost, as on hardware
    if (this.masked(entry)) {
      this.pending[entry >> 3]! |= 1 << (entry & 7);
      return true;
    }
    this.send(entry);
    return true;
  }

  readonly handler: MmioHandler = {
    read: (off, size) => {
      if (off < this.table.length) return readSized(this.tdv, off, size);
      if (off >= this.pbaOffset && off < this.pbaOffset + this.pending.length) return readSized(new DataView(this.pending.buffer), off - this.pbaOffset, size);
      return 0;
    },
    write: (off, size, value) => {
      if (off >= this.table.length) return; // the PBA is read-only
      writeSized(this.tdv, off, size, value);
      this.deliverPending();
    },
  };

  private get ctrl(): number {
    return this.fn.cfgRead(this.capOffset + MsixCap.off.msg_ctrl, 2);
  }

  private masked(entry: number): boolean {
    return (this.ctrl & MSIX_CTRL.FUNCTION_MASK) !== 0 || (this.tdv.getUint32(entry * MsixEntry.span + MsixEntry.off.vector_ctrl, true) & MSIX_ENTRY_CTRL_MASKED) !== 0;
  }

  private deliverPending(): void {
    if (!this.enabled) return;
    for (let e = 0; e < this.count; e++) {
      if (this.pending[e >> 3]! & (1 << (e & 7)) && !this.masked(e)) {
        this.pending[e >> 3]! &= ~(1 << (e & 7));
        this.send(e);
      }
    }
  }

  private send(entry: number): void {
    const base = entry * MsixEntry.span;
    const addr = fromHiLo(this.tdv.getUint32(base + MsixEntry.off.addr_hi, true), this.tdv.getUint32(base + MsixEntry.off.addr_lo, true));
    if (!this.fn.busMaster || !this.space().write32(addr, this.tdv.getUint32(base + MsixEntry.off.data, true))) this.dropped++;
  }
}
