// PCI: enumeration through ECAM, BAR discovery, the capability list and
// MSI-X vectors (Linux drivers/pci/probe.c, msi/msix.c, much reduced). The
// firmware placed the BARs; the kernel reads and sizes them, enables memory
// decoding and bus mastering, and programs MSI-X tables itself.
import { DMA_MAPPING_ERROR, hi32, lo32 } from '../abi/addr.ts';
import type { AccessSize } from '../abi/boot.ts';
import type { FwPciHostBridge } from '../abi/firmware.ts';
import {
  MSIX_BIR_MASK,
  MSIX_CTRL,
  MSIX_ENTRY_CTRL_MASKED,
  MsixCap,
  MsixEntry,
  PCI_BAR,
  PCI_BAR_COUNT,
  PCI_CAP_ID,
  PCI_CFG,
  PCI_COMMAND,
  PCI_STATUS_CAP_LIST,
  PCI_VENDOR_INVALID,
  bdfName,
  ecamOffset,
  pciBarOffset,
} from '../abi/pci.ts';
import { Device, type Bus } from './device.ts';
import type { Kernel } from './kernel.ts';

export interface PciBar {
  readonly index: number;
  readonly addr: number;
  readonly size: number;
  readonly is64: boolean;
}

export interface PciCapability {
  readonly id: number;
  readonly offset: number;
}

export interface MsixVector {
  readonly entry: number;
  readonly vector: number;
  readonly cpu: number;
}

/** Capability lists are walked at most this many hops: a looping list must not hang the kernel. */
const MAX_CAPS = 48;

export class PciDevice extends Device {
  readonly vendor: number;
  readonly deviceId: number;
  readonly revision: number;
  readonly classCode: number;
  readonly subsystemId: number;
  readonly bars: PciBar[];
  readonly caps: PciCapability[];
  msix: MsixVector[] = [];

  constructor(
    private readonly k: Kernel,
    bus: Bus<PciDevice>,
    readonly bridge: FwPciHostBridge,
    readonly busNr: number,
    readonly slot: number,
    readonly fn: number,
  ) {
    super(bdfName(busNr, slot, fn, bridge.segment), bus as Bus, undefined, bridge.dmaBits ?? 64);
    this.vendor = this.cfgRead(PCI_CFG.vendor_id, 2);
    this.deviceId = this.cfgRead(PCI_CFG.device_id, 2);
    this.revision = this.cfgRead(PCI_CFG.revision, 1);
    this.classCode = this.cfgRead(PCI_CFG.revision, 4) >>> 8;
    this.subsystemId = this.cfgRead(PCI_CFG.subsystem_id, 2);
    this.bars = this.sizeBars();
    this.caps = this.walkCaps();
  }

  cfgRead(off: number, size: AccessSize): number {
    return this.k.boot.mmio.read(this.cfgAddr(off), size);
  }

  cfgWrite(off: number, size: AccessSize, value: number): void {
    this.k.boot.mmio.write(this.cfgAddr(off), size, value);
  }

  bar(index: number): PciBar | undefined {
    return this.bars.find((b) => b.index === index);
  }

  /** pci_enable_device + pci_set_master. */
  enable(): void {
    const cmd = this.cfgRead(PCI_CFG.command, 2);
    this.cfgWrite(PCI_CFG.command, 2, cmd | PCI_COMMAND.MEMORY | PCI_COMMAND.MASTER | PCI_COMMAND.INTX_DISABLE);
  }

  disable(): void {
    this.cfgWrite(PCI_CFG.command, 2, this.cfgRead(PCI_CFG.command, 2) & ~(PCI_COMMAND.MEMORY | PCI_COMMAND.MASTER));
  }

  /**
   * pci_alloc_irq_vectors(MSI-X): programs `count` table entries, spreading
   * them over the CPUs, registers `handler` for each and enables MSI-X.
   * Returns fewer vectors than asked when the table is smaller; none without MSI-X.
   */
  enableMsix(count: number, name: string, handler: (entry: number) => void): MsixVector[] {
    const cap = this.caps.find((c) => c.id === PCI_CAP_ID.MSIX);
    if (!cap) return [];
    const ctrlOff = cap.offset + MsixCap.off.msg_ctrl;
    const ctrl = this.cfgRead(ctrlOff, 2);
    const tableWord = this.cfgRead(cap.offset + MsixCap.off.table, 4);
    const bar = this.bar(tableWord & MSIX_BIR_MASK);
    if (!bar) return [];
    const table = bar.addr + (tableWord & ~MSIX_BIR_MASK);
    const n = Math.min(count, (ctrl & MSIX_CTRL.TABLE_SIZE_MASK) + 1);
    // Mask the function while the table is written, as Linux does.
    this.cfgWrite(ctrlOff, 2, ctrl | MSIX_CTRL.ENABLE | MSIX_CTRL.FUNCTION_MASK);
    const { doorbell, destShift } = this.k.firmware.msi;
    for (let entry = 0; entry < n; entry++) {
      const cpu = entry % this.k.cpus.count;
      const vector = this.k.irqs.allocVector();
      this.k.irqs.request(vector, `${name}-${entry}`, () => handler(entry));
      const e = table + entry * MsixEntry.span;
      const addr = this.k.msiAddress(this, doorbell.base + cpu * 2 ** destShift);
      if (addr === DMA_MAPPING_ERROR) throw new Error(`${this.name}: cannot map the MSI doorbell for vector ${entry}`);
      this.k.boot.mmio.write(e + MsixEntry.off.addr_lo, 4, lo32(addr));
      this.k.boot.mmio.write(e + MsixEntry.off.addr_hi, 4, hi32(addr));
      this.k.boot.mmio.write(e + MsixEntry.off.data, 4, vector);
      this.k.boot.mmio.write(e + MsixEntry.off.vector_ctrl, 4, 0);
      this.msix.push({ entry, vector, cpu });
    }
    this.cfgWrite(ctrlOff, 2, (ctrl | MSIX_CTRL.ENABLE) & ~MSIX_CTRL.FUNCTION_MASK);
    this.k.trace.emit('pci_msix_enable', { dev: this.name, vectors: n });
    return this.msix;
  }

