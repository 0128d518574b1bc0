// The guest's account of a run, handed back at power-off (GuestExit.report)
// and printed by the CLI next to the host's. Plain JSON: 64-bit values are
// hex strings.
import type { TraceEvent } from './trace.ts';
import type { InitResult } from './workload.ts';

export interface StatusStep {
  readonly op: 'read' | 'write';
  readonly value: number;
  readonly names: readonly string[];
}

export interface GuestQueueReport {
  readonly name: string;
  readonly size: number;
  readonly added: number;
  readonly bytesOut: number;
  readonly bytesIn: number;
  readonly kicks: number;
  readonly kicksSuppressed: number;
  readonly interrupts: number;
  readonly broken: boolean;
}

export interface GuestVirtioReport {
  readonly name: string;
  readonly transport: string;
  /** The transport device: a PCI BDF or a virtio-mmio platform device. */
  readonly busDevice: string;
  readonly deviceId: number;
  readonly deviceType: string;
  readonly driver: string | null;
  readonly offered: string;
  readonly offeredNames: readonly string[];
  readonly accepted: string;
  readonly acceptedNames: readonly string[];
  readonly status: readonly StatusStep[];
  readonly usesDmaApi: boolean;
  readonly queues: readonly GuestQueueReport[];
  readonly stats: Readonly<Record<string, number>> | null;
  readonly errors: readonly string[];
}

export interface GuestBusDevice {
  readonly bus: string;
  readonly name: string;
  /** vendor:device for PCI, the firmware's kind for platform devices. */
  readonly id: string;
  readonly driver: string | null;
  readonly dmaBackend: string | null;
}

export interface GuestDmaDevice {
  readonly device: string;
  readonly backend: string;
  readonly maps: number;
  readonly unmaps: number;
  readonly bytesMapped: number;
  readonly mappingErrors: number;
  readonly bounces: number;
}

/** The bounce buffer pool, when the kernel set one up. */
export interface GuestSwiotlb {
  readonly start: number;
  /** 2 KiB slots in the pool. */
  readonly nslabs: number;
  readonly used: number;
  readonly hiwater: number;
  readonly bounces: number;
  readonly bytesBounced: number;
}

/** A virtio-iommu as its guest driver saw it (drivers/virtio-iommu.ts). */
export interface GuestViommuEndpointReport {
  readonly device: string;
  readonly ids: number[];
  readonly domain: string | null;
  readonly resvRegions: { start: string; end: string; type: string }[];
  readonly mappingsMade: number;
  readonly mappingsRemoved: number;
  readonly lowestIova: string | null;
  readonly highestIova: string | null;
  readonly faults: number;
}

export interface GuestViommuReport {
  readonly device: string;
  readonly busDevice: string;
  readonly config: { pageSizeMask: string; inputStart: string; inputEnd: string; domainStart: number; domainEnd: number; probeSize: number; bypass: number | null };
  readonly features: string[];
  /** Completed requests by type, then by status name. */
  readonly requests: Record<string, Record<string, number>>;
  readonly endpoints: GuestViommuEndpointReport[];
  readonly faults: { byReason: Record<string, number>; byEndpoint: Record<string, number>; ignored: number; invalid: number };
}

// The IOMMU core and iommu-dma's account (dma/iommu.ts, dma/iommu-dma.ts).
export interface IovaStats {
  /** Successful allocFast calls. */
  allocs: number;
  /** allocFast calls that found no space. */
  failures: number;
  /** allocFast calls served from a cache without touching the allocator proper. */
  rcacheHits: number;
  /** allocFast calls that went to the allocator proper (including sizes no cache holds). */
  rcacheMisses: number;
  /** Ranges the allocator proper holds: live, cached, and reserved. */
  ranges: number;
}

/**
 * Lazy unmaps the device could still reach. A range is invalidated by the next
 * flush, or with virtio-iommu by the sync point that delivered its UNMAP.
 */
export interface ExposureStats {
  /** Unmapped IOVA ranges that stayed reachable until invalidated. */
  readonly rangesExposed: number;
  /** Per range, virtual time from its unmap to its invalidation. */
  readonly maxWindowNs: number;
  readonly meanWindowNs: number;
  /** The most stale ranges a single invalidation ended. */
  readonly maxStale: number;
  /** Stale ranges right now, waiting for their invalidation. */
  readonly staleNow: number;
}

export interface FlushQueueConfig {
  readonly queues: number;
  readonly size: number;
  readonly timeoutNs: number;
}

export interface IommuDmaDomainStats {
  readonly domain: string;
  readonly granule: number;
  readonly invalidation: 'strict' | 'lazy';
  readonly flushQueue: FlushQueueConfig | null;
  /** IOVA ranges mapped and unmapped (a scatterlist is one range). */
  readonly maps: number;
  readonly unmaps: number;
  /** Strict invalidations (one per unmap) and flush-queue flushes of the whole IOTLB. */
  readonly iotlbSyncs: number;
  readonly flushes: number;
  readonly iova: IovaStats;
  readonly lowestIova: string | null;
  /** The last byte of the highest range handed out. */
  readonly highestIova: string | null;
  readonly exposure: ExposureStats;
}

export interface IommuDeviceStats {
  readonly device: string;
  readonly iommu: string;
  readonly endpoints: readonly number[];
  readonly group: number;
  readonly domain: string;
  readonly domainType: string;
  readonly resvRegions: readonly { readonly start: string; readonly end: string; readonly type: string }[];
}

export interface IommuStats {
  readonly defaultDomainType: 'dma' | 'identity';
  readonly strict: boolean;
  readonly iommus: readonly string[];
  readonly devices: readonly IommuDeviceStats[];
  /** Translated domains only: identity domains have no IOVA space. */
  readonly domains: readonly IommuDmaDomainStats[];
}

export interface GuestReport {
  readonly kernel: { readonly cmdline: string; readonly cpus: number; readonly memoryBytes: number; readonly panic: string | null };
  readonly busDevices: readonly GuestBusDevice[];
  readonly virtio: readonly GuestVirtioReport[];
  readonly dma: { readonly swiotlb: GuestSwiotlb | null; readonly devices: readonly GuestDmaDevice[]; readonly iommu: IommuStats | null };
  /** Each virtio-iommu driver's view: config, requests by type and status, endpoints, faults. */
  readonly viommus: readonly GuestViommuReport[];
  readonly workload: InitResult | null;
  readonly interrupts: { readonly byHandler: Readonly<Record<string, number>>; readonly spurious: number };
  readonly errors: readonly string[];
  readonly dmesg: readonly string[];
  readonly trace: readonly TraceEvent[];
}
