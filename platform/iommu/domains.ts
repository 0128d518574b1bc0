// The virtio-iommu's translation state (virtio 1.4 §5.13.6): endpoints, domains
// and their mappings; what ATTACH, DETACH, MAP and UNMAP do to it under each
// profile's switches; and the translation of endpoint DMA in the order of
// QEMU's virtio_iommu_translate (bypass, reserved regions, domain, mapping, permission).
import { type Addr, addAddr, hexAddr, lo32, toAddr, toBig } from '../../abi/addr.ts';
import {
  VIRTIO_IOMMU_ATTACH_F_BYPASS,
  VIRTIO_IOMMU_FAULT_F,
  VIRTIO_IOMMU_FAULT_R,
  VIRTIO_IOMMU_MAP_F,
  VIRTIO_IOMMU_MAP_F_MASK,
  VIRTIO_IOMMU_RESV_MEM_T,
  VIRTIO_IOMMU_S,
} from '../../abi/virtio-iommu.ts';
import { DMA_READ } from '../address-space.ts';
import type { HostTrace } from '../trace.ts';
import type { HostIommu } from './host-iommu.ts';
import { EINVAL } from './host-iommu.ts';
import { IntervalTree, frameOf } from './interval-tree.ts';
import type { Answer, ViommuProfile } from './profiles.ts';
import { type ResvRegion, U64_MAX, mergeRegions, overlaps } from './reserved-regions.ts';

const S = VIRTIO_IOMMU_S;
/** A request answered by returning its buffers unwritten, used length 0. */
export const UNWRITTEN = -1;
const TWO53 = 2 ** 53;

export const answer = (a: Answer): number => (a === 'UNWRITTEN' ? UNWRITTEN : S[a]);

export interface Mapping {
  readonly virtStart: Addr;
  /** Inclusive. */
  readonly virtEnd: Addr;
  readonly physStart: Addr;
  /** As the driver sent them. */
  readonly flags: number;
  /** The READ / WRITE the device enforces. */
  readonly perm: number;
}

export class Domain {
  readonly mappings = new IntervalTree<Mapping>();
  readonly endpoints: Endpoint[] = [];
  mapped = 0;
  unmapped = 0;

  constructor(
    readonly id: number,
    readonly bypass: boolean,
  ) {}
}

export class EndpointStats {
  translations = 0;
  bypassed = 0;
  msi = 0;
  /** Accesses by a device without ACCESS_PLATFORM, straight to guest-physical memory. */
  direct = 0;
  readonly faults = { UNKNOWN: 0, DOMAIN: 0, MAPPING: 0 };
  hostFaults = 0;
  mapped = 0;
  unmapped = 0;
  probes = 0;
  lowestIova: Addr | undefined = undefined;
  highestIova: Addr | undefined = undefined;
}

export class Endpoint {
  domain: Domain | undefined = undefined;
  /** Bumped whenever something this endpoint could reach may have become unreachable. */
  generation = 0;
  readonly stats = new EndpointStats();

  constructor(
    readonly id: number,
    /** What PROBE reports and translation enforces, sorted by start. */
    readonly regions: readonly ResvRegion[],
    readonly host: HostIommu | undefined,
    /** False for an endpoint cloud-hypervisor attached without knowing it. */
    readonly known: boolean,
  ) {}
}

/** Where a domain's IOVAs may lie and how they are keyed. */
export interface Geometry {
  /** log2 of the granule, the lowest bit of page_size_mask. */
  readonly granuleShift: number;
  /** Frames of the interval trees: the granule when MAP is checked for alignment, else single bytes. */
  readonly keyShift: number;
  /** INPUT_RANGE, when offered. */
  readonly inputRange: readonly [Addr, Addr] | undefined;
  /** DOMAIN_RANGE, when offered. */
  readonly domainRange: readonly [number, number] | undefined;
}

/** What the state needs from its device: fault delivery and the trace. */
export interface StateHooks {
  readonly trace: HostTrace;
  fault(ep: Endpoint, reason: number, flags: number, addr: Addr): void;
}

export class IommuState {
  readonly endpoints = new Map<number, Endpoint>();
  readonly domains = new Map<number, Domain>();
  /** Negotiated features the request rules depend on; the device sets them at FEATURES_OK. */
  bypassConfigNegotiated = false;
  mmioNegotiated = false;
  private bypassUnattached = false;
  private readonly granuleMask: number;
  /** 2^-keyShift: multiplying by it is exact and cheaper than dividing. */
  private readonly keyScale: number;

