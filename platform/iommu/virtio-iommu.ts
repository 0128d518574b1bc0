// virtio-iommu device model (virtio 1.4 §5.13, device ID 23): config space,
// features, the request queue (ATTACH, DETACH, MAP, UNMAP, PROBE) and fault
// reports on the event queue, with QEMU's property names and trace events.
// Strict by default; profiles.ts switches it to QEMU, cloud-hypervisor or crosvm.
import { type Addr, fromHiLo, hexAddr, toAddr } from '../../abi/addr.ts';
import {
  VIRTIO_IOMMU_EVENT_QUEUE,
  VIRTIO_IOMMU_F,
  VIRTIO_IOMMU_FEATURE_NAMES,
  VIRTIO_IOMMU_PROBE_T,
  VIRTIO_IOMMU_RESV_MEM_T,
  VIRTIO_IOMMU_S,
  VIRTIO_IOMMU_STATUS_NAMES,
  VIRTIO_IOMMU_T,
  VirtioIommuConfig,
  VirtioIommuFault,
  VirtioIommuProbeResvMem,
  VirtioIommuReqAttach,
  VirtioIommuReqDetach,
  VirtioIommuReqHead,
  VirtioIommuReqMap,
  VirtioIommuReqProbe,
  VirtioIommuReqTail,
  VirtioIommuReqUnmap,
  requestReadable,
} from '../../abi/virtio-iommu.ts';
import { DEVICE_ID, STATUS, bit, has } from '../../abi/virtio.ts';
import type { AccessSize } from '../../abi/boot.ts';
import type { AddressSpace } from '../address-space.ts';
import type { GuestMemory } from '../memory.ts';
import { type DeviceContext, VirtioDeviceModel, type VirtioDeviceOptions } from '../virtio/device.ts';
import { type DescriptorChain, QueueError, type SplitQueue } from '../virtio/queue.ts';
import { type Endpoint, IommuState, UNWRITTEN, answer } from './domains.ts';
import { EndpointSpace } from './endpoint-space.ts';
import { type HostFailure, HostIommu, type HostIommuOptions } from './host-iommu.ts';
import { type FeatureName, type FeatureSwitches, GRANULE_SHIFT, type Granule, PROFILES, type ProfileName, type ViommuProfile } from './profiles.ts';
import { type ResvRegion, U64_MAX, parseReservedRegion } from './reserved-regions.ts';

/** Service time of a request: a tree update and the notifier walk (QEMU), about a microsecond. */
export const VIOMMU_REQUEST_NS = 1000;
/** A PROBE also fills and copies probe_size bytes. */
export const VIOMMU_PROBE_NS = 2000;

/** A `reserved-regions` entry: QEMU's "<low>:<high>:<type>" string or its parts. */
export type ReservedRegionOption = string | { readonly start: Addr; readonly end: Addr; readonly type: 'reserved' | 'msi' };

/** The device's properties, named after QEMU's where QEMU has them; unset ones come from the profile. */
export interface VirtioIommuOptions extends VirtioDeviceOptions {
  readonly profile?: ProfileName;
  /** Offer or withhold single feature bits. */
  readonly features?: Partial<FeatureSwitches>;
  /** `aw-bits`: input_range is [0, 2^awBits - 1]; 32..64. */
  readonly awBits?: number;
  /** `granule`: page_size_mask is every size from it up. */
  readonly granule?: Granule;
  /** `boot-bypass`: the initial config `bypass`. */
  readonly bootBypass?: boolean;
  /** `reserved-regions`: probed by every endpoint. */
  readonly reservedRegions?: readonly ReservedRegionOption[];
  readonly probeSize?: number;
  readonly domainRange?: readonly [number, number];
}

export interface EndpointOptions {
  /** The endpoint's device, for the report. */
  readonly name?: string;
  /** Guest-physical memory as the bus reaches it (the machine's PhysicalSpace). */
  readonly physical: AddressSpace;
  /** An assigned (VFIO-like) endpoint: the host IOMMU under it. */
  readonly host?: HostIommuOptions;
  /** Probe the host's unusable IOVAs as RESERVED (QEMU 9.1+); default from the profile. */
  readonly exposeHostReserved?: boolean;
}

