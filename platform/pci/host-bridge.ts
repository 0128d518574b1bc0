// The PCI host bridge: an ECAM window that routes configuration accesses to
// the functions plugged into bus 0, and the firmware's BAR placement (each BAR
// naturally aligned in the 32-bit or 64-bit window, as SeaBIOS does).
import type { AccessSize } from '../../abi/boot.ts';
import type { FwPciHostBridge, FwRange } from '../../abi/firmware.ts';
import { bdfName, ecamOffset } from '../../abi/pci.ts';
import type { MmioBus } from '../bus.ts';
import type { PciFunction } from './function.ts';

const ALL_ONES: Record<AccessSize, number> = { 1: 0xff, 2: 0xffff, 4: 0xffff_ffff };

export class PciHostBridge {
  private readonly slots = new Map<number, PciFunction>();
  private next32: number;
  private next64: number;

  constructor(
    private readonly bus: MmioBus,
    readonly fw: FwPciHostBridge,
  ) {
    this.next32 = fw.mmio32.base;
    this.next64 = fw.mmio64?.base ?? 0;
    bus.map(fw.ecam.base, fw.ecam.size, 'pci-ecam', {
      read: (off, size) => this.function(off)?.cfgRead(off & 0xfff, size) ?? ALL_ONES[size],
      write: (off, size, value) => this.function(off)?.cfgWrite(off & 0xfff, size, value),
    });
  }

  /** Plugs `fn` in as function 0 of `slot` on bus 0, placing its BARs. Returns its BDF name. */
  plug(slot: number, fn: PciFunction): string {
    if (this.slots.has(slot)) throw new Error(`PCI slot ${slot} is taken`);
    fn.barSpecs().forEach((spec, i) => {
      if (spec) fn.assignBar(i, this.place(spec.size, spec.is64));
    });
    this.slots.set(slot, fn);
    const name = bdfName(this.fw.busStart, slot, 0, this.fw.segment);
    fn.attach(this.bus, name);
    return name;
  }

  private function(ecamOff: number): PciFunction | undefined {
    if (ecamOff >= ecamOffset(1, 0, 0)) return undefined; // only bus 0 is populated
    if ((ecamOff >> 12) & 0x7) return undefined; // function 0 only
    return this.slots.get(ecamOff >> 15);
  }

  private place(size: number, is64: boolean): number {
    const window: FwRange | undefined = is64 && this.fw.mmio64 ? this.fw.mmio64 : this.fw.mmio32;
    const cursor = window === this.fw.mmio64 ? this.next64 : this.next32;
    const addr = Math.ceil(cursor / size) * size;
    if (addr + size > window.base + window.size) throw new Error('PCI MMIO window exhausted');
    if (window === this.fw.mmio64) this.next64 = addr + size;
    else this.next32 = addr + size;
    return addr;
  }
}