  constructor(
    readonly profile: ViommuProfile,
    /** Replaced, not changed, when assigned endpoints narrow the input range (crosvm). */
    public geometry: Geometry,
    /** The `reserved-regions` property: every endpoint has them. */
    private readonly propertyRegions: readonly ResvRegion[],
    private readonly hooks: StateHooks,
  ) {
    this.granuleMask = 2 ** geometry.granuleShift - 1;
    this.keyScale = 2 ** -geometry.keyShift;
  }

  /** A new endpoint; `exposeHost` probes its host IOMMU's unusable IOVAs as RESERVED regions. */
  addEndpoint(id: number, host: HostIommu | undefined, exposeHost: boolean): Endpoint {
    if (this.endpoints.get(id)?.known) throw new Error(`virtio-iommu endpoint ${id} added twice`);
    const fromHost = host && exposeHost ? host.reservedRegions() : [];
    const ep = new Endpoint(id, mergeRegions(fromHost, this.propertyRegions), host, true);
    this.endpoints.set(id, ep);
    return ep;
  }

  /** §5.13.6: who bypasses while unattached (config `bypass` with BYPASS_CONFIG offered, or F_BYPASS negotiated). */
  setBypassUnattached(on: boolean): void {
    if (on === this.bypassUnattached) return;
    this.bypassUnattached = on;
    for (const ep of this.endpoints.values()) {
      if (ep.domain !== undefined) continue;
      ep.generation++;
      this.hooks.trace.emit('virtio_iommu_switch_address_space', { endpoint: ep.id, on: !on });
    }
  }

  /** Device reset: "endpoints are not attached to any domain" (§5.13.5). */
  reset(): void {
    for (const d of [...this.domains.values()]) for (const ep of [...d.endpoints]) this.leave(ep);
    for (const [id, ep] of this.endpoints) if (!ep.known) this.endpoints.delete(id);
  }

  // ---- requests: each returns a VIRTIO_IOMMU_S status or UNWRITTEN ----

  attach(domainId: number, epId: number, flags: number, reservedNonZero: boolean): number {
    const p = this.profile;
    this.hooks.trace.emit('virtio_iommu_attach', { domain: domainId, endpoint: epId });
    if (p.attachChecksReserved && reservedNonZero) return S.INVAL;
    const known = p.attachBypassNeedsFeature && !this.bypassConfigNegotiated ? 0 : VIRTIO_IOMMU_ATTACH_F_BYPASS;
    if ((flags & ~known) !== 0) return S.INVAL;
    if (!this.domainInRange(domainId)) return S.RANGE;
    let ep = this.endpoints.get(epId);
    if (ep === undefined) {
      if (p.attachUnknownEndpoint === 'NOENT') return S.NOENT;
      ep = new Endpoint(epId, [], undefined, false);
      this.endpoints.set(epId, ep);
    }
    const bypass = (flags & VIRTIO_IOMMU_ATTACH_F_BYPASS) !== 0;
    const from = ep.domain;
    let to = this.domains.get(domainId);
    const moves = from !== undefined && (from !== to || p.reattachSameDomainDetaches);
    if (moves && p.detachSoleMemberOnly && from.endpoints.length > 1) return S.UNSUPP;
    if (moves && p.attachDetachesFirst) {
      this.leave(ep);
      to = this.domains.get(domainId);
    }
    if (to !== undefined && to.bypass !== bypass) return S.INVAL;
    if (to === undefined && this.domains.size >= p.maxDomains) return S.NOMEM;
    if (to !== undefined && p.attachChecksReservedConflict && this.conflicts(ep, to)) return S.UNSUPP;
    if (ep.domain === to && to !== undefined) return S.OK;
    // §5.13.6.2: as if DETACH from the old domain, then ATTACH.
    if (ep.domain !== undefined) this.leave(ep);
    to ??= this.createDomain(domainId, bypass);
    this.join(ep, to);
    return S.OK;
  }

  detach(domainId: number, epId: number): number {
    const p = this.profile;
    this.hooks.trace.emit('virtio_iommu_detach', { domain: domainId, endpoint: epId });
    if (!this.domainInRange(domainId)) return S.RANGE;
    const ep = this.endpoints.get(epId);
    if (ep === undefined) return answer(p.detachUnknownEndpoint);
    if (ep.domain === undefined) return answer(p.detachUnattached);
    if (p.detachChecksDomain && ep.domain.id !== domainId) return S.INVAL;
    if (p.detachSoleMemberOnly && ep.domain.endpoints.length > 1) return S.UNSUPP;
    this.leave(ep);
    return S.OK;
  }