export interface EndpointReport {
  readonly id: number;
  readonly name: string;
  readonly translated: boolean;
  readonly domain: number | null;
  readonly reservedRegions: { start: string; end: string; type: 'reserved' | 'msi' }[];
  readonly probes: number;
  readonly translations: number;
  readonly bypassed: number;
  readonly msi: number;
  readonly direct: number;
  readonly faults: { UNKNOWN: number; DOMAIN: number; MAPPING: number };
  readonly mapped: number;
  readonly unmapped: number;
  readonly lowestIova: string | null;
  readonly highestIova: string | null;
  readonly host?: { awBits: number; usable: { start: string; end: string }[]; maps: number; unmaps: number; faults: number; failures: HostFailure[] };
}

export interface ViommuReport {
  readonly profile: ProfileName;
  readonly config: { pageSizeMask: string; inputRange: [string, string] | null; domainRange: [number, number] | null; probeSize: number | null; bypass: number | null };
  /** Requests by type, then by the status written (NONE: used length 0, nothing written). */
  readonly requests: Record<string, Record<string, number>>;
  readonly faults: { reported: number; dropped: number; unreported: number };
  readonly endpoints: EndpointReport[];
  readonly domains: { id: number; bypass: boolean; endpoints: number[]; mappings: number; mapped: number; unmapped: number }[];
}

const S = VIRTIO_IOMMU_S;
const HEAD = VirtioIommuReqHead.span;
const TAIL = VirtioIommuReqTail.span;
const A = VirtioIommuReqAttach.off;
const D = VirtioIommuReqDetach.off;
const M = VirtioIommuReqMap.off;
const U = VirtioIommuReqUnmap.off;
const P = VirtioIommuReqProbe.off;
const C = VirtioIommuConfig.off;
const RESV = VirtioIommuProbeResvMem;
const FAULT = VirtioIommuFault;
/** The reserved bytes a device checks: ATTACH's (MUST) and UNMAP's (MAY); the typed offsets name only the fields. */
export const RESERVED_OFFSET = Object.freeze({
  attach: (VirtioIommuReqAttach.off as Readonly<Record<string, number>>)['reserved']!,
  unmap: (VirtioIommuReqUnmap.off as Readonly<Record<string, number>>)['reserved']!,
});
/** Readable bytes (head + body) of each request type. */
const READABLE: readonly number[] = [
  0,
  requestReadable(VirtioIommuReqAttach.span),
  requestReadable(VirtioIommuReqDetach.span),
  requestReadable(VirtioIommuReqMap.span),
  requestReadable(VirtioIommuReqUnmap.span),
  VirtioIommuReqProbe.span,
];
const MAX_READABLE = Math.max(...READABLE);
const TYPE_NAMES = ['UNKNOWN', 'ATTACH', 'DETACH', 'MAP', 'UNMAP', 'PROBE'];
/** Where UNWRITTEN is counted, after the nine statuses. */
const NONE = VIRTIO_IOMMU_STATUS_NAMES.length;
const MAX_PROBE_SIZE = 1 << 16;

export class VirtioIommu extends VirtioDeviceModel {
  readonly profile: ViommuProfile;
  readonly state: IommuState;
  readonly granuleShift: number;
  private readonly offered: FeatureSwitches;
  private readonly probeSize: number;
  private readonly bootBypass: boolean;
  private readonly propertyRegions: readonly ResvRegion[];
  /** MAP_UNMAP negotiated: MAP and UNMAP are requests the device knows. */
  private mapUnmap = false;
  /** cloud-hypervisor's bypass state follows config writes only. */
  private bypassWritten = false;
  private readonly spaces = new Map<number, EndpointSpace>();
  private readonly mem: GuestMemory;
  private readonly req = new Uint8Array(MAX_READABLE);
  private readonly reqView = new DataView(this.req.buffer);
  private readonly tail = new Uint8Array(TAIL);
  private readonly faultRecord = new Uint8Array(FAULT.span);
  private readonly faultView = new DataView(this.faultRecord.buffer);
  private readonly probeBuf: Uint8Array;
  /** [type][status]; type 0 is any unknown type, status NONE a request answered unwritten. */
  private readonly counts = TYPE_NAMES.map(() => new Array<number>(NONE + 1).fill(0));
  private readonly faultCounts = { reported: 0, dropped: 0, unreported: 0 };

