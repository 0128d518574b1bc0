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

export interface Workload {
  readonly seed: number;
  readonly disk?: DiskWorkload;
  readonly entropy?: EntropyWorkload;
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

export interface InitResult {
  readonly ok: boolean;
  readonly disk?: DiskResult;
  readonly entropy?: EntropyResult;
  readonly errors: readonly string[];
}

export function encodeWorkload(w: Workload): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(w));
}

export function decodeWorkload(bytes: Uint8Array): Workload {
  return JSON.parse(new TextDecoder().decode(bytes)) as Workload;
}
