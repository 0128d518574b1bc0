// iommu-dma, the DMA API over a translated IOMMU domain (Linux
// drivers/iommu/dma-iommu.c): each domain's cookie owns an IOVA domain; a
// mapping takes IOVA pages and maps them through the IOMMU driver; an unmap is
// invalidated at once (strict) or through the flush queue (lazy, dma/iova-fq.ts).
import type { IommuDmaDomainStats } from '../abi/report.ts';
import { DMA_MAPPING_ERROR, addAddr, hexAddr, type Addr } from '../abi/addr.ts';
import type { Device } from '../kernel/device.ts';
import type { Kernel } from '../kernel/kernel.ts';
import { PAGE_SIZE } from '../kernel/page-alloc.ts';
import { PciDevice } from '../kernel/pci.ts';
import { devNotice } from './dev-state.ts';
import { SIZE_MAX, dmaLimit } from './direct.ts';
import { IOMMU_PROT, type IommuDomain, type IommuDriver, type ResvRegion } from './iommu-ops.ts';
import { FlushQueue, NO_EXPOSURE, type FqKernel } from './iova-fq.ts';
import { IOVA_MAX_PFN, roundupPow2, type IovaDomain, type IovaDomainParams } from './iova.ts';
import { DEFAULT_IOVA_STRATEGY, IOVA_STRATEGIES } from './iova/index.ts';
import type { CoherentBuffer, DmaDirection, DmaOps, ScatterEntry } from './ops.ts';

export type IommuDmaKernel = FqKernel & Pick<Kernel, 'cmdline' | 'mem' | 'pages' | 'log'>;


/** dma_info_to_prot, without the attributes this DMA API has no use for. */
const DIR_PROT = [IOMMU_PROT.READ | IOMMU_PROT.WRITE, IOMMU_PROT.READ, IOMMU_PROT.WRITE, 0];

/**
 * struct iommu_dma_cookie: a translated domain's IOVA space and flush queue.
 * Reserved regions are carved out when it is made, before any allocation.
 */
export class IommuDmaCookie {
  readonly granule: number;
  readonly shift: number;
  readonly iovad: IovaDomain;
  private readonly shiftN: bigint;
  private readonly offsetMaskN: bigint;
  /** Pfns below this make IOVAs below 2^53, which stay numbers. */
  private readonly numberPfnLimit: number;
  /** DMA_BIT_MASK(32) as a limit pfn. */
  readonly dma32LimitPfn: number;
  private readonly apertureEnd: bigint;
  /** Hardware MSI windows: doorbells there pass untranslated. */
  private readonly hwMsi: readonly ResvRegion[];
  /** Doorbell page → its IOVA, mapped on first use by any device of the domain (msi_page_list). */
  readonly msiPages = new Map<number, Addr>();
  /** Lazy invalidation; strict without one. */
  private readonly fq: FlushQueue | undefined;
  private readonly counters = { maps: 0, unmaps: 0, iotlbSyncs: 0 };
  private lowestPfn = Infinity;
  private highestPfn = -1;

  constructor(
    readonly k: IommuDmaKernel,
    readonly driver: IommuDriver,
    readonly domain: IommuDomain,
    dev: Device,
    resv: readonly ResvRegion[],
    lazy: boolean,
  ) {
    const geo = domain.geometry;
    this.shift = lowestBit(geo.pgsizeBitmap);
    this.granule = 2 ** this.shift;
    this.shiftN = BigInt(this.shift);
    this.offsetMaskN = BigInt(this.granule - 1);
    this.numberPfnLimit = 2 ** (53 - this.shift);
    this.dma32LimitPfn = 2 ** (32 - this.shift) - 1;
    this.apertureEnd = BigInt(geo.apertureEnd);
    this.iovad = createIovaDomain(k, {
      granuleShift: this.shift,
      startPfn: Math.max(1, this.addrPfn(geo.apertureStart)),
      cpus: k.cpus,
      timers: k.timers,
    });
    this.hwMsi = resv.filter((r) => r.type === 'msi');
    this.reserveRegions(dev, resv);
    if (lazy) this.fq = new FlushQueue(k, this.iovad, driver, domain);
  }

  /** The highest pfn a device with this DMA limit may get: the limit clipped to the aperture. */
  limitPfn(dmaLimit: bigint): number {
    const limit = dmaLimit < this.apertureEnd ? dmaLimit : this.apertureEnd;
    return Math.min(Number(limit >> this.shiftN), IOVA_MAX_PFN);
  }