  constructor(ctx: DeviceContext, opts: VirtioIommuOptions = {}) {
    const profile = PROFILES[opts.profile ?? 'spec'];
    if (!profile) throw new Error(`${ctx.name}: unknown virtio-iommu profile ${opts.profile}`);
    const awBits = opts.awBits ?? profile.awBits;
    if (!Number.isInteger(awBits) || awBits < 32 || awBits > 64) throw new Error(`${ctx.name}: aw-bits ${awBits} must be within [32, 64]`);
    const offered = offeredFeatures(profile, opts.features ?? {}, awBits);
    super(ctx, { deviceId: DEVICE_ID.IOMMU, numQueues: 2, features: featureBits(offered), featureNames: VIRTIO_IOMMU_FEATURE_NAMES, configSize: profile.configHasBypass ? VirtioIommuConfig.span : C.bypass }, opts);
    this.profile = profile;
    this.mem = ctx.mem;
    this.offered = offered;
    const granule = opts.granule ?? profile.granule;
    if (GRANULE_SHIFT[granule] === undefined) throw new Error(`${ctx.name}: granule ${granule} is not one of 4k, 8k, 16k, 64k`);
    const pageSizeMask = opts.granule === undefined && profile.pageSizeMask !== undefined ? profile.pageSizeMask : U64_MAX ^ ((1n << BigInt(GRANULE_SHIFT[granule])) - 1n);
    this.granuleShift = lowestBit(pageSizeMask);
    this.probeSize = opts.probeSize ?? profile.probeSize;
    if (!Number.isInteger(this.probeSize) || this.probeSize < 0 || this.probeSize > MAX_PROBE_SIZE) throw new Error(`${ctx.name}: probe size ${this.probeSize} outside [0, ${MAX_PROBE_SIZE}]`);
    const domainRange = opts.domainRange ?? profile.domainRange;
    if (!domainRange.every((d) => Number.isInteger(d) && d >= 0 && d <= 0xffff_ffff) || domainRange[0] > domainRange[1]) throw new Error(`${ctx.name}: domain range ${domainRange.join('-')} is not a u32 range`);
    this.probeBuf = new Uint8Array(this.probeSize);
    this.bootBypass = opts.bootBypass ?? profile.bootBypass;
    this.propertyRegions = (opts.reservedRegions ?? []).map((r) => reservedRegion(ctx.name, r));

    const cfg = this.configView;
    cfg.setBigUint64(C.page_size_mask, pageSizeMask, true);
    const inputEnd = toAddr((1n << BigInt(awBits)) - 1n);
    if (offered.input_range) this.setInputEnd(inputEnd);
    if (offered.domain_range) {
      cfg.setUint32(C.domain_start, domainRange[0], true);
      cfg.setUint32(C.domain_end, domainRange[1], true);
    }
    if (offered.probe) cfg.setUint32(C.probe_size, this.probeSize, true);
    if (profile.configHasBypass) this.config[C.bypass] = this.bootBypass ? 1 : 0;

    this.state = new IommuState(
      profile,
      {
        granuleShift: this.granuleShift,
        keyShift: profile.checkAlignment ? this.granuleShift : 0,
        inputRange: offered.input_range ? [0, inputEnd] : undefined,
        // A plain copy: the profile's pair is frozen, which V8 indexes slowly, and every request checks it.
        domainRange: offered.domain_range ? [domainRange[0], domainRange[1]] : undefined,
      },
      this.propertyRegions,
      { trace: this.trace, fault: (ep, reason, flags, addr) => this.reportFault(ep, reason, flags, addr) },
    );
    this.updateBypass();
  }

  /**
   * Puts an endpoint behind this IOMMU (its PCI RID, or the ID firmware gives a
   * virtio-mmio device) and returns the address space its device must DMA through.
   */
  addEndpoint(id: number, opts: EndpointOptions): EndpointSpace {
    const name = opts.name ?? `endpoint ${id}`;
    const host = opts.host && new HostIommu(name, this.events, this.trace, opts.host);
    const expose = opts.exposeHostReserved ?? this.profile.hostReservedRegions;
    const ep = this.state.addEndpoint(id >>> 0, host, expose);
    const space = new EndpointSpace(name, ep, this.state, opts.physical, this.mem, this.trace);
    this.spaces.set(ep.id, space);
    if (host && this.profile.inputRangeFromHost && this.offered.input_range) this.fitInputRangeToHosts();
    return space;
  }

  /** System reset: a device reset, and `bypass` back to boot-bypass (§5.13.4: bypass survives device reset only). */
  systemReset(): void {
    this.trace.emit('virtio_iommu_system_reset');
    this.setStatus(0);
    if (this.profile.configHasBypass) this.config[C.bypass] = this.bootBypass ? 1 : 0;
    this.bypassWritten = false;
    this.updateBypass();
  }

