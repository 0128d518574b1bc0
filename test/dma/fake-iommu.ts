// An in-test IOMMU driver for the IOMMU core and iommu-dma: it records every
// call, keeps its own page table, and models what the device can reach the way
// a real IOTLB does: a map becomes reachable at iotlbSyncMap, an unmapped page
// stays reachable until iotlbSync or flushIotlbAll.
import { toBig, type Addr } from '../../abi/addr.ts';
import type { FwViot } from '../../abi/firmware.ts';
import type {
  IommuDomain,
  IommuDomainType,
  IommuDriver,
  IommuErrno,
  IommuGeometry,
  ResvRegion,
} from '../../dma/iommu-ops.ts';
import type { Device } from '../../kernel/device.ts';

export type FakeCall =
  | { readonly op: 'probe'; readonly dev: string; readonly endpoints: readonly number[] }
  | { readonly op: 'attach'; readonly dev: string; readonly domain: string; readonly type: IommuDomainType }
  | { readonly op: 'map'; readonly iova: Addr; readonly paddr: Addr; readonly size: number; readonly prot: number }
  | { readonly op: 'unmap'; readonly iova: Addr; readonly size: number }
  | { readonly op: 'syncMap' | 'sync' | 'flushAll' };

export interface FakeIommuOptions {
  readonly name?: string;
  readonly geometry?: Partial<IommuGeometry>;
  readonly resv?: readonly ResvRegion[];
  readonly caps?: IommuDriver['caps'];
  /** Whether domainAlloc('identity') succeeds. */
  readonly identity?: boolean;
  readonly probeOk?: boolean;
  /** Map calls for which this says true fail with EIO. */
  readonly failMap?: (iova: Addr) => boolean;
}

interface Pte {
  readonly paddr: bigint;
  readonly prot: number;
}

/** A host-side view of one VIOT entry: the IOMMU at PCI 00:01.0, endpoints 00:02.0 up and one mmio window. */
export const FAKE_VIOT: FwViot = {
  kind: 'virtio-iommu',
  pci: { segment: 0, bdf: 0x08 },
  pciRanges: [{ segment: 0, bdfStart: 0x00, bdfEnd: 0xff, endpointStart: 0x100 }],
  mmioEndpoints: [{ base: 0xa00_0000, endpoint: 0x1000 }],
};

export class FakeIommu implements IommuDriver {
  readonly name: string;
  readonly fw = FAKE_VIOT;
  readonly caps: IommuDriver['caps'];
  readonly geometry: IommuGeometry;
  readonly calls: FakeCall[] = [];
  /** Each time a page was mapped while the device could still reach an earlier mapping of it. */
  readonly violations: string[] = [];
  private readonly shift: bigint;
  /** The driver's own page table, by granule pfn. */
  private readonly table = new Map<bigint, Pte>();
  /** What the device reaches through the IOTLB. */
  private readonly reachable = new Map<bigint, Pte>();
  private pendingMaps: bigint[] = [];
  private pendingUnmaps: bigint[] = [];
  private domains = 0;

  constructor(private readonly opts: FakeIommuOptions = {}) {
    this.name = opts.name ?? 'fake-iommu';
    this.caps = opts.caps ?? { deferredFlush: true, shadowOnFlush: false };
    this.geometry = { apertureStart: 0, apertureEnd: 0xffff_ffff_ffff_ffffn, pgsizeBitmap: 0x4020_1000n, ...opts.geometry };
    const bitmap = this.geometry.pgsizeBitmap;
    this.shift = BigInt((bitmap & -bitmap).toString(2).length - 1);
  }

  /** The device's view: the physical address `iova` reaches, or undefined. */
  translate(iova: Addr): bigint | undefined {
    const a = toBig(iova);
    const pte = this.reachable.get(a >> this.shift);
    return pte && pte.paddr + (a & ((1n << this.shift) - 1n));
  }

  count(op: FakeCall['op']): number {
    return this.calls.filter((c) => c.op === op).length;
  }

  probeDevice(dev: Device, endpoints: readonly number[]): boolean {
    this.calls.push({ op: 'probe', dev: dev.name, endpoints });
    return this.opts.probeOk ?? true;
  }

  releaseDevice(): void {}

  resvRegions(): ResvRegion[] {
    return [...(this.opts.resv ?? [])];
  }

  domainAlloc(type: IommuDomainType): IommuDomain | undefined {
    if (type === 'identity' && !this.opts.identity) return undefined;
    return { type, geometry: this.geometry, name: String(++this.domains) };
  }

  domainFree(): void {}

  attachDev(domain: IommuDomain, dev: Device): IommuErrno | undefined {
    this.calls.push({ op: 'attach', dev: dev.name, domain: domain.name, type: domain.type });
    return undefined;
  }

  map(_domain: IommuDomain, iova: Addr, paddr: Addr, size: number, prot: number): IommuErrno | undefined {
    this.calls.push({ op: 'map', iova, paddr, size, prot });
    if (this.opts.failMap?.(iova)) return 'EIO';
    const first = toBig(iova) >> this.shift;
    const pages = BigInt(size) >> this.shift;
    for (let i = 0n; i < pages; i++) {
      if (this.table.has(first + i)) return 'EINVAL';
      if (this.reachable.has(first + i)) this.violations.push(`0x${((first + i) << this.shift).toString(16)} mapped again while still reachable`);
    }
    for (let i = 0n; i < pages; i++) {
      this.table.set(first + i, { paddr: toBig(paddr) + (i << this.shift), prot });
      this.pendingMaps.push(first + i);
    }
    return undefined;
  }

  unmap(_domain: IommuDomain, iova: Addr, size: number): number {
    this.calls.push({ op: 'unmap', iova, size });
    const first = toBig(iova) >> this.shift;
    const pages = BigInt(size) >> this.shift;
    let unmapped = 0;
    for (let i = 0n; i < pages && this.table.delete(first + i); i++) {
      this.pendingUnmaps.push(first + i);
      unmapped += 2 ** Number(this.shift);
    }
    return unmapped;
  }

  iotlbSyncMap(): IommuErrno | undefined {
    this.calls.push({ op: 'syncMap' });
    for (const pfn of this.pendingMaps) {
      const pte = this.table.get(pfn);
      if (pte) this.reachable.set(pfn, pte);
    }
    this.pendingMaps = [];
    return undefined;
  }

  iotlbSync(): void {
    this.calls.push({ op: 'sync' });
    this.invalidate();
  }

  flushIotlbAll(): void {
    this.calls.push({ op: 'flushAll' });
    this.invalidate();
  }

  iovaToPhys(_domain: IommuDomain, iova: Addr): Addr | undefined {
    const a = toBig(iova);
    const pte = this.table.get(a >> this.shift);
    return pte && pte.paddr + (a & ((1n << this.shift) - 1n));
  }

  private invalidate(): void {
    for (const pfn of this.pendingUnmaps) if (!this.table.has(pfn)) this.reachable.delete(pfn);
    this.pendingUnmaps = [];
  }
}