  iovaOf(pfn: number, offset: number): Addr {
    return pfn < this.numberPfnLimit ? pfn * this.granule + offset : (BigInt(pfn) << this.shiftN) | BigInt(offset);
  }

  addrPfn(addr: Addr): number {
    return typeof addr === 'number' ? Math.floor(addr / this.granule) : Number(addr >> this.shiftN);
  }

  addrOffset(addr: Addr): number {
    return typeof addr === 'number' ? addr % this.granule : Number(addr & this.offsetMaskN);
  }

  /** Granule pages covering `size` bytes that start `offset` bytes into a page. */
  pagesFor(offset: number, size: number): number {
    return Math.ceil((offset + size) / this.granule);
  }

  /** iommu_map: map, then make it visible; undone if the sync fails. */
  mapRange(iova: Addr, phys: number, bytes: number, prot: number): boolean {
    const { driver, domain } = this;
    if (driver.map(domain, iova, phys, bytes, prot) !== undefined) return false;
    if (driver.iotlbSyncMap(domain) === undefined) return true;
    driver.unmap(domain, iova, bytes);
    driver.iotlbSync(domain);
    return false;
  }

  /** Bookkeeping for a range now mapped. */
  mapped(pfn: number, pages: number, phys: number): void {
    this.counters.maps++;
    if (pfn < this.lowestPfn) this.lowestPfn = pfn;
    if (pfn + pages - 1 > this.highestPfn) this.highestPfn = pfn + pages - 1;
    if (this.k.trace.enabled) this.k.trace.emit('map', { domain: this.domain.name, iova: hexAddr(this.iovaOf(pfn, 0)), paddr: hexAddr(phys), size: pages * this.granule });
  }

  /**
   * __iommu_dma_unmap. Unlike Linux, a range the driver did not fully unmap
   * stays allocated: handing it out again could alias whatever is still mapped there.
   */
  unmapRange(pfn: number, pages: number): void {
    const { driver, domain } = this;
    const iova = this.iovaOf(pfn, 0);
    const bytes = pages * this.granule;
    const unmapped = driver.unmap(domain, iova, bytes);
    if (this.k.trace.enabled) this.k.trace.emit('unmap', { domain: domain.name, iova: hexAddr(iova), size: bytes, unmapped_size: unmapped });
    if (!this.fq) {
      driver.iotlbSync(domain);
      this.counters.iotlbSyncs++;
    }
    if (unmapped !== bytes) {
      this.k.log.warn(`iommu-dma: domain ${domain.name}: unmap of ${hexAddr(iova)}+${bytes} removed ${unmapped} bytes; IOVA range kept out of use`);
      return;
    }
    this.counters.unmaps++;
    if (this.fq) this.fq.queue(pfn, pages);
    else this.iovad.freeFast(pfn, pages);
  }

  /** Hardware MSI windows are identity-mapped by the IOMMU itself. */
  inHwMsiWindow(addr: number): boolean {
    return this.hwMsi.some((r) => addr >= r.start && addr <= r.end);
  }

  stats(): IommuDmaDomainStats {
    const { fq } = this;
    const used = this.highestPfn >= 0;
    return {
      domain: this.domain.name,
      granule: this.granule,
      invalidation: fq ? 'lazy' : 'strict',
      flushQueue: fq?.config ?? null,
      ...this.counters,
      flushes: fq?.flushes ?? 0,
      iova: this.iovad.stats(),
      lowestIova: used ? hexAddr(this.iovaOf(this.lowestPfn, 0)) : null,
      highestIova: used ? hexAddr(this.iovaOf(this.highestPfn, this.granule - 1)) : null,
      exposure: fq?.exposureStats() ?? NO_EXPOSURE,
    };
  }

  /**
   * iova_reserve_iommu_regions: a PCI device's host-bridge windows (a DMA
   * there would reach a peer, not the IOMMU) and every reserved region but
   * sw-msi, whose doorbell dma-iommu maps itself.
   */
  private reserveRegions(dev: Device, resv: readonly ResvRegion[]): void {
    if (dev instanceof PciDevice) {
      for (const w of [dev.bridge.mmio32, dev.bridge.mmio64]) {
        if (w && w.size > 0) this.iovad.reserve(this.addrPfn(w.base), this.addrPfn(w.base + w.size - 1));
      }
    }
    for (const r of resv) if (r.type !== 'sw-msi') this.iovad.reserve(this.addrPfn(r.start), this.addrPfn(r.end));
  }
}