  override setStatus(value: number): void {
    super.setStatus(value);
    if ((value & 0xff) === 0) {
      this.trace.emit('virtio_iommu_device_reset');
      this.state.reset();
    }
    this.trace.emit('virtio_iommu_device_status', { status: this.status });
    this.state.bypassConfigNegotiated = this.negotiated(VIRTIO_IOMMU_F.BYPASS_CONFIG);
    this.state.mmioNegotiated = this.negotiated(VIRTIO_IOMMU_F.MMIO);
    this.mapUnmap = has(this.driverFeatures, VIRTIO_IOMMU_F.MAP_UNMAP);
    this.updateBypass();
  }

  /** The event queue holds the driver's buffers until a fault needs one: a kick there starts no work (QEMU adds it without a handler). */
  override queueNotify(index: number): void {
    if (index === VIRTIO_IOMMU_EVENT_QUEUE) this.trace.emit('virtio_queue_notify', { dev: this.name, vq: index });
    else super.queueNotify(index);
  }

  /** Only `bypass` is the driver's to write (§5.13.4); writes elsewhere are dropped as any read-only config. */
  override writeConfig(off: number, size: AccessSize, value: number): void {
    const at = C.bypass;
    if (!this.profile.configHasBypass || off > at || off + size <= at) {
      super.writeConfig(off, size, value);
      return;
    }
    this.writeBypass((value >>> (8 * (at - off))) & 0xff);
  }

  iommuReport(): ViommuReport {
    const cfg = this.configView;
    const o = this.offered;
    return {
      profile: this.profile.name,
      config: {
        pageSizeMask: hexAddr(cfg.getBigUint64(C.page_size_mask, true)),
        inputRange: o.input_range ? [hexAddr(cfg.getBigUint64(C.input_start, true)), hexAddr(cfg.getBigUint64(C.input_end, true))] : null,
        domainRange: o.domain_range ? [cfg.getUint32(C.domain_start, true), cfg.getUint32(C.domain_end, true)] : null,
        probeSize: o.probe ? this.probeSize : null,
        bypass: this.profile.configHasBypass && o.bypass_config ? this.config[C.bypass]! : null,
      },
      requests: Object.fromEntries(
        TYPE_NAMES.map((t, i) => [t, Object.fromEntries(this.counts[i]!.flatMap((n, s) => (n > 0 ? [[statusName(s), n]] : [])))] as const).filter(([, c]) => Object.keys(c).length > 0),
      ),
      faults: { ...this.faultCounts },
      endpoints: [...this.state.endpoints.values()].map((ep) => this.endpointReport(ep)),
      domains: [...this.state.domains.values()].map((d) => ({
        id: d.id,
        bypass: d.bypass,
        endpoints: d.endpoints.map((ep) => ep.id),
        mappings: d.mappings.size,
        mapped: d.mapped,
        unmapped: d.unmapped,
      })),
    };
  }

  // ---- device side ----

  /** Requests by type (and how many failed) and fault reports, flat for the common device report. */
  protected deviceStats(): Record<string, number> {
    const f = this.faultCounts;
    const stats: Record<string, number> = { faultsReported: f.reported, faultsDropped: f.dropped, faultsUnreported: f.unreported };
    TYPE_NAMES.forEach((t, i) => {
      const c = this.counts[i]!;
      const all = c.reduce((a, b) => a + b, 0);
      stats[t.toLowerCase()] = all;
      stats[`${t.toLowerCase()}Failed`] = all - c[S.OK]!;
    });
    return stats;
  }