  disableMsix(): void {
    const cap = this.caps.find((c) => c.id === PCI_CAP_ID.MSIX);
    if (!cap) return;
    const ctrlOff = cap.offset + MsixCap.off.msg_ctrl;
    this.cfgWrite(ctrlOff, 2, this.cfgRead(ctrlOff, 2) & ~MSIX_CTRL.ENABLE);
    const tableWord = this.cfgRead(cap.offset + MsixCap.off.table, 4);
    const table = this.bar(tableWord & MSIX_BIR_MASK)!.addr + (tableWord & ~MSIX_BIR_MASK);
    for (const v of this.msix) {
      this.k.boot.mmio.write(table + v.entry * MsixEntry.span + MsixEntry.off.vector_ctrl, 4, MSIX_ENTRY_CTRL_MASKED);
      this.k.irqs.free(v.vector);
    }
    this.msix = [];
  }

  private cfgAddr(off: number): number {
    return this.bridge.ecam.base + ecamOffset(this.busNr - this.bridge.busStart, this.slot, this.fn) + off;
  }

  /** Reads each BAR the firmware assigned and sizes it by writing all ones with decoding off. */
  private sizeBars(): PciBar[] {
    const cmd = this.cfgRead(PCI_CFG.command, 2);
    this.cfgWrite(PCI_CFG.command, 2, cmd & ~PCI_COMMAND.MEMORY);
    const bars: PciBar[] = [];
    for (let i = 0; i < PCI_BAR_COUNT; i++) {
      const off = pciBarOffset(i);
      const lo = this.cfgRead(off, 4);
      if (lo & PCI_BAR.IO) continue;
      const is64 = (lo & 0x6) === PCI_BAR.MEM_TYPE_64;
      const hi = is64 ? this.cfgRead(off + 4, 4) : 0;
      this.cfgWrite(off, 4, 0xffff_ffff);
      const maskLo = this.cfgRead(off, 4) & PCI_BAR.MEM_MASK;
      this.cfgWrite(off, 4, lo);
      let maskHi = 0xffff_ffff;
      if (is64) {
        this.cfgWrite(off + 4, 4, 0xffff_ffff);
        maskHi = this.cfgRead(off + 4, 4);
        this.cfgWrite(off + 4, 4, hi);
      }
      if (maskLo !== 0 || (is64 && maskHi !== 0)) {
        const mask = BigInt(maskHi >>> 0) * 2n ** 32n + BigInt(maskLo >>> 0);
        const size = Number(BigInt.asUintN(is64 ? 64 : 32, ~mask + 1n));
        bars.push({ index: i, addr: hi * 2 ** 32 + ((lo & PCI_BAR.MEM_MASK) >>> 0), size, is64 });
      }
      if (is64) i++;
    }
    this.cfgWrite(PCI_CFG.command, 2, cmd);
    return bars;
  }

  private walkCaps(): PciCapability[] {
    const caps: PciCapability[] = [];
    if (!(this.cfgRead(PCI_CFG.status, 2) & PCI_STATUS_CAP_LIST)) return caps;
    let off = this.cfgRead(PCI_CFG.cap_ptr, 1) & ~3;
    while (off >= 0x40 && caps.length < MAX_CAPS) {
      caps.push({ id: this.cfgRead(off, 1), offset: off });
      off = this.cfgRead(off + 1, 1) & ~3;
    }
    return caps;
  }
}

/** Scans every bus of a host bridge and adds each function it finds to the PCI bus. */
export function enumeratePci(k: Kernel, bridge: FwPciHostBridge): PciDevice[] {
  const found: PciDevice[] = [];
  const probe = (bus: number, slot: number, fn: number) => {
    const addr = bridge.ecam.base + ecamOffset(bus - bridge.busStart, slot, fn);
    if (k.boot.mmio.read(addr + PCI_CFG.vendor_id, 2) === PCI_VENDOR_INVALID) return false;
    const dev = new PciDevice(k, k.pci, bridge, bus, slot, fn);
    k.log.info(`pci ${dev.name}: [${hex4(dev.vendor)}:${hex4(dev.deviceId)}] type 00 class 0x${dev.classCode.toString(16).padStart(6, '0')}`);
    for (const b of dev.bars) k.log.info(`pci ${dev.name}: BAR ${b.index} [mem 0x${b.addr.toString(16)}-0x${(b.addr + b.size - 1).toString(16)}${b.is64 ? ' 64bit' : ''}]`);
    found.push(dev);
    return true;
  };
  const lastBus = Math.min(bridge.busEnd, bridge.busStart + Math.floor(bridge.ecam.size / 0x10_0000) - 1);
  for (let bus = bridge.busStart; bus <= lastBus; bus++) {
    for (let slot = 0; slot < 32; slot++) {
      if (!probe(bus, slot, 0)) continue;
      const multi = k.boot.mmio.read(bridge.ecam.base + ecamOffset(bus - bridge.busStart, slot, 0) + PCI_CFG.header_type, 1) & 0x80;
      if (multi) for (let fn = 1; fn < 8; fn++) probe(bus, slot, fn);
    }
  }
  return found;
}

const hex4 = (v: number) => v.toString(16).padStart(4, '0');