/** The DMA ops of one device in a translated domain. */
export class IommuDmaOps implements DmaOps {
  readonly name = 'iommu-dma';
  /** pci_32bit_workaround: try below 4 GiB first until that fails once. */
  private pci32bitWorkaround: boolean;
  /** The streaming mask last seen and its limit pfn: masks rarely change, limits are asked on every map. */
  private maskSeen = -1n;
  private maskLimitPfn = 0;

  constructor(
    readonly cookie: IommuDmaCookie,
    dev: Device,
  ) {
    this.pci32bitWorkaround = dev instanceof PciDevice;
  }

  mapPhys(dev: Device, phys: number, size: number, dir: DmaDirection): Addr {
    return this.map(dev, phys, size, DIR_PROT[dir]!, this.streamingLimitPfn(dev));
  }

  unmapPhys(_dev: Device, addr: Addr, size: number): void {
    const c = this.cookie;
    c.unmapRange(c.addrPfn(addr), c.pagesFor(c.addrOffset(addr), size));
  }

  /** iommu_dma_map_sg: one IOVA range for the whole list, each entry starting on a granule. */
  mapSg(dev: Device, sg: ScatterEntry[], dir: DmaDirection): number {
    const c = this.cookie;
    let pages = 0;
    for (const e of sg) pages += c.pagesFor(e.phys % c.granule, e.length);
    const pfn = this.allocIova(dev, pages, this.streamingLimitPfn(dev), Math.floor(sg[0]!.phys / c.granule));
    if (pfn < 0) return 0;
    if (!this.mapSgRuns(sg, pfn, pages, DIR_PROT[dir]!)) {
      c.iovad.freeFast(pfn, pages);
      return 0;
    }
    let at = pfn;
    for (const e of sg) {
      const offset = e.phys % c.granule;
      e.dmaAddress = c.iovaOf(at, offset);
      e.dmaLength = e.length;
      at += c.pagesFor(offset, e.length);
    }
    c.mapped(pfn, pages, sg[0]!.phys);
    return sg.length;
  }

  unmapSg(_dev: Device, sg: ScatterEntry[]): void {
    const c = this.cookie;
    const first = sg[0]?.dmaAddress;
    if (first === undefined) return;
    let pages = 0;
    for (const e of sg) pages += c.pagesFor(c.addrOffset(e.dmaAddress!), e.dmaLength ?? e.length);
    c.unmapRange(c.addrPfn(first), pages);
  }

  /** Zeroed pages mapped READ|WRITE below the coherent mask; aligned to their order, as DMA-API.rst promises. */
  allocCoherent(dev: Device, size: number): CoherentBuffer | undefined {
    const { k } = this.cookie;
    const count = Math.ceil(size / PAGE_SIZE);
    const gpa = k.pages.alloc(count, Number.MAX_SAFE_INTEGER, roundupPow2(count));
    if (gpa < 0) return undefined;
    k.mem.fill(gpa, count * PAGE_SIZE);
    const limitPfn = this.cookie.limitPfn(dmaLimit(dev, dev.dma.coherentMask));
    const dmaAddr = this.map(dev, gpa, count * PAGE_SIZE, IOMMU_PROT.READ | IOMMU_PROT.WRITE, limitPfn);
    if (dmaAddr === DMA_MAPPING_ERROR) {
      k.pages.freePagesAt(gpa, count);
      return undefined;
    }
    return { cpuAddr: gpa, dmaAddr, size };
  }

  freeCoherent(dev: Device, buf: CoherentBuffer): void {
    const count = Math.ceil(buf.size / PAGE_SIZE);
    this.unmapPhys(dev, buf.dmaAddr, count * PAGE_SIZE);
    this.cookie.k.pages.freePagesAt(buf.cpuAddr, count);
  }

  /** Cache-coherent devices, and nothing bounces: there is nothing to sync. */
  syncForCpu(): void {}

  syncForDevice(): void {}

  maxMappingSize(): number {
    return SIZE_MAX;
  }

  /** iommu_dma_alloc_iova: below 4 GiB first for PCI devices (SAC is cheaper on real buses), then up to the limit. */
  allocIova(dev: Device, pages: number, limitPfn: number, physPfn: number): number {
    const { iovad, dma32LimitPfn } = this.cookie;
    if (this.pci32bitWorkaround && limitPfn > dma32LimitPfn) {
      const pfn = iovad.allocFast(pages, dma32LimitPfn, false, physPfn);
      if (pfn >= 0) return pfn;
      this.pci32bitWorkaround = false;
      devNotice(dev, `Using ${limitPfn.toString(2).length + this.cookie.shift}-bit DMA addresses`);
    }
    return iovad.allocFast(pages, limitPfn, true, physPfn);
  }