  map(domainId: number, virtStart: Addr, virtEnd: Addr, physStart: Addr, flags: number): number {
    const p = this.profile;
    if (this.hooks.trace.enabled) {
      this.hooks.trace.emit('virtio_iommu_map', { domain: domainId, virt_start: hexAddr(virtStart), virt_end: hexAddr(virtEnd), phys_start: hexAddr(physStart), flags });
    }
    const known = p.mmioFlagNeedsFeature && !this.mmioNegotiated ? VIRTIO_IOMMU_MAP_F_MASK & ~VIRTIO_IOMMU_MAP_F.MMIO : VIRTIO_IOMMU_MAP_F_MASK;
    if ((flags & ~known) !== 0) return S.INVAL;
    if (!this.domainInRange(domainId)) return S.RANGE;
    const d = this.domains.get(domainId);
    if (d === undefined) return S.NOENT;
    if (d.bypass) return S.INVAL;
    if (virtEnd < virtStart || (p.mapRejectsEmptyRange && virtEnd <= virtStart)) return S.INVAL;
    if (!this.inInputRange(virtStart, virtEnd) || physEndOverflows(virtStart, virtEnd, physStart)) return S.RANGE;
    if (p.checkAlignment && !(this.aligned(virtStart) && this.aligned(physStart) && this.endAligned(virtEnd))) return S.RANGE;
    if (p.mapOverReserved !== 'allow' && reservedIn(d, virtStart, virtEnd)) return answer(p.mapOverReserved);
    if (d.mappings.size >= p.maxMappingsPerDomain) return S.NOMEM;
    const perm = (flags & (VIRTIO_IOMMU_MAP_F.READ | VIRTIO_IOMMU_MAP_F.WRITE)) | (p.readAlwaysAllowed ? VIRTIO_IOMMU_MAP_F.READ : 0);
    const m: Mapping = { virtStart, virtEnd, physStart, flags, perm };
    if (!d.mappings.insert(this.key(virtStart), this.key(virtEnd), m)) return S.INVAL;
    const refused = this.mapOnHosts(d, m);
    if (refused !== 0 && p.hostMapFailure !== 'OK') {
      this.removeMapping(d, m);
      return p.hostMapFailure === 'STATUS' ? (refused === -EINVAL ? S.RANGE : S.NOMEM) : answer(p.hostMapFailure);
    }
    d.mapped++;
    for (const ep of d.endpoints) ep.stats.mapped++;
    return S.OK;
  }

  unmap(domainId: number, virtStart: Addr, virtEnd: Addr, reservedNonZero: boolean): number {
    const p = this.profile;
    if (this.hooks.trace.enabled) this.hooks.trace.emit('virtio_iommu_unmap', { domain: domainId, virt_start: hexAddr(virtStart), virt_end: hexAddr(virtEnd) });
    if (p.unmapChecksReserved && reservedNonZero) return S.INVAL;
    if (!this.domainInRange(domainId)) return S.RANGE;
    const d = this.domains.get(domainId);
    if (d === undefined) return S.NOENT;
    if (d.bypass) return S.INVAL;
    if (virtEnd < virtStart) return S.INVAL;
    if (!this.inInputRange(virtStart, virtEnd)) return S.RANGE;
    const t = d.mappings;
    const last = this.key(virtEnd);
    const first = t.firstOverlap(this.key(virtStart), last);
    // §5.13.6.6: a split is RANGE with nothing removed (spec, CH, crosvm); QEMU removes until it meets it.
    if (p.unmapAtomic) {
      for (let i = first; i !== undefined; i = t.nextUpTo(i, last)) if (!within(i.value, virtStart, virtEnd)) return S.RANGE;
    }
    for (let i = first; i !== undefined; ) {
      const next = t.nextUpTo(i, last);
      if (!within(i.value, virtStart, virtEnd)) return S.RANGE;
      this.removeMapping(d, i.value);
      d.unmapped++;
      for (const ep of d.endpoints) ep.stats.unmapped++;
      if (this.hooks.trace.enabled) this.hooks.trace.emit('virtio_iommu_unmap_done', { domain: domainId, virt_start: hexAddr(i.value.virtStart), virt_end: hexAddr(i.value.virtEnd) });
      i = next;
    }
    return S.OK;
  }

