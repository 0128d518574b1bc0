// virtio-iommu driver (virtio 1.4 §5.13), behaving as Linux's drivers/iommu/virtio-iommu.c:
// config and granule checks at probe, PROBE of each endpoint's reserved regions, domains with a
// shadow of their mappings replayed on first attach, MAP/UNMAP queued and flushed at sync points.
import type { GuestViommuEndpointReport as ViommuEndpointReport, GuestViommuReport as ViommuReport } from '../abi/report.ts';
import { addAddr, fromHiLo, hexAddr, hi32, lo32, toAddr, toBig, type Addr } from '../abi/addr.ts';
import type { FwViot } from '../abi/firmware.ts';
import { DEVICE_ID, STATUS, featureNames, has } from '../abi/virtio.ts';
import {
  VIRTIO_IOMMU_ATTACH_F_BYPASS,
  VIRTIO_IOMMU_EVENT_QUEUE,
  VIRTIO_IOMMU_F,
  VIRTIO_IOMMU_FAULT_F,
  VIRTIO_IOMMU_FAULT_R,
  VIRTIO_IOMMU_FEATURE_NAMES,
  VIRTIO_IOMMU_MAP_F,
  VIRTIO_IOMMU_PROBE_T,
  VIRTIO_IOMMU_PROBE_T_MASK,
  VIRTIO_IOMMU_REQUEST_QUEUE,
  VIRTIO_IOMMU_RESV_MEM_T,
  VIRTIO_IOMMU_S,
  VIRTIO_IOMMU_STATUS_NAMES,
  VIRTIO_IOMMU_T,
  VirtioIommuConfig,
  VirtioIommuFault,
  VirtioIommuProbeProperty,
  VirtioIommuProbeResvMem,
  VirtioIommuReqAttach,
  VirtioIommuReqDetach,
  VirtioIommuReqMap,
  VirtioIommuReqProbe,
  VirtioIommuReqTail,
  VirtioIommuReqUnmap,
} from '../abi/virtio-iommu.ts';
import { iommuDeviceRegister } from '../dma/iommu.ts';
import { IOMMU_PROT, type IommuDomain, type IommuDomainType, type IommuDriver, type IommuErrno, type IommuGeometry, type ResvRegion } from '../dma/iommu-ops.ts';
import type { Device } from '../kernel/device.ts';
import type { Kernel } from '../kernel/kernel.ts';
import { PAGE_SIZE } from '../kernel/page-alloc.ts';
import { isViotIommu } from '../kernel/viot.ts';
import { VirtioError, type VirtioBus, type VirtioDevice, type VirtioDriver } from './virtio/core.ts';
import type { Virtqueue, VqError } from './virtio/virtqueue.ts';

/** Linux's MSI_IOVA_BASE / MSI_IOVA_LENGTH: where the guest maps its MSI doorbell when the device names no MSI region. */
export const MSI_IOVA_BASE = 0x800_0000;
export const MSI_IOVA_LENGTH = 0x10_0000;

const CFG = VirtioIommuConfig.off;
const ATTACH = VirtioIommuReqAttach.off;
const DETACH = VirtioIommuReqDetach.off;
const MAP = VirtioIommuReqMap.off;
const UNMAP = VirtioIommuReqUnmap.off;
const PROBE = VirtioIommuReqProbe.off;
const PROP = VirtioIommuProbeProperty.off;
const RESV = VirtioIommuProbeResvMem.off;
const FAULT = VirtioIommuFault.off;
const TAIL_BYTES = VirtioIommuReqTail.span;
const FAULT_BYTES = VirtioIommuFault.span;
/** The three reserved bytes after `reason`, from the same definition (their name is not in the typed offsets). */
const FAULT_RESERVED = VirtioIommuFault.layout.offsetOf('reserved')!;
const U64_MAX: Addr = 0xffff_ffff_ffff_ffffn;

const TYPE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(VIRTIO_IOMMU_T).map(([n, t]) => [t, n]));
const REASON_NAMES = ['unknown', 'domain', 'mapping'] as const;

/** viommu_get_req_errno. */
const STATUS_ERRNO: Readonly<Record<number, IommuErrno>> = {
  [VIRTIO_IOMMU_S.IOERR]: 'EIO',
  [VIRTIO_IOMMU_S.UNSUPP]: 'ENOSYS',
  [VIRTIO_IOMMU_S.DEVERR]: 'EIO',
  [VIRTIO_IOMMU_S.INVAL]: 'EINVAL',
  [VIRTIO_IOMMU_S.RANGE]: 'ERANGE',
  [VIRTIO_IOMMU_S.NOENT]: 'ENOENT',
  [VIRTIO_IOMMU_S.FAULT]: 'EFAULT',
  [VIRTIO_IOMMU_S.NOMEM]: 'ENOMEM',
};
const errnoOf = (status: number): IommuErrno | undefined => (status === VIRTIO_IOMMU_S.OK ? undefined : (STATUS_ERRNO[status] ?? 'EIO'));
const statusName = (status: number): string => VIRTIO_IOMMU_STATUS_NAMES[status] ?? `status ${status}`;
/** The virtqueue could not take a request: no descriptors left even after a sync, a failed mapping, or a broken queue. */
const vqErrno = (e: VqError): IommuErrno => (e === 'EIO' ? 'EIO' : 'ENOMEM');

export interface ViommuConfig {
  readonly pageSizeMask: bigint;
  /** Inclusive; the whole 64-bit space without INPUT_RANGE. */
  readonly inputStart: Addr;
  readonly inputEnd: Addr;
  /** Inclusive; any 32-bit ID without DOMAIN_RANGE. */
  readonly domainStart: number;
  readonly domainEnd: number;
  /** Bytes of properties in a PROBE reply; 0 without PROBE. */
  readonly probeSize: number;
  /** Only with BYPASS_CONFIG; read for the report, never written (as Linux). */
  readonly bypass: number | undefined;
}

