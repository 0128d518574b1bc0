// PCI configuration space (type 0 header, PCI Local Bus 3.0 §6.1), the MSI-X
// capability and table (§6.8.2), and the ECAM address encoding (PCIe §7.2.2).
import { defineStruct, reserved, u8, u16, u32 } from './layout.ts';

export const PciHeader = defineStruct<Record<string, number>>('pci_header_type0', [
  u16('vendor_id'),
  u16('device_id'),
  u16('command'),
  u16('status'),
  u8('revision'),
  u8('prog_if'),
  u8('subclass'),
  u8('class_code'),
  u8('cache_line_size'),
  u8('latency_timer'),
  u8('header_type'),
  u8('bist'),
  u32('bar0'),
  u32('bar1'),
  u32('bar2'),
  u32('bar3'),
  u32('bar4'),
  u32('bar5'),
  u32('cardbus_cis'),
  u16('subsystem_vendor_id'),
  u16('subsystem_id'),
  u32('rom_base'),
  u8('cap_ptr'),
  reserved(7),
  u8('interrupt_line'),
  u8('interrupt_pin'),
  u8('min_gnt'),
  u8('max_lat'),
]);
export const PCI_CFG = PciHeader.off;
export const PCI_CONFIG_SPACE_SIZE = 4096;
export const PCI_BAR_COUNT = 6;
export const pciBarOffset = (n: number): number => PCI_CFG.bar0 + 4 * n;

export const PCI_COMMAND = Object.freeze({ MEMORY: 0x2, MASTER: 0x4, INTX_DISABLE: 0x400 });
export const PCI_STATUS_CAP_LIST = 0x10;
export const PCI_BAR = Object.freeze({ IO: 0x1, MEM_TYPE_64: 0x4, PREFETCH: 0x8, MEM_MASK: 0xfffffff0 });
export const PCI_CAP_ID = Object.freeze({ MSIX: 0x11, VNDR: 0x09 });
export const PCI_VENDOR_INVALID = 0xffff;

export const MsixCap = defineStruct<Record<string, number>>('msix_cap', [
  u8('cap_id'),
  u8('cap_next'),
  u16('msg_ctrl'),
  u32('table'),
  u32('pba'),
]);
export const MSIX_CTRL = Object.freeze({ TABLE_SIZE_MASK: 0x7ff, FUNCTION_MASK: 0x4000, ENABLE: 0x8000 });
/** The low three bits of the table and PBA words name the BAR (BIR). */
export const MSIX_BIR_MASK = 0x7;

export const MsixEntry = defineStruct<Record<string, number>>('msix_table_entry', [
  u32('addr_lo'),
  u32('addr_hi'),
  u32('data'),
  u32('vector_ctrl'),
]);
export const MSIX_ENTRY_CTRL_MASKED = 1;

/** ECAM: each function owns 4 KiB at bus << 20 | device << 15 | function << 12. */
export function ecamOffset(bus: number, device: number, fn: number): number {
  return bus * 0x10_0000 + device * 0x8000 + fn * 0x1000;
}

/** Bus/device/function as Linux prints it, e.g. 0000:00:03.0 */
export function bdfName(bus: number, device: number, fn: number, segment = 0): string {
  const h = (v: number, w: number) => v.toString(16).padStart(w, '0');
  return `${h(segment, 4)}:${h(bus, 2)}:${h(device, 2)}.${fn}`;
}
