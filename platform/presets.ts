// Machine presets: the physical address map of an x86 q35-like machine and
// an arm virt-like machine, with the real defaults of QEMU's boards
// (hw/i386/pc_q35.c, hw/arm/virt.c) where they matter to DMA and interrupts.
import type { FwRange } from '../abi/firmware.ts';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

export interface Preset {
  readonly name: string;
  readonly description: string;
  /** Where RAM starts, and the limit below 4 GiB before RAM continues above it. */
  readonly ramBase: number;
  readonly lowRamLimit: (ramBytes: number) => number;
  readonly highRamBase: number;
  readonly ecam: FwRange;
  readonly mmio32: FwRange;
  /** 64-bit PCI window, placed after the end of RAM. */
  readonly mmio64: (ramEnd: number) => FwRange;
  readonly msi: { readonly doorbell: FwRange; readonly destShift: number };
  /** virtio-mmio slots: base, stride, count, first interrupt line. */
  readonly virtioMmio: { readonly base: number; readonly stride: number; readonly slots: number; readonly firstIrq: number };
  /** virtio-iommu aw-bits default of the current machine version (64 before QEMU 9.0). */
  readonly iommuAwBits: number;
  /** The MSI doorbell is translated by the IOMMU (software MSI, arm ITS) or bypasses it (x86 interrupt remapping window). */
  readonly msiIsSoftware: boolean;
}

/** q35: RAM below 4 GiB stops at 2 GiB once the machine has 2.75 GiB or more (QEMU pc_q35_init). */
const q35LowRam = (ram: number): number => (ram >= 0xb000_0000 ? 0x8000_0000 : ram);

export const PRESETS: Readonly<Record<string, Preset>> = Object.freeze({
  q35: {
    name: 'q35',
    description: 'x86 q35-like: ECAM at 0xb0000000, LAPIC MSI window 0xfee00000-0xfeefffff, virtio-mmio slots at 0xfeb00000 (microvm-style)',
    ramBase: 0,
    lowRamLimit: q35LowRam,
    highRamBase: 4 * GiB,
    ecam: { base: 0xb000_0000, size: 256 * MiB },
    mmio32: { base: 0xc000_0000, size: 0xfeb0_0000 - 0xc000_0000 },
    mmio64: (ramEnd) => ({ base: Math.ceil(Math.max(ramEnd, 4 * GiB) / GiB) * GiB, size: 32 * GiB }),
    msi: { doorbell: { base: 0xfee0_0000, size: MiB }, destShift: 12 },
    virtioMmio: { base: 0xfeb0_0000, stride: 0x200, slots: 24, firstIrq: 16 },
    iommuAwBits: 39,
    msiIsSoftware: false,
  },
  virt: {
    name: 'virt',
    description: 'arm virt-like: RAM at 1 GiB, ECAM at 0x3f000000, GICv3 ITS doorbell at 0x08090000 that the guest must map, virtio-mmio at 0x0a000000',
    ramBase: GiB,
    lowRamLimit: (ram) => Math.min(ram, 255 * GiB),
    highRamBase: 256 * GiB,
    ecam: { base: 0x3f00_0000, size: 16 * MiB },
    mmio32: { base: 0x1000_0000, size: 0x2eff_0000 },
    mmio64: () => ({ base: 512 * GiB, size: 512 * GiB }),
    // The ITS translation page; our controller reads the target CPU from the address bits above it.
    msi: { doorbell: { base: 0x0809_0000, size: 0x1_0000 }, destShift: 8 },
    virtioMmio: { base: 0x0a00_0000, stride: 0x200, slots: 32, firstIrq: 16 },
    iommuAwBits: 48,
    msiIsSoftware: true,
  },
});

/** RAM ranges of a machine with `ramBytes` of memory, split around the 32-bit MMIO hole. */
export function ramLayout(p: Preset, ramBytes: number, maxRamBelow4g?: number): { gpa: number; size: number }[] {
  const low = Math.min(ramBytes, maxRamBelow4g ?? p.lowRamLimit(ramBytes));
  const ranges = [{ gpa: p.ramBase, size: low }];
  if (ramBytes > low) ranges.push({ gpa: p.highRamBase, size: ramBytes - low });
  return ranges;
}