/** One request in flight: its kmalloc'd copy and where the device-writable part begins. */
interface Request {
  readonly type: number;
  readonly buf: number;
  readonly len: number;
  readonly writeOffset: number;
  /** A caller waits for this one; otherwise a failure is reported at the next sync point. */
  readonly waited: boolean;
  /** Reads what the device wrote (PROBE's properties) before the buffer is freed. */
  readonly writeback: ((o: number) => void) | undefined;
  status: number | undefined;
}

/** One MAP as the driver remembers it: [iova, last] to paddr. */
interface Mapping {
  readonly iova: Addr;
  readonly last: Addr;
  readonly size: number;
  readonly paddr: Addr;
  readonly flags: number;
}

/** Bytes from `b` up to `a`, both Addr and the result small enough for a number. */
function distance(a: Addr, b: Addr): number {
  return typeof a === 'number' && typeof b === 'number' ? a - b : Number(toBig(a) - toBig(b));
}

/**
 * A domain's mappings sorted by IOVA, standing in for Linux's interval tree:
 * mappings never overlap, so ordering by start also orders them by end.
 */
class ShadowMappings {
  private readonly list: Mapping[] = [];

  get size(): number {
    return this.list.length;
  }

  all(): readonly Mapping[] {
    return this.list;
  }

  overlaps(iova: Addr, last: Addr): boolean {
    const m = this.list[this.firstEndingAtOrAfter(iova)];
    return m !== undefined && m.iova <= last;
  }

  insert(m: Mapping): void {
    this.list.splice(this.firstEndingAtOrAfter(m.iova), 0, m);
  }

  find(iova: Addr): Mapping | undefined {
    const m = this.list[this.firstEndingAtOrAfter(iova)];
    return m !== undefined && m.iova <= iova ? m : undefined;
  }

  /** viommu_del_mappings: the mappings overlapping [iova, last], stopping at one that starts before `iova` (never split). */
  remove(iova: Addr, last: Addr): Mapping[] {
    const i = this.firstEndingAtOrAfter(iova);
    let j = i;
    while (j < this.list.length && this.list[j]!.iova >= iova && this.list[j]!.iova <= last) j++;
    return this.list.splice(i, j - i);
  }

  clear(): void {
    this.list.length = 0;
  }

