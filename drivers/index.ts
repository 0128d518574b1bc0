// The guest's virtio stack as the kernel sees it: registers the virtio bus
// drivers and the two transports (as Linux's module init would), and gives the
// workload the bound devices and the report its per-device negotiation.
import type { Kernel } from '../kernel/kernel.ts';
import { VirtioBlk, virtioBlkDriver, type BlkStats } from './virtio-blk.ts';
import { VirtioIommu, virtioIommuDriver } from './virtio-iommu.ts';
import { VirtioRng, virtioRngDriver, type RngStats } from './virtio-rng.ts';
import { VirtioBus, type VirtioDeviceReport } from './virtio/core.ts';
import { virtioMmioDriver } from './virtio/mmio.ts';
import { virtioPciDriver } from './virtio/pci.ts';
import type { VirtqueueStats } from './virtio/virtqueue.ts';

export interface VirtqueueReport extends VirtqueueStats {
  readonly name: string;
  readonly num: number;
  readonly broken: boolean;
}

export interface VirtioReport extends VirtioDeviceReport {
  /** The virtio driver bound, if any. */
  readonly driver: string | undefined;
  readonly queues: VirtqueueReport[];
  readonly stats: BlkStats | RngStats | undefined;
}

export interface VirtioStack {
  readonly bus: VirtioBus;
  /** Bound virtio-blk devices, in discovery order. */
  blk(): VirtioBlk[];
  rng(): VirtioRng[];
  /** Bound virtio-iommu devices; their reports come from viommuReports(bus). */
  iommus(): VirtioIommu[];
  report(): VirtioReport[];
}

export function registerVirtioDrivers(k: Kernel): VirtioStack {
  const bus = new VirtioBus(k);
  bus.registerVirtioDriver(virtioBlkDriver);
  bus.registerVirtioDriver(virtioRngDriver);
  bus.registerVirtioDriver(virtioIommuDriver);
  k.platform.registerDriver(virtioMmioDriver(k, bus));
  k.pci.registerDriver(virtioPciDriver(k, bus));
  const bound = () => bus.devices.map((d) => d.drvdata);
  return {
    bus,
    blk: () => bound().filter((d): d is VirtioBlk => d instanceof VirtioBlk),
    rng: () => bound().filter((d): d is VirtioRng => d instanceof VirtioRng),
    iommus: () => bound().filter((d): d is VirtioIommu => d instanceof VirtioIommu),
    report: () =>
      bus.devices.map((d) => ({
        ...d.report,
        driver: d.driver?.name,
        queues: d.vqs.map((vq) => ({ name: vq.name, num: vq.num, broken: vq.broken, ...vq.stats })),
        stats: d.drvdata instanceof VirtioBlk || d.drvdata instanceof VirtioRng ? d.drvdata.stats : undefined,
      })),
  };
}
