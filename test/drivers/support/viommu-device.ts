// An in-test virtio-iommu device (virtio 1.4 §5.13) for the driver tests,
// written from the spec's numbers rather than abi/ so that a layout mistake in
// the driver is not mirrored here. It keeps endpoints, domains and mappings with
// the spec's rules, answers PROBE with property bytes a test chooses, and holds
// the event buffers until a test reports a fault.
import { DEVICE_ID } from '../../../abi/virtio.ts';
import { registerVirtioDrivers, type VirtioStack } from '../../../drivers/index.ts';
import type { VirtioIommu } from '../../../drivers/virtio-iommu.ts';
import type { VirtioDevice } from '../../../drivers/virtio/core.ts';
import { PlatformDevice } from '../../../kernel/platform-bus.ts';
import type { Chain } from './device-ring.ts';
import { FakeMachine } from './machine.ts';
import { MMIO_BASE, MMIO_IRQ } from './stack.ts';
import { MmioFront, VirtioModel } from './virtio-model.ts';

export const T = { ATTACH: 1, DETACH: 2, MAP: 3, UNMAP: 4, PROBE: 5 } as const;
export const S = { OK: 0, IOERR: 1, UNSUPP: 2, DEVERR: 3, INVAL: 4, RANGE: 5, NOENT: 6, FAULT: 7, NOMEM: 8 } as const;
/** Device feature bits (§5.13.3). */
export const VF = { INPUT_RANGE: 1n << 0n, DOMAIN_RANGE: 1n << 1n, MAP_UNMAP: 1n << 2n, BYPASS: 1n << 3n, PROBE: 1n << 4n, MMIO: 1n << 5n, BYPASS_CONFIG: 1n << 6n };
export const VERSION_1 = 1n << 32n;
const EVENT_QUEUE = 1;
const TAIL = 4;

export interface ViommuOptions {
  readonly features: bigint;
  readonly pageSizeMask?: bigint;
  readonly inputRange?: readonly [bigint, bigint];
  readonly domainRange?: readonly [number, number];
  readonly probeSize?: number;
  readonly bypass?: number;
  readonly endpoints?: readonly number[];
  /** Raw properties for an endpoint's PROBE reply (zero-padded to probe_size). */
  readonly probeProperties?: (endpoint: number) => Uint8Array;
  readonly queueSize?: number;
  /** Leave the VIOT table without this IOMMU. */
  readonly noViot?: boolean;
}

/** A request as the device decoded it, with the status it answered. */
export interface SeenRequest {
  readonly type: number;
  readonly domain?: number;
  readonly endpoint?: number;
  readonly flags?: number;
  readonly start?: bigint;
  readonly end?: bigint;
  readonly phys?: bigint;
  status: number | 'none';
}

export interface DevMapping {
  readonly start: bigint;
  readonly end: bigint;
  readonly phys: bigint;
  readonly flags: number;
}

interface DevDomain {
  readonly bypass: boolean;
  readonly endpoints: Set<number>;
  mappings: DevMapping[];
}

/** Holds the event queue's buffers instead of returning them at once. */
class ViommuModel extends VirtioModel {
  override process(q: number): void {
    if (q !== EVENT_QUEUE) super.process(q);
  }
}

export class ViommuDevice {
  readonly model: ViommuModel;
  readonly requests: SeenRequest[] = [];
  readonly domains = new Map<number, DevDomain>();
  /** Endpoint ID → domain ID. */
  readonly attached = new Map<number, number>();
  /** Request types answered with nothing written and used length 0, as cloud-hypervisor does on errors. */
  readonly silent = new Set<number>();
  private readonly endpoints: Set<number>;
  private readonly granule: bigint;

  constructor(
    m: FakeMachine,
    readonly opts: ViommuOptions,
  ) {
    this.endpoints = new Set(opts.endpoints ?? []);
    const mask = opts.pageSizeMask ?? ~0xfffn & 0xffff_ffff_ffff_ffffn;
    this.granule = mask & -mask;
    const q = opts.queueSize ?? 64;
    this.model = new ViommuModel(m, { deviceId: DEVICE_ID.IOMMU, features: opts.features, queues: [q, q], serve: (c, dv) => this.serve(c, dv), config: this.configBytes(mask) });
  }

  /** Fault record bytes into the next event buffer, with an interrupt; false when the driver left none. */
  fault(record: Uint8Array, usedLen = record.length): boolean {
    const ring = this.model.ring(EVENT_QUEUE);
    const c = ring.pop();
    if (!c) return false;
    new Uint8Array(this.model.m.ram).set(record, c.writable[0]!.off);
    const old = ring.usedIdx;
    ring.push(c.head, usedLen);
    if (ring.wantsInterrupt(old)) this.model.signal(EVENT_QUEUE);
    return true;
  }

