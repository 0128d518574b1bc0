// The init program the platform places in guest RAM (like -initrd): which
// work the guest runs after boot. UTF-8 JSON; the guest validates it.

export interface DiskWorkload {
  /** Bytes written as a seeded pattern, then read back and compared. */
  readonly bytes: number;
  /** Bytes per request; a multiple of the sector size. */
  readonly requestBytes: number;
  /** Requests kept in flight at once. */
  readonly queueDepth: number;
}

export interface EntropyWorkload {
  readonly bytes: number;
  readonly requestBytes: number;
}

/**
 * One of the IOVA benchmark's operation streams (bench/iova/workloads.ts)
 * replayed through the DMA API: every alloc a dma_map_page, every free a
 * dma_unmap_page, on a real device behind the machine's IOMMU.
 */
export interface DmaWorkload {
  /** The stream's name as `ivory bench iova --workload` takes it, e.g. `ring-48` or `nic:cpus=2`. */
  readonly stream: string;
  /** Measured operations (the build-up before them comes on top). */
  readonly ops: number;
  /** Which bound device maps: `virtio-blk` or `virtio-rng` (the first of its kind). */
  readonly device: 'virtio-blk' | 'virtio-rng';
}

export interface Workload {
  readonly seed: number;
  readonly disk?: DiskWorkload;
  readonly entropy?: EntropyWorkload;
  readonly dma?: DmaWorkload;
}

/** What the init program reports back. */
export interface DiskResult {
  readonly device: string;
  readonly bytes: number;
  readonly requestBytes: number;
  readonly queueDepth: number;
  readonly requests: number;
  /** Bytes read back that differed from what was written. */
  readonly mismatchedBytes: number;
  readonly failedRequests: number;
  readonly verified: boolean;
  /** CRC-32 of the pattern written, in disk order. */
  readonly crc32: string;
}

export interface EntropyResult {
  readonly device: string;
  readonly bytes: number;
  readonly crc32: string;
  readonly head: string;
}

export interface DmaResult {
  readonly device: string;
  readonly stream: string;
  /** All ops replayed, build-up included, and those in the measured phase. */
  readonly ops: number;
  readonly measuredOps: number;
  readonly maps: number;
  readonly unmaps: number;
  /** dma_map_page calls that returned DMA_MAPPING_ERROR. */
  readonly failedMaps: number;
  /** Virtual time the measured phase took: the modelled cost of its maps and unmaps. */
  readonly measuredVirtualNs: number;
}

export interface InitResult {
  readonly ok: boolean;
  readonly disk?: DiskResult;
  readonly entropy?: EntropyResult;
  readonly dma?: DmaResult;
  readonly errors: readonly string[];
}

export function encodeWorkload(w: Workload): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(w));
}

export function decodeWorkload(bytes: Uint8Array): Workload {
  return JSON.parse(new TextDecoder().decode(bytes)) as Workload;
}
