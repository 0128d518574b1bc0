// The guest's report at power-off (abi/report.ts): what it found on its buses,
// what it negotiated with each virtio device, what it moved, and what failed.
import type { GuestReport, GuestVirtioReport } from '../abi/report.ts';
import type { InitResult } from '../abi/workload.ts';
import { VIRTIO_BLK_FEATURE_NAMES } from '../abi/virtio-blk.ts';
import { VIRTIO_IOMMU_FEATURE_NAMES } from '../abi/virtio-iommu.ts';
import { DEVICE_ID, DEVICE_NAME, F, featureNames, has, hex64, statusNames } from '../abi/virtio.ts';
import type { DmaSubsystem } from '../dma/index.ts';
import type { VirtioReport, VirtioStack } from '../drivers/index.ts';
import { viommuReports } from '../drivers/virtio-iommu.ts';
import type { Kernel } from './kernel.ts';
import { PAGE_SIZE } from './page-alloc.ts';

const DEVICE_FEATURE_NAMES: Readonly<Record<number, Readonly<Record<number, string>>>> = { [DEVICE_ID.BLOCK]: VIRTIO_BLK_FEATURE_NAMES, [DEVICE_ID.IOMMU]: VIRTIO_IOMMU_FEATURE_NAMES };

export function buildGuestReport(k: Kernel, dma: DmaSubsystem | undefined, drivers: VirtioStack | undefined, init: InitResult | undefined, panic: string | undefined): Omit<GuestReport, 'dmesg' | 'trace'> {
  const probeErrors = [...k.pci.failures, ...k.platform.failures, ...(drivers?.bus.failures ?? [])].map((f) => `${f.driver} ${f.device}: ${f.error}`);
  const dmaStats = dma?.stats();
  return {
    kernel: { cmdline: k.cmdline.text, cpus: k.cpus.count, memoryBytes: k.pages.totalPages * PAGE_SIZE, panic: panic ?? null },
    busDevices: [
      ...k.pci.devices.map((d) => ({ bus: 'pci', name: d.name, id: `${hex4(d.vendor)}:${hex4(d.deviceId)}`, driver: d.driver?.name ?? null, dmaBackend: d.dma.ops?.name ?? null })),
      ...k.platform.devices.map((d) => ({ bus: 'platform', name: d.name, id: d.kind, driver: d.driver?.name ?? null, dmaBackend: d.dma.ops?.name ?? null })),
    ],
    virtio: drivers?.report().map(virtioReport) ?? [],
    dma: {
      swiotlb: dmaStats?.swiotlb ? { ...dmaStats.swiotlb } : null,
      devices: dmaStats?.devices.map((d) => ({ device: d.device, backend: d.backend, maps: d.maps, unmaps: d.unmaps, bytesMapped: d.bytesMapped, mappingErrors: d.mappingErrors, bounces: d.bounces })) ?? [],
      iommu: dmaStats?.iommu ?? null,
    },
    viommus: drivers ? viommuReports(drivers.bus) : [],
    workload: init ?? null,
    interrupts: { byHandler: k.irqs.counts(), spurious: k.irqs.spurious },
    errors: [...probeErrors, ...(init?.errors ?? []), ...(panic ? [`panic: ${panic}`] : [])],
  };
}

function virtioReport(r: VirtioReport): GuestVirtioReport {
  const names = DEVICE_FEATURE_NAMES[r.deviceId] ?? {};
  return {
    name: r.device,
    transport: r.transport,
    busDevice: r.busDevice,
    deviceId: r.deviceId,
    deviceType: DEVICE_NAME[r.deviceId] ?? `virtio-${r.deviceId}`,
    driver: r.driver ?? null,
    offered: hex64(r.offered),
    offeredNames: featureNames(r.offered, names),
    accepted: hex64(r.accepted),
    acceptedNames: featureNames(r.accepted, names),
    status: r.status.map((s) => ({ op: s.op, value: s.value, names: statusNames(s.value) })),
    usesDmaApi: has(r.accepted, F.ACCESS_PLATFORM),
    queues: r.queues.map((q) => ({ name: q.name, size: q.num, added: q.added, bytesOut: q.bytesOut, bytesIn: q.bytesIn, kicks: q.kicks, kicksSuppressed: q.kicksSuppressed, interrupts: q.interrupts, broken: q.broken })),
    stats: r.stats ? { ...r.stats } : null,
    errors: r.errors,
  };
}

const hex4 = (v: number) => v.toString(16).padStart(4, '0');