  /** Event buffers the driver has made available and the device has not used. */
  eventBuffersHeld(): number {
    const ring = this.model.ring(EVENT_QUEUE);
    return (ring.availIdx - ring.lastAvail) & 0xffff;
  }

  private configBytes(mask: bigint): Uint8Array {
    const b = new Uint8Array(40);
    const dv = new DataView(b.buffer);
    const [inStart, inEnd] = this.opts.inputRange ?? [0n, 0xffff_ffff_ffff_ffffn];
    const [domStart, domEnd] = this.opts.domainRange ?? [0, 0xffff_ffff];
    dv.setBigUint64(0, mask, true);
    dv.setBigUint64(8, inStart, true);
    dv.setBigUint64(16, inEnd, true);
    dv.setUint32(24, domStart, true);
    dv.setUint32(28, domEnd, true);
    dv.setUint32(32, this.opts.probeSize ?? 512, true);
    dv.setUint8(36, this.opts.bypass ?? 0);
    return b;
  }

  /** One request: exactly one readable and one writable descriptor, as Linux sends them. */
  private serve(c: Chain, dv: DataView): number {
    if (c.readable.length !== 1 || c.writable.length !== 1) throw new Error(`request with ${c.readable.length} readable and ${c.writable.length} writable descriptors`);
    const r = c.readable[0]!.off;
    const w = c.writable[0]!;
    const type = dv.getUint8(r);
    const u32 = (o: number) => dv.getUint32(r + o, true);
    const u64 = (o: number) => dv.getBigUint64(r + o, true);
    let seen: SeenRequest;
    switch (type) {
      case T.ATTACH: seen = { type, domain: u32(4), endpoint: u32(8), flags: u32(12), status: 0 }; break;
      case T.DETACH: seen = { type, domain: u32(4), endpoint: u32(8), status: 0 }; break;
      case T.MAP: seen = { type, domain: u32(4), start: u64(8), end: u64(16), phys: u64(24), flags: u32(32), status: 0 }; break;
      case T.UNMAP: seen = { type, domain: u32(4), start: u64(8), end: u64(16), status: 0 }; break;
      case T.PROBE: seen = { type, endpoint: u32(4), status: 0 }; break;
      default: seen = { type, status: 'none' };
    }
    this.requests.push(seen);
    if (seen.status === 'none' || this.silent.has(type)) {
      seen.status = 'none';
      return 0;
    }
    const status = this.execute(seen, dv, w.off, w.len, u32(16));
    seen.status = status;
    dv.setUint8(w.off + w.len - TAIL, status);
    return w.len;
  }

  private execute(q: SeenRequest, dv: DataView, wOff: number, wLen: number, attachReserved: number): number {
    switch (q.type) {
      case T.ATTACH: return this.attach(q.domain!, q.endpoint!, q.flags!, attachReserved);
      case T.DETACH: return this.detach(q.domain!, q.endpoint!);
      case T.MAP: return this.map(this.domains.get(q.domain!), { start: q.start!, end: q.end!, phys: q.phys!, flags: q.flags! });
      case T.UNMAP: return this.unmap(this.domains.get(q.domain!), q.start!, q.end!);
      default: return this.probe(q.endpoint!, dv, wOff, wLen);
    }
  }

  private attach(id: number, ep: number, flags: number, reserved: number): number {
    if (reserved !== 0 || flags & ~1) return S.INVAL;
    if (!this.endpoints.has(ep)) return S.NOENT;
    const bypass = (flags & 1) !== 0;
    const existing = this.domains.get(id);
    if (existing && existing.bypass !== bypass) return S.INVAL;
    this.leave(ep);
    const d = existing ?? { bypass, endpoints: new Set<number>(), mappings: [] };
    this.domains.set(id, d);
    d.endpoints.add(ep);
    this.attached.set(ep, id);
    return S.OK;
  }

  private detach(id: number, ep: number): number {
    if (!this.endpoints.has(ep)) return S.NOENT;
    if (this.attached.get(ep) !== id) return S.INVAL;
    this.leave(ep);
    return S.OK;
  }

  /** The endpoint leaves its domain; the last one out destroys it, mappings and all. */
  private leave(ep: number): void {
    const id = this.attached.get(ep);
    if (id === undefined) return;
    const d = this.domains.get(id)!;
    d.endpoints.delete(ep);
    if (d.endpoints.size === 0) this.domains.delete(id);
    this.attached.delete(ep);
  }