  private firstEndingAtOrAfter(iova: Addr): number {
    let lo = 0;
    let hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.list[mid]!.last < iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** Domain IDs as Linux's IDA hands them out: the lowest free one in [first, last]. */
class DomainIds {
  private readonly used = new Set<number>();

  constructor(
    readonly first: number,
    readonly last: number,
  ) {}

  alloc(): number | undefined {
    for (let id = this.first; id <= this.last; id++) {
      if (!this.used.has(id)) {
        this.used.add(id);
        return id;
      }
    }
    return undefined;
  }

  free(id: number): void {
    this.used.delete(id);
  }
}

class Endpoint {
  domain: ViommuDomain | undefined;
  /** Probed RESV_MEM regions, sorted by start. */
  resv: ResvRegion[] = [];
  mappingsMade = 0;
  mappingsRemoved = 0;
  lowestIova: Addr | undefined;
  highestIova: Addr | undefined;

  constructor(
    readonly dev: Device,
    readonly ids: readonly number[],
  ) {}
}

class ViommuDomain implements IommuDomain {
  /** Allocated at first attach, as Linux's viommu_domain_finalise did. */
  id: number | undefined;
  readonly endpoints = new Set<Endpoint>();
  readonly mappings = new ShadowMappings();

  constructor(
    readonly owner: VirtioIommu,
    readonly type: IommuDomainType,
    readonly geometry: IommuGeometry,
    /** Attached with ATTACH_F_BYPASS: the device translates nothing. */
    readonly bypass: boolean,
  ) {}

  get name(): string {
    return this.id === undefined ? `${this.type} (no ID yet)` : String(this.id);
  }
}

export class VirtioIommu implements IommuDriver {
  readonly name = 'virtio-iommu';
  /** A paravirtual IOMMU: the hypervisor shadows every flush, so lazy unmaps and one flush queue suit it. */
  readonly caps = { deferredFlush: true, shadowOnFlush: true };
  readonly config: ViommuConfig;
  private readonly k: Kernel;
  private readonly geometry: IommuGeometry;
  private readonly granule: bigint;
  private readonly reqVq: Virtqueue<Request>;
  private readonly evtVq: Virtqueue<number>;
  /** kzalloc'd fault records, one per event queue entry. */
  private readonly evtBufs: number;
  private readonly domainIds: DomainIds;
  /** With BYPASS_CONFIG, Linux's one static identity domain, on the first ID of domain_range. */
  private readonly bypassDomain: ViommuDomain | undefined;
  private readonly endpoints = new Map<Device, Endpoint>();
  /** Requests added since the last sync, in order. */
  private readonly pending: Request[] = [];
  private unanswered = 0;
  /** The first failure of a batched request, returned at the next sync point. */
  private batchError: IommuErrno | undefined;
  /** Told after each sync point at which the device answered every request: queued UNMAPs took effect. */
  private readonly deliveryListeners: (() => void)[] = [];
  private readonly requestCounts: Record<string, Record<string, number>> = {};
  private readonly faults = { byReason: {} as Record<string, number>, byEndpoint: {} as Record<string, number>, ignored: 0, invalid: 0 };

  constructor(
    readonly vdev: VirtioDevice,
    readonly fw: FwViot,
  ) {
    this.k = vdev.k;
    if (!has(vdev.features, VIRTIO_IOMMU_F.MAP_UNMAP)) throw new VirtioError('ENODEV', `${vdev.name}: device does not offer VIRTIO_IOMMU_F_MAP_UNMAP`);
    const c = (this.config = readConfig(vdev));
    if (c.pageSizeMask === 0n) throw new VirtioError('EINVAL', `${vdev.name}: page_size_mask is empty`);
    this.granule = c.pageSizeMask & -c.pageSizeMask;
    // Linux checks this when it allocates a paging domain; no domain could ever be allocated, so refuse now.
    if (this.granule > BigInt(PAGE_SIZE)) {
      throw new VirtioError('ENODEV', `${vdev.name}: granule 0x${this.granule.toString(16)} larger than system page size 0x${PAGE_SIZE.toString(16)}`);
    }
    this.geometry = Object.freeze({ apertureStart: c.inputStart, apertureEnd: c.inputEnd, pgsizeBitmap: c.pageSizeMask });
    const bypassConfig = has(vdev.features, VIRTIO_IOMMU_F.BYPASS_CONFIG);
    if (bypassConfig) {
      this.bypassDomain = new ViommuDomain(this, 'identity', this.geometry, true);
      this.bypassDomain.id = c.domainStart;
    }
    this.domainIds = new DomainIds(bypassConfig ? c.domainStart + 1 : c.domainStart, c.domainEnd);
    const vqs = vdev.findVqs([{ name: 'request' }, { name: 'event', callback: () => this.eventHandler() }]);
    this.reqVq = vqs[VIRTIO_IOMMU_REQUEST_QUEUE] as Virtqueue<Request>;
    this.evtVq = vqs[VIRTIO_IOMMU_EVENT_QUEUE] as Virtqueue<number>;
    this.evtBufs = this.k.slab.kzalloc(this.evtVq.num * FAULT_BYTES);
    if (this.evtBufs < 0) throw new VirtioError('ENOMEM', `${vdev.name}: no memory for fault records`);
    this.fillEventQueue();
    this.k.log.info(`${vdev.name}: input address: ${orderBase2(toBig(c.inputEnd))} bits`);
    this.k.log.info(`${vdev.name}: page mask: 0x${c.pageSizeMask.toString(16)}`);
  }

  /**
   * DRIVER_OK before registering, as Linux's probe calls virtio_device_ready:
   * the IOMMU core may probe and attach endpoints at once, and those requests need a live device.
   */
  start(): void {
    this.vdev.addStatus(STATUS.DRIVER_OK);
    this.evtVq.kick();
    try {
      iommuDeviceRegister(this.k, this);
    } catch (e) {
      this.vdev.reset();
      this.release();
      throw e;
    }
  }

  /** After the core reset the device, which detached every endpoint: forget them and free what the queues held. */
  remove(): void {
    for (const ep of this.endpoints.values()) this.leaveDomain(ep);
    this.endpoints.clear();
    this.release();
  }

  probeDevice(dev: Device, ids: readonly number[]): boolean {
    if (ids.length === 0) return false;
    const ep = new Endpoint(dev, ids);
    if (has(this.vdev.features, VIRTIO_IOMMU_F.PROBE) && this.config.probeSize > 0) {
      const err = this.probeEndpoint(ep);
      if (err) {
        this.k.log.err(`${this.vdev.name}: ${dev.name}: PROBE of endpoint ${ids[0]} failed: ${err}`);
        return false;
      }
    }
    this.endpoints.set(dev, ep);
    return true;
  }

  /** viommu_release_device: DETACH what is still attached. */
  releaseDevice(dev: Device): void {
    const ep = this.endpoints.get(dev);
    if (!ep) return;
    const d = ep.domain;
    if (d) {
      for (const id of ep.ids) this.sendSync(VIRTIO_IOMMU_T.DETACH, VirtioIommuReqDetach.span, (dv, o) => encodeDetach(dv, o, d.id!, id));
      this.leaveDomain(ep);
    }
    this.endpoints.delete(dev);
  }

  resvRegions(dev: Device): ResvRegion[] {
    const regions = [...(this.endpoints.get(dev)?.resv ?? [])];
    if (!regions.some((r) => r.type === 'msi')) regions.push(swMsiRegion());
    return regions;
  }

  domainAlloc(type: IommuDomainType): IommuDomain | undefined {
    if (type === 'identity' && this.bypassDomain) return this.bypassDomain;
    return new ViommuDomain(this, type, this.geometry, false);
  }

  /** viommu_domain_free: the shadow and the ID go; the device already dropped the domain with its last endpoint. */
  domainFree(domain: IommuDomain): void {
    const d = this.own(domain);
    if (d === this.bypassDomain) return;
    d.mappings.clear();
    if (d.id !== undefined) this.domainIds.free(d.id);
    d.id = undefined;
  }

  /**
   * viommu_attach_dev: no DETACH from the old domain, since ATTACH moves the
   * endpoint (the device destroys the old domain if it was the last one). A
   * domain getting its first endpoint has its shadow mappings replayed.
   */
  attachDev(domain: IommuDomain, dev: Device): IommuErrno | undefined {
    const d = this.own(domain);
    const ep = this.endpoints.get(dev);
    if (!ep) return 'ENODEV';
    if (ep.domain === d) return undefined;
    if (d.id === undefined) {
      const err = this.finaliseDomain(d, ep);
      if (err) return err;
    }
    this.leaveDomain(ep);
    const flags = d.bypass ? VIRTIO_IOMMU_ATTACH_F_BYPASS : 0;
    for (const id of ep.ids) {
      const err = this.sendSync(VIRTIO_IOMMU_T.ATTACH, VirtioIommuReqAttach.span, (dv, o) => encodeAttach(dv, o, d.id!, id, flags));
      if (err) return err;
    }
    const first = d.endpoints.size === 0;
    d.endpoints.add(ep);
    ep.domain = d;
    this.k.trace.emit('attach_device_to_domain', { device: dev.name, domain: d.name, type: d.type, bypass: d.bypass });
    return first ? this.replayMappings(d) : undefined;
  }

  /** viommu_map_pages: the shadow first, then a MAP queued (not sent) when the device knows the domain. */
  map(domain: IommuDomain, iova: Addr, paddr: Addr, size: number, prot: number): IommuErrno | undefined {
    const d = this.own(domain);
    const flags = this.mapFlags(prot);
    if (d.type !== 'dma' || flags === undefined || !Number.isSafeInteger(size) || size <= 0) return 'EINVAL';
    const last = addAddr(iova, size - 1);
    // The spec's MUST for the driver: nothing outside input_range.
    if (last < iova || iova < this.geometry.apertureStart || last > this.geometry.apertureEnd) return 'ERANGE';
    // Keeps the shadow what the device holds: it refuses an overlapping MAP.
    if (d.mappings.overlaps(iova, last)) return 'EINVAL';
    const m: Mapping = { iova, last, size, paddr, flags };
    d.mappings.insert(m);
    if (d.endpoints.size > 0) {
      const err = this.queueMap(d, m);
      if (err) {
        d.mappings.remove(iova, last);
        return err;
      }
    }
    for (const ep of d.endpoints) countMap(ep, m);
    if (this.k.trace.enabled) this.k.trace.emit('map', { domain: d.name, iova: hexAddr(iova), paddr: hexAddr(paddr), size, flags });
    return undefined;
  }

  /**
   * viommu_unmap_pages: whole shadow mappings only, never a split one; a
   * single UNMAP covers what was removed. Returns the bytes unmapped.
   */
  unmap(domain: IommuDomain, iova: Addr, size: number): number {
    const d = this.own(domain);
    if (!Number.isSafeInteger(size) || size <= 0) return 0;
    const removed = d.mappings.remove(iova, addAddr(iova, size - 1));
    if (removed.length === 0) return 0;
    const start = removed[0]!.iova;
    const last = removed[removed.length - 1]!.last;
    const bytes = removed.reduce((sum, m) => sum + m.size, 0);
    // With no endpoint the device has already forgotten the domain's mappings.
    if (d.endpoints.size > 0) {
      const err = this.queue(VIRTIO_IOMMU_T.UNMAP, VirtioIommuReqUnmap.span, (dv, o) => encodeUnmap(dv, o, d.id!, start, last));
      if (err) {
        // The device still holds them: so does the shadow, and nothing was unmapped.
        for (const m of removed) d.mappings.insert(m);
        this.k.log.err(`${this.vdev.name}: cannot queue UNMAP of domain ${d.name}: ${err}`);
        return 0;
      }
    }
    for (const ep of d.endpoints) ep.mappingsRemoved += removed.length;
    if (this.k.trace.enabled) this.k.trace.emit('unmap', { domain: d.name, iova: hexAddr(iova), size, unmapped_size: bytes });
    return bytes;
  }

  iotlbSyncMap(domain: IommuDomain): IommuErrno | undefined {
    return this.own(domain).endpoints.size > 0 ? this.sync() : undefined;
  }

  /** The request queue is the device's only one: a sync flushes every domain's requests. */
  iotlbSync(_domain: IommuDomain): void {
    this.sync();
  }

  flushIotlbAll(_domain: IommuDomain): void {
    this.sync();
  }

  onUnmapsDelivered(listener: () => void): void {
    this.deliveryListeners.push(listener);
  }

  /** From the shadow, with no round trip to the device. */
  iovaToPhys(domain: IommuDomain, iova: Addr): Addr | undefined {
    const d = this.own(domain);
    if (d.bypass) return iova;
    const m = d.mappings.find(iova);
    return m && addAddr(m.paddr, distance(iova, m.iova));
  }

  report(): ViommuReport {
    const c = this.config;
    return {
      device: this.vdev.name,
      busDevice: this.vdev.dmaDev.name,
      config: {
        pageSizeMask: '0x' + c.pageSizeMask.toString(16),
        inputStart: hexAddr(c.inputStart),
        inputEnd: hexAddr(c.inputEnd),
        domainStart: c.domainStart,
        domainEnd: c.domainEnd,
        probeSize: c.probeSize,
        bypass: c.bypass ?? null,
      },
      features: featureNames(this.vdev.features, VIRTIO_IOMMU_FEATURE_NAMES),
      requests: structuredClone(this.requestCounts),
      endpoints: [...this.endpoints.values()].map((ep) => this.endpointReport(ep)),
      faults: structuredClone(this.faults),
    };
  }

  private endpointReport(ep: Endpoint): ViommuEndpointReport {
    return {
      device: ep.dev.name,
      ids: [...ep.ids],
      domain: ep.domain?.name ?? null,
      resvRegions: ep.resv.map((r) => ({ start: hexAddr(r.start), end: hexAddr(r.end), type: r.type })),
      mappingsMade: ep.mappingsMade,
      mappingsRemoved: ep.mappingsRemoved,
      lowestIova: ep.lowestIova === undefined ? null : hexAddr(ep.lowestIova),
      highestIova: ep.highestIova === undefined ? null : hexAddr(ep.highestIova),
      faults: ep.ids.reduce((n, id) => n + (this.faults.byEndpoint[id] ?? 0), 0),
    };
  }

  private own(domain: IommuDomain): ViommuDomain {
    if (!(domain instanceof ViommuDomain) || domain.owner !== this) throw new TypeError(`${this.vdev.name}: domain ${domain.name} belongs to another IOMMU`);
    return domain;
  }

  private mapFlags(prot: number): number | undefined {
    let flags = 0;
    if (prot & IOMMU_PROT.READ) flags |= VIRTIO_IOMMU_MAP_F.READ;
    if (prot & IOMMU_PROT.WRITE) flags |= VIRTIO_IOMMU_MAP_F.WRITE;
    if (prot & IOMMU_PROT.MMIO) {
      // The spec forbids MAP_F_MMIO unless negotiated; Linux refuses such a mapping.
      if (!has(this.vdev.features, VIRTIO_IOMMU_F.MMIO)) return undefined;
      flags |= VIRTIO_IOMMU_MAP_F.MMIO;
    }
    return flags;
  }

  /** The domain gets its ID (and, for identity without BYPASS_CONFIG, its 1:1 mappings) when first attached. */
  private finaliseDomain(d: ViommuDomain, ep: Endpoint): IommuErrno | undefined {
    const id = this.domainIds.alloc();
    if (id === undefined) {
      this.k.log.err(`${this.vdev.name}: no free domain ID in [${this.domainIds.first}, ${this.domainIds.last}]`);
      return 'ENOMEM';
    }
    d.id = id;
    if (d.type === 'identity') this.mapIdentity(d, ep);
    return undefined;
  }

  /**
   * viommu_domain_map_identity, for a device without BYPASS_CONFIG: 1:1
   * READ|WRITE mappings around the endpoint's reserved regions. Linux covers
   * the whole aperture; ivory covers RAM, all a device should reach. The
   * mappings go to the device with the replay that follows the first ATTACH.
   */
  private mapIdentity(d: ViommuDomain, ep: Endpoint): void {
    const g = this.granule;
    const apStart = alignUp(toBig(this.geometry.apertureStart), g);
    const apEnd = alignDown(toBig(this.geometry.apertureEnd) + 1n, g) - 1n;
    const holes = ep.resv.map((r) => [alignDown(toBig(r.start), g), alignUp(toBig(r.end) + 1n, g) - 1n] as const);
    const add = (start: bigint, end: bigint) => {
      const iova = toAddr(start);
      d.mappings.insert({ iova, last: toAddr(end), size: Number(end - start + 1n), paddr: iova, flags: VIRTIO_IOMMU_MAP_F.READ | VIRTIO_IOMMU_MAP_F.WRITE });
    };
    for (const r of this.k.mem.regions) {
      let start = max(alignUp(BigInt(r.gpa), g), apStart);
      const end = min(alignDown(BigInt(r.gpa + r.size), g) - 1n, apEnd);
      for (const [hs, he] of holes) {
        if (he < start || hs > end) continue;
        if (hs > start) add(start, hs - 1n);
        start = he + 1n;
      }
      if (start <= end) add(start, end);
    }
    this.k.trace.emit('viommu_identity_map', { domain: d.name, mappings: d.mappings.size, why: 'no BYPASS_CONFIG: identity domain as 1:1 mappings of RAM (Linux viommu_domain_map_identity)' });
  }

  private leaveDomain(ep: Endpoint): void {
    ep.domain?.endpoints.delete(ep);
    ep.domain = undefined;
  }

  /** viommu_replay_mappings: the device dropped them when the domain's last endpoint left; one batch, one sync. */
  private replayMappings(d: ViommuDomain): IommuErrno | undefined {
    if (d.mappings.size === 0) return undefined;
    this.k.trace.emit('viommu_replay_mappings', { domain: d.name, mappings: d.mappings.size, why: 'first endpoint attached: the device holds none of the shadow mappings (Linux viommu_replay_mappings)' });
    for (const m of d.mappings.all()) {
      const err = this.queueMap(d, m);
      if (err) return err;
    }
    return this.sync();
  }

  private queueMap(d: ViommuDomain, m: Mapping): IommuErrno | undefined {
    return this.queue(VIRTIO_IOMMU_T.MAP, VirtioIommuReqMap.span, (dv, o) => encodeMap(dv, o, d.id!, m));
  }

  /** PROBE (viommu_probe_endpoint): the first ID speaks for the device, as Linux sends it. */
  private probeEndpoint(ep: Endpoint): IommuErrno | undefined {
    const size = this.config.probeSize;
    const len = VirtioIommuReqProbe.span + size + TAIL_BYTES;
    const parse = (o: number) => (ep.resv = parseProbeProperties(this.k.mem.dv, o + VirtioIommuReqProbe.span, size, (msg) => this.k.log.warn(`${this.vdev.name}: endpoint ${ep.ids[0]}: ${msg}`)));
    const err = this.sendSync(VIRTIO_IOMMU_T.PROBE, len, (dv, o) => encodeProbe(dv, o, ep.ids[0]!), VirtioIommuReqProbe.span, parse);
    if (!err) {
      const swMsi = !ep.resv.some((r) => r.type === 'msi');
      this.k.trace.emit('viommu_probe_endpoint', { device: ep.dev.name, endpoint: ep.ids[0]!, regions: ep.resv.length, sw_msi: swMsi ? `no MSI region probed: software MSI window at ${hexAddr(MSI_IOVA_BASE)} (Linux MSI_IOVA_BASE)` : 'no' });
    }
    return err;
  }

  /** Queues a batched request: its status comes back at the next sync point. */
  private queue(type: number, len: number, fill: Fill): IommuErrno | undefined {
    const req = this.addRequest(type, len, fill, len - TAIL_BYTES, undefined, false);
    return typeof req === 'string' ? req : undefined;
  }

  /** viommu_send_req_sync: queue, flush, and this request's own status. */
  private sendSync(type: number, len: number, fill: Fill, writeOffset = len - TAIL_BYTES, writeback?: (o: number) => void): IommuErrno | undefined {
    const req = this.addRequest(type, len, fill, writeOffset, writeback, true);
    if (typeof req === 'string') return req;
    this.flush();
    return errnoOf(req.status!);
  }

  /**
   * viommu_add_req: the request copied into a kmalloc'd buffer, exposed as
   * one device-readable and one device-writable segment, not kicked; a full
   * queue is synced first.
   */
  private addRequest(type: number, len: number, fill: Fill, writeOffset: number, writeback: ((o: number) => void) | undefined, waited: boolean): IommuErrno | Request {
    const buf = this.k.slab.kzalloc(len);
    if (buf < 0) return 'ENOMEM';
    fill(this.k.mem.dv, this.k.mem.off(buf, len));
    const req: Request = { type, buf, len, writeOffset, waited, writeback, status: undefined };
    const out = [{ phys: buf, len: writeOffset }];
    const ins = [{ phys: buf + writeOffset, len: len - writeOffset }];
    let err = this.reqVq.add(out, ins, req);
    if (err === 'ENOSPC') {
      this.flush();
      err = this.reqVq.add(out, ins, req);
    }
    if (err) {
      this.k.slab.kfree(buf);
      return vqErrno(err);
    }
    this.pending.push(req);
    this.unanswered++;
    return req;
  }

  /** A sync point: everything queued reaches the device; the first failure among batched requests is returned. */
  private sync(): IommuErrno | undefined {
    this.flush();
    const err = this.batchError;
    this.batchError = undefined;
    return err;
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    if (this.k.trace.enabled) this.k.trace.emit('viommu_sync_req', { requests: this.pending.length });
    this.reqVq.kick();
    this.pollUsed();
    const delivered = this.unanswered === 0;
    for (const req of this.pending) this.finish(req);
    this.pending.length = 0;
    this.unanswered = 0;
    if (delivered) for (const listener of this.deliveryListeners) listener();
  }

  /**
   * Polls the used ring until every request is back, as Linux busy-polls
   * with interrupts off: a sync may run in an interrupt handler (a strict
   * unmap when a completion unmaps its buffers), where no one may sleep.
   * Each turn of the loop lets the machine step (cpu_relax), interrupt or
   * not: the request queue raises none.
   */
  private pollUsed(): void {
    for (let alive = true; ; ) {
      for (let b = this.reqVq.getBuf(); b; b = this.reqVq.getBuf()) this.complete(b.token, b.len);
      if (this.unanswered === 0 || this.reqVq.broken || !alive) return;
      alive = this.k.boot.clock.relax();
    }
  }

  /** The status from the tail; a used length of 0 means the device wrote nothing, IOERR as Linux. */
  private complete(req: Request, usedLen: number): void {
    if (req.status !== undefined) {
      // Given up on at an earlier sync: the device is done with its buffer at last.
      this.k.slab.kfree(req.buf);
      return;
    }
    this.unanswered--;
    const writable = req.len - req.writeOffset;
    if (usedLen === 0 || usedLen > writable) {
      if (usedLen > writable) this.k.log.err(`${this.vdev.name}: ${TYPE_NAMES[req.type]} used length ${usedLen} exceeds the ${writable} writable bytes`);
      req.status = VIRTIO_IOMMU_S.IOERR;
      return;
    }
    const o = this.k.mem.off(req.buf, req.len);
    req.status = this.k.mem.dv.getUint8(o + req.len - TAIL_BYTES);
    // As Linux, what the device wrote is taken only when it wrote all of it.
    if (req.status === VIRTIO_IOMMU_S.OK && usedLen === writable) req.writeback?.(o);
  }

  private finish(req: Request): void {
    const type = TYPE_NAMES[req.type]!;
    if (req.status === undefined) {
      // Never answered (the queue broke or the device stopped): the device may still write its buffer, so it stays.
      req.status = VIRTIO_IOMMU_S.IOERR;
    } else {
      this.k.slab.kfree(req.buf);
    }
    const status = statusName(req.status);
    const byStatus = (this.requestCounts[type] ??= {});
    byStatus[status] = (byStatus[status] ?? 0) + 1;
    const err = errnoOf(req.status);
    if (!err) return;
    this.k.log.err(`${this.vdev.name}: ${type} request failed: ${status}`);
    if (!req.waited) this.batchError ??= err;
  }

  /** One fault-sized, device-writable buffer per descriptor: the device never has to drop a fault for want of one. */
  private fillEventQueue(): void {
    for (let i = 0; i < this.evtVq.num; i++) {
      const err = this.queueEventBuf(this.evtBufs + i * FAULT_BYTES);
      if (err) {
        this.k.slab.kfree(this.evtBufs);
        throw new VirtioError(err, `${this.vdev.name}: cannot fill the event queue: ${err}`);
      }
    }
  }

  private queueEventBuf(gpa: number): VqError | undefined {
    return this.evtVq.add([], [{ phys: gpa, len: FAULT_BYTES }], gpa);
  }

  /** viommu_event_handler: every record read, every buffer given back, one kick. */
  private eventHandler(): void {
    for (let b = this.evtVq.getBuf(); b; b = this.evtVq.getBuf()) {
      const gpa = b.token;
      if (b.len === FAULT_BYTES) this.fault(gpa);
      else {
        this.faults.invalid++;
        this.k.log.err(`${this.vdev.name}: invalid event buffer (used length ${b.len}, a fault record is ${FAULT_BYTES})`);
      }
      const err = this.queueEventBuf(gpa);
      if (err) this.k.log.err(`${this.vdev.name}: cannot requeue an event buffer: ${err}`);
    }
    this.evtVq.kick();
  }

  /** The spec: a record with non-zero `reserved` is ignored; `reserved1` and unknown flags are not looked at; an unknown reason is UNKNOWN. */
  private fault(gpa: number): void {
    const dv = this.k.mem.dv;
    const o = this.k.mem.off(gpa, FAULT_BYTES);
    if (dv.getUint8(o + FAULT_RESERVED) | dv.getUint16(o + FAULT_RESERVED + 1, true)) {
      this.faults.ignored++;
      return;
    }
    const reasonCode = dv.getUint8(o + FAULT.reason);
    const reason = REASON_NAMES[reasonCode] ?? REASON_NAMES[VIRTIO_IOMMU_FAULT_R.UNKNOWN];
    const flags = dv.getUint32(o + FAULT.flags, true);
    const endpoint = dv.getUint32(o + FAULT.endpoint, true);
    const address = flags & VIRTIO_IOMMU_FAULT_F.ADDRESS ? getU64(dv, o + FAULT.address) : undefined;
    this.faults.byReason[reason] = (this.faults.byReason[reason] ?? 0) + 1;
    this.faults.byEndpoint[endpoint] = (this.faults.byEndpoint[endpoint] ?? 0) + 1;
    const access = `${flags & VIRTIO_IOMMU_FAULT_F.READ ? 'R' : ''}${flags & VIRTIO_IOMMU_FAULT_F.WRITE ? 'W' : ''}`;
    const at = address === undefined ? '' : ` at ${hexAddr(address)}`;
    this.k.log.err(`${this.vdev.name}: ${reason} fault from EP ${endpoint}${at} [${access}]`);
    this.k.trace.emit('io_page_fault', { device: this.vdev.name, endpoint, reason, flags, iova: address === undefined ? 'none' : hexAddr(address) });
  }

  /** Hands back every buffer the (reset) device still held. */
  private release(): void {
    for (let req = this.reqVq.detachUnusedBuf(); req; req = this.reqVq.detachUnusedBuf()) this.k.slab.kfree(req.buf);
    this.pending.length = 0;
    this.unanswered = 0;
    while (this.evtVq.detachUnusedBuf() !== undefined);
    this.k.slab.kfree(this.evtBufs);
  }
}

type Fill = (dv: DataView, o: number) => void;

function getU64(dv: DataView, at: number): Addr {
  return fromHiLo(dv.getUint32(at + 4, true), dv.getUint32(at, true));
}

function setU64(dv: DataView, at: number, a: Addr): void {
  dv.setUint32(at, lo32(a), true);
  dv.setUint32(at + 4, hi32(a), true);
}

function encodeAttach(dv: DataView, o: number, domain: number, endpoint: number, flags: number): void {
  dv.setUint8(o + ATTACH.type, VIRTIO_IOMMU_T.ATTACH);
  dv.setUint32(o + ATTACH.domain, domain, true);
  dv.setUint32(o + ATTACH.endpoint, endpoint, true);
  dv.setUint32(o + ATTACH.flags, flags, true);
}

function encodeDetach(dv: DataView, o: number, domain: number, endpoint: number): void {
  dv.setUint8(o + DETACH.type, VIRTIO_IOMMU_T.DETACH);
  dv.setUint32(o + DETACH.domain, domain, true);
  dv.setUint32(o + DETACH.endpoint, endpoint, true);
}

function encodeMap(dv: DataView, o: number, domain: number, m: Mapping): void {
  dv.setUint8(o + MAP.type, VIRTIO_IOMMU_T.MAP);
  dv.setUint32(o + MAP.domain, domain, true);
  setU64(dv, o + MAP.virt_start, m.iova);
  setU64(dv, o + MAP.virt_end, m.last);
  setU64(dv, o + MAP.phys_start, m.paddr);
  dv.setUint32(o + MAP.flags, m.flags, true);
}

function encodeUnmap(dv: DataView, o: number, domain: number, start: Addr, last: Addr): void {
  dv.setUint8(o + UNMAP.type, VIRTIO_IOMMU_T.UNMAP);
  dv.setUint32(o + UNMAP.domain, domain, true);
  setU64(dv, o + UNMAP.virt_start, start);
  setU64(dv, o + UNMAP.virt_end, last);
}

function encodeProbe(dv: DataView, o: number, endpoint: number): void {
  dv.setUint8(o + PROBE.type, VIRTIO_IOMMU_T.PROBE);
  dv.setUint32(o + PROBE.endpoint, endpoint, true);
}

/**
 * The PROBE properties (spec §5.13.6.8): a header every `length + 4` bytes
 * until NONE or the end of probe_size. A device's mistakes are skipped with a
 * warning, never trusted: a property running past the buffer ends the list; one
 * with reserved type bits is ignored (the spec's MUST; Linux masks the bits off).
 */
export function parseProbeProperties(dv: DataView, o: number, size: number, warn: (msg: string) => void): ResvRegion[] {
  const regions: ResvRegion[] = [];
  for (let cur = 0; cur + VirtioIommuProbeProperty.span <= size; ) {
    const type = dv.getUint16(o + cur + PROP.type, true);
    if (type === VIRTIO_IOMMU_PROBE_T.NONE) break;
    const length = dv.getUint16(o + cur + PROP.length, true);
    const next = cur + VirtioIommuProbeProperty.span + length;
    if (next > size) {
      warn(`property 0x${type.toString(16)} at ${cur} runs past probe_size ${size}`);
      break;
    }
    if (type & ~VIRTIO_IOMMU_PROBE_T_MASK) warn(`property 0x${type.toString(16)} has reserved type bits set, ignored`);
    else if (type === VIRTIO_IOMMU_PROBE_T.RESV_MEM) {
      const r = parseResvMem(dv, o + cur, length, warn);
      if (r) regions.push(r);
    } else warn(`unknown property 0x${type.toString(16)}, skipped`);
    cur = next;
  }
  return regions.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
}

/** RESV_MEM: MSI is a doorbell window Linux maps WRITE|MMIO; RESERVED and any unknown subtype are never mapped. */
function parseResvMem(dv: DataView, at: number, length: number, warn: (msg: string) => void): ResvRegion | undefined {
  if (length < VirtioIommuProbeResvMem.span - VirtioIommuProbeProperty.span) {
    warn(`RESV_MEM property of ${length} bytes is too short, ignored`);
    return undefined;
  }
  const start = getU64(dv, at + RESV.start);
  const end = getU64(dv, at + RESV.end);
  if (end < start) {
    warn(`RESV_MEM [${hexAddr(start)}, ${hexAddr(end)}] ends before it starts, ignored`);
    return undefined;
  }
  const subtype = dv.getUint8(at + RESV.subtype);
  if (subtype === VIRTIO_IOMMU_RESV_MEM_T.MSI) return { start, end, type: 'msi', prot: IOMMU_PROT.WRITE | IOMMU_PROT.MMIO };
  if (subtype !== VIRTIO_IOMMU_RESV_MEM_T.RESERVED) warn(`unknown RESV_MEM subtype ${subtype}, taken as RESERVED`);
  return { start, end, type: 'reserved', prot: 0 };
}

function swMsiRegion(): ResvRegion {
  return { start: MSI_IOVA_BASE, end: MSI_IOVA_BASE + MSI_IOVA_LENGTH - 1, type: 'sw-msi', prot: IOMMU_PROT.WRITE | IOMMU_PROT.MMIO };
}

function countMap(ep: Endpoint, m: Mapping): void {
  ep.mappingsMade++;
  if (ep.lowestIova === undefined || m.iova < ep.lowestIova) ep.lowestIova = m.iova;
  if (ep.highestIova === undefined || m.last > ep.highestIova) ep.highestIova = m.last;
}

/** Every field in one generation-stable pass; the defaults are the spec's for features not negotiated. */
function readConfig(vdev: VirtioDevice): ViommuConfig {
  const f = vdev.features;
  const u32 = (off: number) => vdev.configRead(off, 4);
  const u64 = (off: number) => fromHiLo(u32(off + 4), u32(off));
  const inputRange = has(f, VIRTIO_IOMMU_F.INPUT_RANGE);
  const domainRange = has(f, VIRTIO_IOMMU_F.DOMAIN_RANGE);
  return vdev.configReadStable(() => ({
    pageSizeMask: toBig(u64(CFG.page_size_mask)),
    inputStart: inputRange ? u64(CFG.input_start) : 0,
    inputEnd: inputRange ? u64(CFG.input_end) : U64_MAX,
    domainStart: domainRange ? u32(CFG.domain_start) : 0,
    domainEnd: domainRange ? u32(CFG.domain_end) : 0xffff_ffff,
    probeSize: has(f, VIRTIO_IOMMU_F.PROBE) ? u32(CFG.probe_size) : 0,
    bypass: has(f, VIRTIO_IOMMU_F.BYPASS_CONFIG) ? vdev.configRead(CFG.bypass, 1) : undefined,
  }));
}

/** order_base_2, as Linux prints the input range: bits needed to address up to `n`. */
const orderBase2 = (n: bigint): number => (n <= 1n ? 0 : (n - 1n).toString(2).length);
const alignDown = (a: bigint, g: bigint): bigint => a - (a % g);
const alignUp = (a: bigint, g: bigint): bigint => alignDown(a + g - 1n, g);
const max = (a: bigint, b: bigint): bigint => (a > b ? a : b);
const min = (a: bigint, b: bigint): bigint => (a < b ? a : b);

export const virtioIommuDriver: VirtioDriver = {
  name: 'virtio_iommu',
  deviceId: DEVICE_ID.IOMMU,
  // Never the legacy F_BYPASS, as Linux.
  featureTable: [VIRTIO_IOMMU_F.INPUT_RANGE, VIRTIO_IOMMU_F.DOMAIN_RANGE, VIRTIO_IOMMU_F.MAP_UNMAP, VIRTIO_IOMMU_F.PROBE, VIRTIO_IOMMU_F.MMIO, VIRTIO_IOMMU_F.BYPASS_CONFIG],
  probe(vdev) {
    // The topology comes from VIOT: without an entry for this device no endpoint could ever be found behind it.
    const fw = vdev.k.firmware.viot?.find((v) => isViotIommu(v, vdev.dmaDev));
    if (!fw) throw new VirtioError('ENODEV', `${vdev.name}: no VIOT entry describes ${vdev.dmaDev.name}: not registering an IOMMU`);
    const viommu = new VirtioIommu(vdev, fw);
    viommu.start();
    vdev.drvdata = viommu;
  },
  remove(vdev) {
    (vdev.drvdata as VirtioIommu).remove();
    vdev.drvdata = undefined;
  },
};

/** The report of every bound virtio-iommu, plain JSON with 64-bit values as hex strings. */
export function viommuReports(bus: VirtioBus): ViommuReport[] {
  return bus.devices.flatMap((d) => (d.drvdata instanceof VirtioIommu ? [d.drvdata.report()] : []));
}
