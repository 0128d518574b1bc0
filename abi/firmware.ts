// The firmware tables the machine hands the kernel, our stand-in for ACPI
// (MCFG, MADT, VIOT) or a device tree. Encoded as UTF-8 JSON in guest RAM.
// The kernel learns the topology only from here and from config space.

export interface FwRange {
  readonly base: number;
  readonly size: number;
}

export interface FwPciHostBridge {
  readonly segment: number;
  /** ECAM window (MCFG). */
  readonly ecam: FwRange;
  readonly busStart: number;
  readonly busEnd: number;
  /** Where the firmware placed 32-bit and 64-bit memory BARs. */
  readonly mmio32: FwRange;
  readonly mmio64?: FwRange;
  /** Bus addressing limit (ACPI _DMA / DT dma-ranges), in bits; 64 when absent. */
  readonly dmaBits?: number;
}

export interface FwVirtioMmio {
  readonly base: number;
  readonly size: number;
  /** Wired interrupt line. */
  readonly irq: number;
  readonly dmaBits?: number;
}

/**
 * One virtual IOMMU and the endpoints it translates, as ACPI VIOT describes
 * them: PCI requester-ID ranges and virtio-mmio windows, each with the
 * endpoint ID the IOMMU knows it by.
 */
export interface FwViot {
  readonly kind: 'virtio-iommu';
  /** Where the IOMMU itself sits: a PCI function (segment and BDF) or a virtio-mmio window. */
  readonly pci?: { readonly segment: number; readonly bdf: number };
  readonly mmioBase?: number;
  /** BDFs bdfStart..bdfEnd of `segment` are endpoints endpointStart + (bdf - bdfStart). */
  readonly pciRanges: readonly { readonly segment: number; readonly bdfStart: number; readonly bdfEnd: number; readonly endpointStart: number }[];
  readonly mmioEndpoints: readonly { readonly base: number; readonly endpoint: number }[];
}

export interface FirmwareTables {
  readonly version: 1;
  /** Machine preset name, informational. */
  readonly machine: string;
  readonly cpus: number;
  /** Physical address of the MSI doorbell and how a destination CPU is encoded in the address. */
  readonly msi: { readonly doorbell: FwRange; readonly destShift: number };
  readonly pci: readonly FwPciHostBridge[];
  readonly virtioMmio: readonly FwVirtioMmio[];
  /** Virtual IOMMUs (VIOT); absent or empty on a machine without one. */
  readonly viot?: readonly FwViot[];
}

export function encodeFirmware(t: FirmwareTables): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(t));
}

export function decodeFirmware(bytes: Uint8Array): FirmwareTables {
  const t = JSON.parse(new TextDecoder().decode(bytes)) as FirmwareTables;
  if (t.version !== 1) throw new Error(`firmware tables: unknown version ${String(t.version)}`);
  return t;
}

/** How Linux names a platform device from its firmware node, e.g. feb00000.virtio_mmio. */
export const virtioMmioName = (base: number): string => `${base.toString(16)}.virtio_mmio`;