  private map(d: DevDomain | undefined, m: DevMapping): number {
    if (m.flags & ~7) return S.INVAL;
    if (!d) return S.NOENT;
    if (d.bypass || m.end <= m.start) return S.INVAL;
    const [inStart, inEnd] = this.opts.inputRange ?? [0n, 0xffff_ffff_ffff_ffffn];
    if (m.start < inStart || m.end > inEnd) return S.RANGE;
    if (m.start % this.granule || m.phys % this.granule || (m.end + 1n) % this.granule) return S.RANGE;
    if (d.mappings.some((x) => x.start <= m.end && m.start <= x.end)) return S.INVAL;
    d.mappings.push(m);
    return S.OK;
  }

  /** Atomic: a mapping that would be split fails the whole request with nothing removed. */
  private unmap(d: DevDomain | undefined, start: bigint, end: bigint): number {
    if (!d) return S.NOENT;
    if (d.bypass) return S.INVAL;
    const hit = d.mappings.filter((x) => x.start <= end && start <= x.end);
    if (hit.some((x) => x.start < start || x.end > end)) return S.RANGE;
    d.mappings = d.mappings.filter((x) => !hit.includes(x));
    return S.OK;
  }

  private probe(ep: number, dv: DataView, wOff: number, wLen: number): number {
    if (!this.endpoints.has(ep)) return S.NOENT;
    const size = this.opts.probeSize ?? 512;
    if (wLen !== size + TAIL) return S.INVAL;
    const props = this.opts.probeProperties?.(ep) ?? new Uint8Array(0);
    const ram = new Uint8Array(dv.buffer);
    ram.fill(0, wOff, wOff + size);
    ram.set(props.subarray(0, size), wOff);
    return S.OK;
  }
}

/** Property bytes: a header (type, length of what follows) and its value. */
export function property(type: number, value: Uint8Array | number[]): Uint8Array {
  const v = Uint8Array.from(value);
  const b = new Uint8Array(4 + v.length);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, type, true);
  dv.setUint16(2, v.length, true);
  b.set(v, 4);
  return b;
}

/** A RESV_MEM property (type 1, length 20): subtype, three reserved bytes, start, end. */
export function resvMem(subtype: number, start: bigint, end: bigint): Uint8Array {
  const v = new Uint8Array(20);
  const dv = new DataView(v.buffer);
  dv.setUint8(0, subtype);
  dv.setBigUint64(4, start, true);
  dv.setBigUint64(12, end, true);
  return property(1, v);
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A 24-byte fault record (§5.13.6.9). */
export function faultRecord(f: { reason: number; flags: number; endpoint: number; address?: bigint; reserved?: number }): Uint8Array {
  const b = new Uint8Array(24);
  const dv = new DataView(b.buffer);
  dv.setUint8(0, f.reason);
  dv.setUint8(1, f.reserved ?? 0);
  dv.setUint32(4, f.flags, true);
  dv.setUint32(8, f.endpoint, true);
  dv.setBigUint64(16, f.address ?? 0n, true);
  return b;
}

export interface ViommuBooted {
  readonly m: FakeMachine;
  readonly dev: ViommuDevice;
  readonly stack: VirtioStack;
  readonly pdev: PlatformDevice;
  vdev(): VirtioDevice | undefined;
  /** The bound driver; throws when probe refused the device. */
  viommu(): VirtioIommu;
}

/** Boots the virtio stack with the device behind virtio-mmio, described by VIOT unless `noViot`; `before` runs before the driver probes. */
export function bootViommu(opts: ViommuOptions, before?: (dev: ViommuDevice) => void): ViommuBooted {
  const m = new FakeMachine();
  if (!opts.noViot) m.k.firmware = { ...m.k.firmware, viot: [{ kind: 'virtio-iommu', mmioBase: MMIO_BASE, pciRanges: [], mmioEndpoints: [] }] };
  const dev = new ViommuDevice(m, opts);
  before?.(dev);
  m.map(new MmioFront(MMIO_BASE, MMIO_IRQ, dev.model));
  const stack = registerVirtioDrivers(m.k);
  const pdev = new PlatformDevice('a000000.virtio_mmio', m.k.platform, 'virtio-mmio', MMIO_BASE, 0x200, MMIO_IRQ);
  m.k.platform.addDevice(pdev);
  const vdev = () => pdev.drvdata as VirtioDevice | undefined;
  return {
    m,
    dev,
    stack,
    pdev,
    vdev,
    viommu: () => {
      const v = stack.iommus()[0];
      if (!v) throw new Error(`virtio-iommu not bound: ${stack.bus.failures.map((f) => f.error).join('; ')}`);
      return v;
    },
  };
}
