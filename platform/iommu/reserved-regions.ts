// Reserved IOVA regions of an endpoint, as a virtio-iommu PROBE reports them
// (RESV_MEM, virtio 1.4 §5.13.6.7.1): QEMU's `reserved-regions` property
// strings ("<low>:<high>:<type>", type 0 RESERVED, 1 MSI) and the host ranges
// QEMU 9.1+ derives from a VFIO device's usable IOVA ranges (rebuild_resv_regions).
import { type Addr, toAddr, toBig } from '../../abi/addr.ts';
import { VIRTIO_IOMMU_RESV_MEM_T } from '../../abi/virtio-iommu.ts';

export interface ResvRegion {
  readonly start: Addr;
  /** Inclusive. */
  readonly end: Addr;
  /** VIRTIO_IOMMU_RESV_MEM_T: RESERVED (0) or MSI (1). */
  readonly subtype: number;
}

export interface IovaRange {
  readonly start: Addr;
  /** Inclusive. */
  readonly end: Addr;
}

export const U64_MAX = 0xffff_ffff_ffff_ffffn;

const U64 = /^(0x[0-9a-f]{1,16}|[0-9]{1,20})$/i;

/** A u64 written in hex (0x…) or decimal; undefined if it is not one. */
export function parseU64(text: string): Addr | undefined {
  if (!U64.test(text)) return undefined;
  const v = BigInt(text);
  return v <= U64_MAX ? toAddr(v) : undefined;
}

/** One QEMU `reserved-regions` entry, "0xfee00000:0xfeefffff:1"; throws naming what is wrong. */
export function parseReservedRegion(text: string): ResvRegion {
  const parts = text.split(':');
  if (parts.length !== 3) throw new Error(`reserved region "${text}" is not <low>:<high>:<type>`);
  const [lo, hi, type] = parts.map((p) => p.trim()) as [string, string, string];
  const start = parseU64(lo);
  const end = parseU64(hi);
  if (start === undefined || end === undefined) throw new Error(`reserved region "${text}": bounds are not 64-bit numbers`);
  if (end < start) throw new Error(`reserved region "${text}": high is below low`);
  // QEMU's realize: "reserved region %d has an invalid type".
  if (type !== '0' && type !== '1') throw new Error(`reserved region "${text}" has an invalid type (0 reserved, 1 msi)`);
  return { start, end, subtype: Number(type) };
}

export const overlaps = (a: IovaRange, start: Addr, end: Addr): boolean => a.start <= end && a.end >= start;

/** What [0, 2^64 - 1] leaves outside `usable` (QEMU's range_inverse_array), as RESERVED regions. */
export function complement(usable: readonly IovaRange[]): ResvRegion[] {
  const sorted = [...usable].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: ResvRegion[] = [];
  let next = 0n;
  for (const r of sorted) {
    const s = toBig(r.start);
    if (s > next) out.push({ start: toAddr(next), end: toAddr(s - 1n), subtype: VIRTIO_IOMMU_RESV_MEM_T.RESERVED });
    const after = toBig(r.end) + 1n;
    if (after > next) next = after;
  }
  if (next <= U64_MAX) out.push({ start: toAddr(next), end: toAddr(U64_MAX), subtype: VIRTIO_IOMMU_RESV_MEM_T.RESERVED });
  return out;
}

/**
 * Host regions with the property regions laid over them: where they overlap
 * the property region wins and the host region is cut around it (QEMU's
 * resv_region_list_insert), so the result never overlaps itself. Sorted by start.
 */
export function mergeRegions(host: readonly ResvRegion[], property: readonly ResvRegion[]): ResvRegion[] {
  let pieces: ResvRegion[] = [...host];
  for (const p of property) {
    pieces = pieces.flatMap((h) => {
      if (!overlaps(h, p.start, p.end)) return [h];
      const keep: ResvRegion[] = [];
      if (h.start < p.start) keep.push({ ...h, end: toAddr(toBig(p.start) - 1n) });
      if (h.end > p.end) keep.push({ ...h, start: toAddr(toBig(p.end) + 1n) });
      return keep;
    });
  }
  return [...pieces, ...property].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
}
