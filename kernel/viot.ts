// VIOT: which virtual IOMMU translates for a device, and the endpoint ID it
// knows the device by (Linux drivers/acpi/viot.c builds an iommu_fwspec from
// the same table). PCI endpoints are matched by requester ID, virtio-mmio ones
// by their window's base address.
import type { FwViot } from '../abi/firmware.ts';
import type { Device } from './device.ts';
import type { Kernel } from './kernel.ts';
import { PciDevice } from './pci.ts';
import { PlatformDevice } from './platform-bus.ts';

export interface IommuFwspec {
  readonly iommu: FwViot;
  readonly endpoints: readonly number[];
}

/** The requester ID of a PCI function: bus << 8 | device << 3 | function. */
export const pciRequesterId = (dev: PciDevice): number => (dev.busNr << 8) | (dev.slot << 3) | dev.fn;

export function viotFwspec(k: Pick<Kernel, 'firmware'>, dev: Device): IommuFwspec | undefined {
  for (const iommu of k.firmware.viot ?? []) {
    if (isViotIommu(iommu, dev)) continue; // an IOMMU never translates its own DMA, as Linux's viot.c
    if (dev instanceof PciDevice) {
      const rid = pciRequesterId(dev);
      const r = iommu.pciRanges.find((x) => x.segment === dev.bridge.segment && rid >= x.bdfStart && rid <= x.bdfEnd);
      if (r) return { iommu, endpoints: [r.endpointStart + (rid - r.bdfStart)] };
    } else if (dev instanceof PlatformDevice) {
      const m = iommu.mmioEndpoints.find((x) => x.base === dev.base);
      if (m) return { iommu, endpoints: [m.endpoint] };
    }
  }
  return undefined;
}

/** Is `dev` the IOMMU that VIOT entry `fw` describes? */
export function isViotIommu(fw: FwViot, dev: Device): boolean {
  if (dev instanceof PciDevice) return fw.pci !== undefined && fw.pci.segment === dev.bridge.segment && fw.pci.bdf === pciRequesterId(dev);
  if (dev instanceof PlatformDevice) return fw.mmioBase === dev.base;
  return false;
}