  /** iommu_dma_get_msi_page: the doorbell's page mapped WRITE|MMIO once per domain, the offset kept. */
  msiAddress(dev: Device, doorbell: number): Addr {
    const c = this.cookie;
    if (c.inHwMsiWindow(doorbell)) return doorbell;
    const offset = doorbell % c.granule;
    const page = doorbell - offset;
    let iova = c.msiPages.get(page);
    if (iova === undefined) {
      iova = this.map(dev, page, c.granule, IOMMU_PROT.WRITE | IOMMU_PROT.MMIO, c.limitPfn(dmaLimit(dev)));
      if (iova === DMA_MAPPING_ERROR) return iova;
      c.msiPages.set(page, iova);
    }
    return addAddr(iova, offset);
  }

  /** __iommu_dma_map: the offset into the first page is kept, the pages around the buffer are mapped whole. */
  private map(dev: Device, phys: number, size: number, prot: number, limitPfn: number): Addr {
    const c = this.cookie;
    const offset = phys % c.granule;
    const pages = c.pagesFor(offset, size);
    const pfn = this.allocIova(dev, pages, limitPfn, (phys - offset) / c.granule);
    if (pfn < 0) return DMA_MAPPING_ERROR;
    if (!c.mapRange(c.iovaOf(pfn, 0), phys - offset, pages * c.granule, prot)) {
      c.iovad.freeFast(pfn, pages);
      return DMA_MAPPING_ERROR;
    }
    c.mapped(pfn, pages, phys - offset);
    return c.iovaOf(pfn, offset);
  }

  /** iommu_map_sg: physically contiguous entries in one map call, one sync at the end; all undone on failure. */
  private mapSgRuns(sg: ScatterEntry[], pfn: number, pages: number, prot: number): boolean {
    const c = this.cookie;
    const { driver, domain, granule } = c;
    const runs: { phys: number; pages: number }[] = [];
    for (const e of sg) {
      const offset = e.phys % granule;
      const run = runs.at(-1);
      if (run && e.phys - offset === run.phys + run.pages * granule) run.pages += c.pagesFor(offset, e.length);
      else runs.push({ phys: e.phys - offset, pages: c.pagesFor(offset, e.length) });
    }
    let done = 0;
    for (const run of runs) {
      if (driver.map(domain, c.iovaOf(pfn + done, 0), run.phys, run.pages * granule, prot) !== undefined) break;
      done += run.pages;
    }
    if (done === pages && driver.iotlbSyncMap(domain) === undefined) return true;
    if (done > 0) {
      driver.unmap(domain, c.iovaOf(pfn, 0), done * granule);
      driver.iotlbSync(domain);
    }
    return false;
  }

  private streamingLimitPfn(dev: Device): number {
    const mask = dev.dma.mask;
    if (mask !== this.maskSeen) {
      this.maskSeen = mask;
      this.maskLimitPfn = this.cookie.limitPfn(dmaLimit(dev, mask));
    }
    return this.maskLimitPfn;
  }
}

/**
 * The bus address a device writes to raise an MSI at `doorbell` (Linux's
 * iommu_dma_prepare_msi + compose_msi_msg): the IOVA of the doorbell page,
 * mapped on first use, when the device sits in a translated domain with a
 * software MSI window; the doorbell itself otherwise. DMA_MAPPING_ERROR when
 * no IOVA can be mapped.
 */
export function iommuDmaGetMsiPage(dev: Device, doorbell: number): Addr {
  const ops = dev.dma.ops;
  return ops instanceof IommuDmaOps ? ops.msiAddress(dev, doorbell) : doorbell;
}

function createIovaDomain(k: IommuDmaKernel, params: IovaDomainParams): IovaDomain {
  const name = k.cmdline.str('iova', DEFAULT_IOVA_STRATEGY);
  const create = IOVA_STRATEGIES[name];
  if (create) return create(params);
  k.log.warn(`iommu-dma: unknown IOVA allocator iova=${name}, using ${DEFAULT_IOVA_STRATEGY}`);
  return IOVA_STRATEGIES[DEFAULT_IOVA_STRATEGY]!(params);
}

/** __ffs of a page-size bitmap: the granule's shift. */
function lowestBit(bitmap: bigint): number {
  if (bitmap <= 0n) throw new RangeError('iommu-dma: empty page-size bitmap');
  let shift = 0;
  while (((bitmap >> BigInt(shift)) & 1n) === 0n) shift++;
  return shift;
}