  /**
   * One request: the readable part is copied out of guest memory first, then
   * checked; the status goes in the tail and the used length is what was written.
   */
  protected serve(_queue: SplitQueue, chain: DescriptorChain): number {
    const p = this.profile;
    const readable = chain.readableBytes;
    if (readable < HEAD || chain.writableBytes < TAIL) {
      // §5.13.6: a request whose tail the device cannot find is returned unwritten; QEMU breaks the device instead.
      if (p.badHeadTailIsError) this.virtioError('VIOMMU_BAD_HEAD_TAIL', `request head ${chain.head}: ${readable} readable, ${chain.writableBytes} writable bytes`);
      this.counts[0]![NONE]!++;
      return VIOMMU_REQUEST_NS;
    }
    const n = Math.min(readable, MAX_READABLE);
    if (chain.read(0, this.req, n) < n) {
      this.finish(chain, 0, S.DEVERR);
      return VIOMMU_REQUEST_NS;
    }
    const type = this.req[0]!;
    if (!this.available(type)) {
      this.finish(chain, type < TYPE_NAMES.length ? type : 0, answer(p.unknownType));
      return VIOMMU_REQUEST_NS;
    }
    const need = READABLE[type]!;
    if (readable < need || (p.exactRequestLength && readable !== need)) {
      this.finish(chain, type, readable < need ? answer(p.shortRequest) : S.INVAL);
      return VIOMMU_REQUEST_NS;
    }
    if (type === VIRTIO_IOMMU_T.PROBE) {
      this.count(type, this.probe(chain));
      return VIOMMU_PROBE_NS;
    }
    this.finish(chain, type, this.handle(type));
    return VIOMMU_REQUEST_NS;
  }

  private handle(type: number): number {
    const dv = this.reqView;
    const st = this.state;
    switch (type) {
      case VIRTIO_IOMMU_T.ATTACH:
        return st.attach(dv.getUint32(A.domain, true), dv.getUint32(A.endpoint, true), dv.getUint32(A.flags, true), dv.getUint32(RESERVED_OFFSET.attach, true) !== 0);
      case VIRTIO_IOMMU_T.DETACH:
        return st.detach(dv.getUint32(D.domain, true), dv.getUint32(D.endpoint, true));
      case VIRTIO_IOMMU_T.MAP:
        return st.map(dv.getUint32(M.domain, true), this.u64(M.virt_start), this.u64(M.virt_end), this.u64(M.phys_start), dv.getUint32(M.flags, true));
      default:
        return st.unmap(dv.getUint32(U.domain, true), this.u64(U.virt_start), this.u64(U.virt_end), dv.getUint32(RESERVED_OFFSET.unmap, true) !== 0);
    }
  }

  /**
   * PROBE (§5.13.6.7): probe_size bytes of properties, zero-filled after the
   * last one, then the tail, where the profile puts it; returns the status.
   */
  private probe(chain: DescriptorChain): number {
    const p = this.profile;
    const size = this.probeSize;
    const atEnd = p.probeTail === 'end';
    /** The properties buffer the driver gave: everything before its tail. */
    const room = chain.writableBytes - TAIL;
    if (room < size) {
      // "SHOULD NOT write any property ... INVAL" (spec, crosvm: zeros then the tail); QEMU writes a DEVERR tail only.
      const status = answer(p.probeShortBuffer);
      if (status !== UNWRITTEN) {
        if (atEnd) writeZeros(chain, 0, room);
        this.writeTail(chain, atEnd ? room : 0, status);
      }
      return status;
    }
    const id = this.reqView.getUint32(P.endpoint, true);
    this.trace.emit('virtio_iommu_probe_request', { endpoint: id });
    const ep = this.state.endpoints.get(id);
    const known = ep !== undefined && ep.known;
    const props = this.probeBuf.fill(0);
    // cloud-hypervisor answers for any endpoint, with the regions every endpoint has.
    const status = !known && p.probeChecksEndpoint ? S.NOENT : this.fillProperties(props, id, known ? ep.regions : this.propertyRegions);
    if (status === S.OK && known) ep.stats.probes++;
    chain.write(0, props);
    if (atEnd) writeZeros(chain, size, room);
    this.writeTail(chain, atEnd ? room : size, status);
    return status;
  }

  /** One RESV_MEM property per region (length 20: the bytes after the header); INVAL when they do not fit in probe_size (as QEMU). */
  private fillProperties(props: Uint8Array, endpoint: number, regions: readonly ResvRegion[]): number {
    if (regions.length * RESV.span > this.probeSize) return S.INVAL;
    const dv = new DataView(props.buffer, props.byteOffset, props.byteLength);
    regions.forEach((r, i) => {
      const at = i * RESV.span;
      dv.setUint16(at + RESV.off.type, VIRTIO_IOMMU_PROBE_T.RESV_MEM, true);
      dv.setUint16(at + RESV.off.length, RESV.span - RESV.off.subtype, true);
      dv.setUint8(at + RESV.off.subtype, r.subtype);
      dv.setBigUint64(at + RESV.off.start, BigInt(r.start), true);
      dv.setBigUint64(at + RESV.off.end, BigInt(r.end), true);
      this.trace.emit('virtio_iommu_fill_resv_property', { devid: endpoint, subtype: r.subtype, start: hexAddr(r.start), end: hexAddr(r.end) });
    });
    return S.OK;
  }