  // ---- translation ----

  /**
   * The guest-physical address an endpoint's access to [addr, addr + len) reaches,
   * or -1 after reporting a fault. Every byte must be reachable with `access`.
   */
  translate(ep: Endpoint, addr: Addr, len: number, access: number): Addr {
    const s = ep.stats;
    const d = ep.domain;
    if (d === undefined ? this.bypassUnattached : d.bypass) {
      s.bypassed++;
      return addr;
    }
    const last = len > 1 ? addAddr(addr, len - 1) : addr;
    const regions = ep.regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i]!;
      if (!overlaps(r, addr, last)) continue;
      // An MSI doorbell is reached untranslated; a RESERVED region, or an access straddling one, faults.
      if (r.subtype === VIRTIO_IOMMU_RESV_MEM_T.MSI && r.start <= addr && last <= r.end) {
        s.msi++;
        return addr;
      }
      return this.fault(ep, VIRTIO_IOMMU_FAULT_R.MAPPING, access, false, addr);
    }
    if (d === undefined) return this.fault(ep, VIRTIO_IOMMU_FAULT_R.DOMAIN, access, false, addr);
    const hit = d.mappings.find(this.key(addr));
    if (hit === undefined) return this.fault(ep, VIRTIO_IOMMU_FAULT_R.MAPPING, access, false, addr);
    const m = hit.value;
    const need = access === DMA_READ ? VIRTIO_IOMMU_MAP_F.READ : VIRTIO_IOMMU_MAP_F.WRITE;
    if ((m.perm & need) === 0) return this.fault(ep, VIRTIO_IOMMU_FAULT_R.MAPPING, access, true, addr);
    if (last > m.virtEnd) {
      const gap = this.contiguousUpTo(d, m, last, need);
      if (gap !== undefined) return this.fault(ep, VIRTIO_IOMMU_FAULT_R.MAPPING, access, false, gap);
    }
    if (ep.host !== undefined && !ep.host.allows(addr, last, access !== DMA_READ)) {
      s.hostFaults++;
      return -1;
    }
    s.translations++;
    if (s.lowestIova === undefined || addr < s.lowestIova) s.lowestIova = addr;
    if (s.highestIova === undefined || last > s.highestIova) s.highestIova = last;
    return offsetAddr(m.physStart, m.virtStart, addr);
  }

  // ---- internals ----

  /** The tree key of a byte address; numbers take the short way, this runs several times per request. */
  private key(addr: Addr): Addr {
    if (typeof addr === 'number') return this.keyScale === 1 ? addr : Math.floor(addr * this.keyScale);
    return frameOf(addr, this.geometry.keyShift);
  }

  private domainInRange(id: number): boolean {
    const r = this.geometry.domainRange;
    return !this.profile.checkDomainRange || r === undefined || (id >= r[0] && id <= r[1]);
  }

  private inInputRange(start: Addr, end: Addr): boolean {
    const r = this.geometry.inputRange;
    return !this.profile.checkInputRange || r === undefined || (start >= r[0] && end <= r[1]);
  }

  private aligned(a: Addr): boolean {
    return (lo32(a) & this.granuleMask) === 0;
  }

  /** virt_end + 1 aligned, without computing 2^64 for the last byte of the space. */
  private endAligned(a: Addr): boolean {
    return (lo32(a) & this.granuleMask) === this.granuleMask;
  }

  /** A mapping of the domain lies in one of the endpoint's reserved regions: their probe properties are incompatible. */
  private conflicts(ep: Endpoint, d: Domain): boolean {
    return ep.regions.some((r) => d.mappings.firstOverlap(this.key(r.start), this.key(r.end)) !== undefined);
  }

  private createDomain(id: number, bypass: boolean): Domain {
    const d = new Domain(id, bypass);
    this.domains.set(id, d);
    this.hooks.trace.emit('virtio_iommu_get_domain', { domain: id });
    return d;
  }

  /** The endpoint enters the domain; an assigned endpoint's host IOMMU gets the domain's mappings (QEMU's replay). */
  private join(ep: Endpoint, d: Domain): void {
    d.endpoints.push(ep);
    ep.domain = d;
    ep.generation++;
    if (ep.host !== undefined) for (const { value: m } of d.mappings) mapOnHost(ep.host, m);
  }

  /** The endpoint leaves its domain, and the domain goes with its last endpoint (§5.13.6.3). */
  private leave(ep: Endpoint): void {
    const d = ep.domain!;
    d.endpoints.splice(d.endpoints.indexOf(ep), 1);
    ep.domain = undefined;
    ep.generation++;
    ep.host?.unmapAll();
    this.hooks.trace.emit('virtio_iommu_detach_endpoint_from_domain', { domain: d.id, endpoint: ep.id });
    if (d.endpoints.length > 0) return;
    this.domains.delete(d.id);
    this.hooks.trace.emit('virtio_iommu_put_domain', { domain: d.id });
  }

  /** 0, or the first host refusal (a negative errno) among the domain's assigned endpoints. */
  private mapOnHosts(d: Domain, m: Mapping): number {
    let refused = 0;
    for (const ep of d.endpoints) {
      if (ep.host === undefined) continue;
      const err = mapOnHost(ep.host, m);
      if (err !== 0 && refused === 0) refused = err;
    }
    return refused;
  }

  private removeMapping(d: Domain, m: Mapping): void {
    d.mappings.remove(this.key(m.virtStart));
    for (const ep of d.endpoints) {
      ep.generation++;
      ep.host?.unmap(m.virtStart);
    }
  }

  /** The first address in (m.virtEnd, last] that is not mapped on, contiguously and with `need`, or undefined. */
  private contiguousUpTo(d: Domain, m: Mapping, last: Addr, need: number): Addr | undefined {
    let cur = m;
    while (last > cur.virtEnd) {
      const after = addAddr(cur.virtEnd, 1);
      const n = d.mappings.find(this.key(after))?.value;
      if (n === undefined || n.virtStart !== after || (n.perm & need) === 0 || offsetAddr(m.physStart, m.virtStart, after) !== n.physStart) return after;
      cur = n;
    }
    return undefined;
  }

  private fault(ep: Endpoint, reason: number, access: number, permission: boolean, addr: Addr): number {
    const s = ep.stats.faults;
    if (reason === VIRTIO_IOMMU_FAULT_R.DOMAIN) s.DOMAIN++;
    else if (reason === VIRTIO_IOMMU_FAULT_R.MAPPING) s.MAPPING++;
    else s.UNKNOWN++;
    const kind = access === DMA_READ ? VIRTIO_IOMMU_FAULT_F.READ : VIRTIO_IOMMU_FAULT_F.WRITE;
    const flags = VIRTIO_IOMMU_FAULT_F.ADDRESS | (permission || this.profile.faultAccessFlags ? kind : 0);
    this.hooks.fault(ep, reason, flags, addr);
    return -1;
  }
}

