// The host IOMMU behind an assigned (VFIO) endpoint: its own address width and
// usable IOVA ranges (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) and a limit on DMA
// mappings (vfio_iommu_type1 dma_entry_limit). A guest MAP the host cannot
// honour fails here as VFIO_IOMMU_MAP_DMA does on a real machine: -EINVAL
// outside the usable ranges (the reason QEMU 9.0 added aw-bits), -ENOSPC past the limit.
import { type Addr, hexAddr, toAddr } from '../../abi/addr.ts';
import type { EventLoop } from '../events.ts';
import type { HostTrace } from '../trace.ts';
import { IntervalTree } from './interval-tree.ts';
import { type IovaRange, type ResvRegion, complement } from './reserved-regions.ts';

export const EINVAL = 22;
export const ENOSPC = 28;
const ERRNO_NAME: Readonly<Record<number, string>> = { [EINVAL]: 'Invalid argument', [ENOSPC]: 'No space left on device' };

/** vfio_iommu_type1's default dma_entry_limit (U16_MAX). */
export const VFIO_DMA_ENTRY_LIMIT = 65535;

export interface HostIommuOptions {
  /** Input address width of the host IOMMU (Intel VT-d: 39 or 48). Default 48. */
  readonly awBits?: number;
  /** Usable IOVA ranges as VFIO reports them; default [0, 2^awBits - 1]. */
  readonly usableRanges?: readonly IovaRange[];
  readonly dmaEntryLimit?: number;
}

/** The usable ranges an x86 host reports: its aperture minus the interrupt-remapping window 0xfee00000-0xfeefffff. */
export function x86HostIovaRanges(awBits: number): IovaRange[] {
  return [
    { start: 0, end: 0xfedf_ffff },
    { start: 0xfef0_0000, end: toAddr((1n << BigInt(awBits)) - 1n) },
  ];
}

export interface HostFailure {
  readonly ts: number;
  readonly iova: string;
  readonly size: string;
  readonly errno: number;
  /** As QEMU logs it: vfio_container_dma_map(...) = -22 (Invalid argument). */
  readonly message: string;
}

interface HostMapping {
  readonly gpa: Addr;
  readonly writable: boolean;
}

export class HostIommu {
  readonly awBits: number;
  readonly usable: readonly IovaRange[];
  readonly dmaEntryLimit: number;
  readonly failures: HostFailure[] = [];
  readonly stats = { maps: 0, unmaps: 0, faults: 0 };
  /** Byte-keyed: the guest's mappings need not be page aligned under every profile. */
  private readonly mappings = new IntervalTree<HostMapping>();

  constructor(
    readonly name: string,
    private readonly events: EventLoop,
    private readonly trace: HostTrace,
    opts: HostIommuOptions = {},
  ) {
    this.awBits = opts.awBits ?? 48;
    if (!Number.isInteger(this.awBits) || this.awBits < 32 || this.awBits > 64) throw new Error(`${name}: host IOMMU awBits ${this.awBits} outside [32, 64]`);
    this.usable = (opts.usableRanges ?? [{ start: 0, end: (1n << BigInt(this.awBits)) - 1n }]).map((r) => {
      if (r.end < r.start) throw new Error(`${name}: usable IOVA range ${hexAddr(r.start)}-${hexAddr(r.end)} ends before it starts`);
      return { start: toAddr(r.start), end: toAddr(r.end) };
    });
    this.dmaEntryLimit = opts.dmaEntryLimit ?? VFIO_DMA_ENTRY_LIMIT;
  }

  /** The complement of the usable ranges, as QEMU 9.1+ probes them (RESERVED). */
  reservedRegions(): ResvRegion[] {
    return complement(this.usable);
  }

  /** VFIO_IOMMU_MAP_DMA of [iova, end] to `gpa`: 0, or a negative errno. */
  map(iova: Addr, end: Addr, gpa: Addr, writable: boolean): number {
    let err = 0;
    if (!this.usable.some((r) => r.start <= iova && end <= r.end)) err = -EINVAL;
    else if (this.mappings.size >= this.dmaEntryLimit) err = -ENOSPC;
    else if (!this.mappings.insert(iova, end, { gpa, writable })) err = -EINVAL;
    if (err !== 0) {
      this.fail(iova, end, err);
      return err;
    }
    this.stats.maps++;
    return 0;
  }

  /** VFIO_IOMMU_UNMAP_DMA of the mapping that starts at `iova`, if the host holds it. */
  unmap(iova: Addr): void {
    if (this.mappings.remove(iova) !== undefined) this.stats.unmaps++;
  }

  /** Everything goes: the endpoint left its domain. */
  unmapAll(): void {
    this.stats.unmaps += this.mappings.size;
    this.mappings.clear();
  }

  /** Whether a DMA to [iova, last] gets through the host IOMMU; a miss is a host-side fault (a DMAR fault in the host's log, never seen by the guest). */
  allows(iova: Addr, last: Addr, write: boolean): boolean {
    const m = this.mappings.find(iova);
    if (m !== undefined && last <= m.end && (m.value.writable || !write)) return true;
    this.stats.faults++;
    if (this.trace.enabled) this.trace.emit('host_iommu_fault', { dev: this.name, iova: hexAddr(iova), write });
    return false;
  }

  private fail(iova: Addr, end: Addr, err: number): void {
    const size = hexAddr(toAddr(BigInt(end) - BigInt(iova) + 1n));
    const message = `vfio_container_dma_map(${this.name}, ${hexAddr(iova)}, ${size}) = ${err} (${ERRNO_NAME[-err]})`;
    this.failures.push({ ts: this.events.now, iova: hexAddr(iova), size, errno: err, message });
    this.trace.emit('vfio_dma_map_failed', { dev: this.name, iova: hexAddr(iova), size, errno: err });
  }
}