  /** Writes the status in the tail, first in the writable part, and counts it. */
  private finish(chain: DescriptorChain, type: number, status: number): void {
    if (status !== UNWRITTEN) this.writeTail(chain, 0, status);
    this.count(type, status);
  }

  private writeTail(chain: DescriptorChain, at: number, status: number): void {
    this.tail[0] = status;
    chain.write(at, this.tail);
    // cloud-hypervisor writes the status, then completes a failed request with used length 0.
    if (status !== S.OK && this.profile.errorUsedLengthZero) chain.written = 0;
  }

  private count(type: number, status: number): void {
    this.counts[type]![status === UNWRITTEN ? NONE : status]!++;
  }

  /** ATTACH and DETACH always; MAP and UNMAP once MAP_UNMAP is negotiated; PROBE when offered (§5.13.6.7). */
  private available(type: number): boolean {
    switch (type) {
      case VIRTIO_IOMMU_T.ATTACH:
      case VIRTIO_IOMMU_T.DETACH:
        return true;
      case VIRTIO_IOMMU_T.MAP:
      case VIRTIO_IOMMU_T.UNMAP:
        return this.mapUnmap;
      case VIRTIO_IOMMU_T.PROBE:
        return this.offered.probe;
      default:
        return false;
    }
  }

  /** A fault on the event queue (§5.13.6.8), or counted as dropped when no buffer waits there. */
  private reportFault(ep: Endpoint, reason: number, flags: number, addr: Addr): void {
    this.trace.emit('virtio_iommu_report_fault', { reason, flags, endpoint: ep.id, address: hexAddr(addr) });
    if (!this.profile.faultReports) {
      this.faultCounts.unreported++;
      return;
    }
    const q = this.queues[VIRTIO_IOMMU_EVENT_QUEUE]!;
    const chain = this.live && q.ready ? q.pop() : undefined;
    if (chain === undefined) {
      this.faultCounts.dropped++;
      return;
    }
    if (chain instanceof QueueError) {
      this.virtioError(chain.reason, chain.detail);
      return;
    }
    if (chain.writableBytes < FAULT.span) {
      this.virtioError('VIOMMU_EVENT_BUFFER_TOO_SMALL', `event buffer of ${chain.writableBytes} bytes, a fault needs ${FAULT.span}`);
      return;
    }
    const dv = this.faultView;
    dv.setUint8(FAULT.off.reason, reason);
    dv.setUint32(FAULT.off.flags, flags, true);
    dv.setUint32(FAULT.off.endpoint, ep.id, true);
    dv.setBigUint64(FAULT.off.address, BigInt(addr), true);
    chain.write(0, this.faultRecord);
    const err = q.push(chain);
    if (err) {
      this.virtioError(err.reason, err.detail);
      return;
    }
    this.faultCounts.reported++;
    if (q.needsInterrupt()) this.signalUsed(VIRTIO_IOMMU_EVENT_QUEUE);
  }

  private writeBypass(value: number): void {
    this.trace.emit('virtio_iommu_set_config', { bypass: value });
    const negotiated = this.negotiated(VIRTIO_IOMMU_F.BYPASS_CONFIG);
    const current = this.config[C.bypass]!;
    if (this.profile.bypassWriteErrors && ((!negotiated && value !== current) || value > 1)) {
      // QEMU's set_config: "cannot set config.bypass", and only 0 or 1 (virtio_error).
      this.virtioError('VIOMMU_BAD_BYPASS_WRITE', negotiated ? `bypass ${value}` : 'bypass written without BYPASS_CONFIG');
      return;
    }
    // §5.13.4: only with BYPASS_CONFIG negotiated; bits 1-7 are not the driver's.
    if (!negotiated) return;
    this.config[C.bypass] = value & 1;
    this.bypassWritten = true;
    this.updateBypass();
  }

  /** §5.13.6: unattached endpoints bypass with config `bypass` = 1 (BYPASS_CONFIG offered) or F_BYPASS negotiated. */
  private updateBypass(): void {
    const cfgBypass = this.profile.configHasBypass && this.offered.bypass_config && (this.config[C.bypass] === 1 || (this.profile.bypassUntilConfigWrite && !this.bypassWritten));
    this.state.setBypassUnattached(cfgBypass || this.negotiated(VIRTIO_IOMMU_F.BYPASS));
  }

