// The DMA API's backend interface (Linux's struct dma_map_ops, reduced to what
// drivers here use). A device's backend is chosen when it is added: direct,
// swiotlb or (with an IOMMU) iommu-dma. Addresses on the CPU side are
// guest-physical numbers; bus (DMA) addresses are 64-bit Addr values.
import type { Addr } from '../abi/addr.ts';
import type { Device } from '../kernel/device.ts';

export const DmaDirection = Object.freeze({ BIDIRECTIONAL: 0, TO_DEVICE: 1, FROM_DEVICE: 2, NONE: 3 });
export type DmaDirection = (typeof DmaDirection)[keyof typeof DmaDirection];

/** One scatterlist entry: CPU side in, bus side filled by map_sg. */
export interface ScatterEntry {
  phys: number;
  length: number;
  dmaAddress?: Addr;
  dmaLength?: number;
}

export interface CoherentBuffer {
  /** Guest-physical address the CPU uses. */
  readonly cpuAddr: number;
  /** Bus address the device uses. */
  readonly dmaAddr: Addr;
  readonly size: number;
}

export interface DmaOps {
  readonly name: string;
  /** Returns DMA_MAPPING_ERROR when the buffer cannot be made reachable. */
  mapPhys(dev: Device, phys: number, size: number, dir: DmaDirection): Addr;
  unmapPhys(dev: Device, addr: Addr, size: number, dir: DmaDirection): void;
  /** Returns the number of bus segments, 0 on error (nothing left mapped). */
  mapSg(dev: Device, sg: ScatterEntry[], dir: DmaDirection): number;
  unmapSg(dev: Device, sg: ScatterEntry[], dir: DmaDirection): void;
  allocCoherent(dev: Device, size: number): CoherentBuffer | undefined;
  freeCoherent(dev: Device, buf: CoherentBuffer): void;
  syncForCpu(dev: Device, addr: Addr, size: number, dir: DmaDirection): void;
  syncForDevice(dev: Device, addr: Addr, size: number, dir: DmaDirection): void;
  /** The largest single mapping this backend can make (dma_max_mapping_size). */
  maxMappingSize(dev: Device): number;
  /** Whether the backend can honour `mask` (ops->dma_supported); absent means any mask, as Linux. */
  dmaSupported?(dev: Device, mask: bigint): boolean;
}