/** Whether [start, end] touches a reserved region of an endpoint in the domain (§5.13.6.7.1: such a MAP is rejected). */
function reservedIn(d: Domain, start: Addr, end: Addr): boolean {
  for (const ep of d.endpoints) for (const r of ep.regions) if (overlaps(r, start, end)) return true;
  return false;
}

/** Whether UNMAP [start, end] covers the whole mapping. */
const within = (m: Mapping, start: Addr, end: Addr): boolean => m.virtStart >= start && m.virtEnd <= end;

/** One mapping into a host IOMMU, as QEMU notifies VFIO: MMIO mappings and ones without R/W never reach it. */
function mapOnHost(host: HostIommu, m: Mapping): number {
  if (m.flags & VIRTIO_IOMMU_MAP_F.MMIO || !(m.flags & (VIRTIO_IOMMU_MAP_F.READ | VIRTIO_IOMMU_MAP_F.WRITE))) return 0;
  return host.map(m.virtStart, m.virtEnd, m.physStart, (m.flags & VIRTIO_IOMMU_MAP_F.WRITE) !== 0);
}

/** PA = VA - virt_start + phys_start (§5.13.6.5), exact at any width. */
function offsetAddr(physStart: Addr, virtStart: Addr, va: Addr): Addr {
  if (typeof physStart === 'number' && typeof virtStart === 'number' && typeof va === 'number') {
    const pa = va - virtStart + physStart;
    if (pa < TWO53) return pa;
  }
  return toAddr(toBig(va) - toBig(virtStart) + toBig(physStart));
}

/** phys_start + (virt_end - virt_start) past 2^64 - 1: the mapping cannot exist. */
function physEndOverflows(virtStart: Addr, virtEnd: Addr, physStart: Addr): boolean {
  if (typeof physStart === 'number' && typeof virtStart === 'number' && typeof virtEnd === 'number') return false;
  return toBig(physStart) + toBig(virtEnd) - toBig(virtStart) > U64_MAX;
}
