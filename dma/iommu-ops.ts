// The interface between the IOMMU core (dma/) and an IOMMU driver
// (drivers/virtio-iommu.ts): Linux's iommu_ops and iommu_domain_ops, reduced
// to what a paravirtual IOMMU needs. IOVAs and physical addresses are 64-bit
// Addr values; sizes are byte counts that fit a number.
import type { Addr } from '../abi/addr.ts';
import type { FwViot } from '../abi/firmware.ts';
import type { Device } from '../kernel/device.ts';

/** IOMMU_READ, IOMMU_WRITE, IOMMU_MMIO. */
export const IOMMU_PROT = Object.freeze({ READ: 1, WRITE: 2, MMIO: 4 });

/**
 * Linux's reserved region types: `reserved` (IOMMU_RESV_RESERVED, never
 * mapped), `msi` (IOMMU_RESV_MSI, a hardware MSI window that bypasses
 * translation) and `sw-msi` (IOMMU_RESV_SW_MSI, where the guest maps its MSI
 * doorbell itself).
 */
export type ResvType = 'reserved' | 'msi' | 'sw-msi';

export interface ResvRegion {
  readonly start: Addr;
  /** Inclusive. */
  readonly end: Addr;
  readonly type: ResvType;
  readonly prot: number;
}

export interface IommuGeometry {
  readonly apertureStart: Addr;
  /** Inclusive. */
  readonly apertureEnd: Addr;
  /** Page sizes the IOMMU maps; the lowest set bit is the granule. */
  readonly pgsizeBitmap: bigint;
}

/** dma: translated, managed by the DMA API; identity: passthrough; blocked: no DMA at all. */
export type IommuDomainType = 'dma' | 'identity' | 'blocked';

export interface IommuDomain {
  readonly type: IommuDomainType;
  readonly geometry: IommuGeometry;
  /** The driver's name for it in logs and reports, e.g. its domain ID. */
  readonly name: string;
}

/** Why an operation failed, as Linux's errno names. */
export type IommuErrno = 'EINVAL' | 'ERANGE' | 'ENOENT' | 'ENOMEM' | 'EIO' | 'ENOSYS' | 'EFAULT' | 'ENODEV';

export interface IommuDriver {
  readonly name: string;
  /** The firmware description of this IOMMU: the core matches endpoints to it through VIOT. */
  readonly fw: FwViot;
  /** IOMMU_CAP_DEFERRED_FLUSH, and whether the hypervisor shadows every flush (a single flush queue suits it). */
  readonly caps: { readonly deferredFlush: boolean; readonly shadowOnFlush: boolean };
  /** probe_device: prepares the endpoint (PROBE of its reserved regions). False when it cannot be used. */
  probeDevice(dev: Device, endpoints: readonly number[]): boolean;
  releaseDevice(dev: Device): void;
  /** get_resv_regions: the probed regions, plus the software MSI window when none of them is an MSI region. */
  resvRegions(dev: Device): ResvRegion[];
  domainAlloc(type: IommuDomainType): IommuDomain | undefined;
  domainFree(domain: IommuDomain): void;
  attachDev(domain: IommuDomain, dev: Device): IommuErrno | undefined;
  /** map_pages: may only queue the request; visible to the device after iotlbSyncMap. */
  map(domain: IommuDomain, iova: Addr, paddr: Addr, size: number, prot: number): IommuErrno | undefined;
  /** unmap_pages: returns the bytes unmapped; may only queue the request until iotlbSync. */
  unmap(domain: IommuDomain, iova: Addr, size: number): number;
  iotlbSyncMap(domain: IommuDomain): IommuErrno | undefined;
  /** After unmaps: on return the device can no longer reach the unmapped IOVAs. */
  iotlbSync(domain: IommuDomain): void;
  /** flush_iotlb_all, for the lazy flush queue. */
  flushIotlbAll(domain: IommuDomain): void;
  /**
   * For a driver whose UNMAP request is itself the invalidation (virtio-iommu:
   * the device drops the mapping when it processes the request): `listener`
   * runs after every sync point that delivered all queued requests. A lazy
   * unmap stops being reachable there, usually long before the next flush.
   */
  onUnmapsDelivered?(listener: () => void): void;
  iovaToPhys(domain: IommuDomain, iova: Addr): Addr | undefined;
}