  private negotiated(feature: number): boolean {
    return (this.status & STATUS.FEATURES_OK) !== 0 && has(this.driverFeatures, feature);
  }

  private fitInputRangeToHosts(): void {
    let end: Addr = 0;
    for (const ep of this.state.endpoints.values()) {
      for (const r of ep.host?.usable ?? []) if (r.end > end) end = r.end;
    }
    this.setInputEnd(end);
    this.state.geometry = { ...this.state.geometry, inputRange: [0, end] };
  }

  private setInputEnd(end: Addr): void {
    this.configView.setBigUint64(C.input_start, 0n, true);
    this.configView.setBigUint64(C.input_end, BigInt(end), true);
  }

  private u64(off: number): Addr {
    return fromHiLo(this.reqView.getUint32(off + 4, true), this.reqView.getUint32(off, true));
  }

  private endpointReport(ep: Endpoint): EndpointReport {
    const s = ep.stats;
    const space = this.spaces.get(ep.id);
    const host = ep.host;
    return {
      id: ep.id,
      name: space?.name ?? `endpoint ${ep.id}`,
      translated: space?.translated ?? true,
      domain: ep.domain?.id ?? null,
      reservedRegions: ep.regions.map((r) => ({ start: hexAddr(r.start), end: hexAddr(r.end), type: r.subtype === VIRTIO_IOMMU_RESV_MEM_T.MSI ? 'msi' : 'reserved' })),
      probes: s.probes,
      translations: s.translations,
      bypassed: s.bypassed,
      msi: s.msi,
      direct: s.direct,
      faults: { ...s.faults },
      mapped: s.mapped,
      unmapped: s.unmapped,
      lowestIova: s.lowestIova === undefined ? null : hexAddr(s.lowestIova),
      highestIova: s.highestIova === undefined ? null : hexAddr(s.highestIova),
      ...(host && {
        host: {
          awBits: host.awBits,
          usable: host.usable.map((r) => ({ start: hexAddr(r.start), end: hexAddr(r.end) })),
          ...host.stats,
          failures: [...host.failures],
        },
      }),
    };
  }
}

const ZEROS = new Uint8Array(4096);

/** Zero-fills [from, to) of the writable part a page at a time: a driver's oversized buffer costs no allocation. */
function writeZeros(chain: DescriptorChain, from: number, to: number): void {
  for (let at = from; at < to; at += ZEROS.length) chain.write(at, ZEROS.subarray(0, Math.min(ZEROS.length, to - at)));
}

export const statusName = (s: number): string => (s === NONE || s === UNWRITTEN ? 'NONE' : (VIRTIO_IOMMU_STATUS_NAMES[s] ?? `0x${s.toString(16)}`));

function offeredFeatures(profile: ViommuProfile, overrides: Partial<FeatureSwitches>, awBits: number): FeatureSwitches {
  const f = { ...profile.features };
  if (profile.inputRangeOnlyBelow64 && awBits === 64) f.input_range = false;
  for (const [k, v] of Object.entries(overrides)) if (k in f && v !== undefined) f[k as FeatureName] = v;
  return f;
}

function featureBits(f: FeatureSwitches): bigint {
  let bits = 0n;
  for (const [name, on] of Object.entries(f)) if (on) bits |= bit(VIRTIO_IOMMU_F[name.toUpperCase() as keyof typeof VIRTIO_IOMMU_F]);
  return bits;
}

function lowestBit(mask: bigint): number {
  let n = 0;
  while (((mask >> BigInt(n)) & 1n) === 0n) n++;
  return n;
}

function reservedRegion(dev: string, r: ReservedRegionOption): ResvRegion {
  if (typeof r === 'string') {
    try {
      return parseReservedRegion(r);
    } catch (e) {
      throw new Error(`${dev}: ${(e as Error).message}`);
    }
  }
  const start = toAddr(r.start);
  const end = toAddr(r.end);
  if (end < start) throw new Error(`${dev}: reserved region ${hexAddr(start)}-${hexAddr(end)} ends before it starts`);
  return { start, end, subtype: r.type === 'msi' ? VIRTIO_IOMMU_RESV_MEM_T.MSI : VIRTIO_IOMMU_RESV_MEM_T.RESERVED };
}
