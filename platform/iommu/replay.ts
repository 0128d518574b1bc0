// The device side of `ivory replay`: raw virtio-iommu requests, from a JSON file
// or a QEMU trace log (-trace 'virtio_iommu_*', formats of hw/virtio/trace-events),
// sent by a minimal driver through the virtio-mmio registers and the request
// queue of a standalone device model, the same path a guest's requests take.
import { type Addr, hexAddr, toAddr } from '../../abi/addr.ts';
import { MMIO, VIRTIO_MMIO_CONFIG } from '../../abi/virtio-mmio.ts';
import { VIRTQ_DESC_F, VirtqAvailHeader, VirtqDesc, VirtqUsedElem, VirtqUsedHeader, splitRing } from '../../abi/ring.ts';
import {
  VIRTIO_IOMMU_ATTACH_F_BYPASS,
  VIRTIO_IOMMU_MAP_F,
  VIRTIO_IOMMU_PROBE_T,
  VIRTIO_IOMMU_PROBE_T_MASK,
  VIRTIO_IOMMU_REQUEST_QUEUE,
  VIRTIO_IOMMU_RESV_MEM_T,
  VIRTIO_IOMMU_T,
  VirtioIommuConfig,
  VirtioIommuProbeProperty,
  VirtioIommuProbeResvMem,
  VirtioIommuReqAttach,
  VirtioIommuReqDetach,
  VirtioIommuReqMap,
  VirtioIommuReqProbe,
  VirtioIommuReqTail,
  VirtioIommuReqUnmap,
  requestReadable,
} from '../../abi/virtio-iommu.ts';
import { STATUS } from '../../abi/virtio.ts';
import { PhysicalSpace } from '../address-space.ts';
import { EventLoop } from '../events.ts';
import { InterruptController } from '../irq.ts';
import { GuestMemory } from '../memory.ts';
import { HostTrace } from '../trace.ts';
import { VirtioMmioTransport } from '../virtio/mmio.ts';
import { FEATURE_NAMES, type FeatureSwitches, GRANULE_SHIFT, type Granule, PROFILE_NAMES, type ProfileName, isProfileName } from './profiles.ts';
import { parseU64 } from './reserved-regions.ts';
import { RESERVED_OFFSET, VirtioIommu, statusName } from './virtio-iommu.ts';

/** A problem with the input, naming the field: "requests[3].virt_start: expected a hex string". */
export class ReplayInputError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
  }
}

export interface ReplayDevice {
  readonly profile: ProfileName;
  readonly endpoints: readonly number[];
  readonly awBits?: number;
  readonly granule?: Granule;
  readonly probeSize?: number;
  readonly reservedRegions: readonly { readonly start: Addr; readonly end: Addr; readonly type: 'reserved' | 'msi' }[];
  readonly bootBypass?: boolean;
  readonly domainRange?: readonly [number, number];
  /** Feature bits to offer or withhold, by their lower-case spec names. */
  readonly features?: Partial<FeatureSwitches>;
}

export type ReplayRequest =
  | { readonly type: 'attach'; readonly domain: number; readonly endpoint: number; readonly flags: number; readonly reserved: number }
  | { readonly type: 'detach'; readonly domain: number; readonly endpoint: number }
  | { readonly type: 'map'; readonly domain: number; readonly virtStart: Addr; readonly virtEnd: Addr; readonly physStart: Addr; readonly flags: number }
  | { readonly type: 'unmap'; readonly domain: number; readonly virtStart: Addr; readonly virtEnd: Addr; readonly reserved: number }
  | { readonly type: 'probe'; readonly endpoint: number };

export interface ReplayInput {
  readonly device: ReplayDevice;
  readonly requests: readonly ReplayRequest[];
  /** Source line of each request (trace logs). */
  readonly lines?: readonly number[];
}

export type ReplayFields = Record<string, string | number | string[]>;

export interface ReplayRequestResult {
  readonly index: number;
  readonly type: ReplayRequest['type'];
  readonly fields: ReplayFields;
  /** What the device wrote in the tail, or NONE when it wrote nothing there. */
  readonly status: string;
  /** The used length the device reported (cloud-hypervisor reports 0 for errors it did write). */
  readonly used_length: number;
  readonly line?: number;
  /** PROBE: the properties the device returned. */
  readonly properties?: { type: string; start?: string; end?: string }[];
}

export interface ReplayMapping {
  readonly virt_start: string;
  readonly virt_end: string;
  readonly phys_start: string;
  readonly flags: string[];
}

export interface ReplayResult {
  readonly profile: ProfileName;
  readonly results: ReplayRequestResult[];
  readonly final: { domains: { id: number; bypass: boolean; endpoints: number[]; mappings: ReplayMapping[] }[] };
}

const MAP_FLAG_NAMES: Readonly<Record<string, number>> = { read: VIRTIO_IOMMU_MAP_F.READ, write: VIRTIO_IOMMU_MAP_F.WRITE, mmio: VIRTIO_IOMMU_MAP_F.MMIO };
const ATTACH_FLAG_NAMES: Readonly<Record<string, number>> = { bypass: VIRTIO_IOMMU_ATTACH_F_BYPASS };
const REQUEST_FIELDS: Readonly<Record<ReplayRequest['type'], readonly string[]>> = {
  attach: ['domain', 'endpoint', 'flags', 'reserved'],
  detach: ['domain', 'endpoint'],
  map: ['domain', 'virt_start', 'virt_end', 'phys_start', 'flags'],
  unmap: ['domain', 'virt_start', 'virt_end', 'reserved'],
  probe: ['endpoint'],
};
const DEVICE_FIELDS = ['profile', 'endpoints', 'aw_bits', 'granule', 'probe_size', 'reserved_regions', 'boot_bypass', 'domain_range', 'features'];

// ---- JSON input ----

/** Parses the JSON form; throws ReplayInputError naming the first bad field. */
export function parseReplayJson(text: string): ReplayInput {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ReplayInputError('input', `not JSON (${(e as Error).message})`);
  }
  const top = object(doc, 'input');
  onlyFields(top, 'input', ['device', 'requests']);
  const device = parseDevice(object(top['device'], 'device'));
  const list = top['requests'];
  if (!Array.isArray(list)) throw new ReplayInputError('requests', 'expected an array');
  return { device, requests: list.map((r, i) => parseRequest(r, `requests[${i}]`)) };
}

function parseDevice(d: Record<string, unknown>): ReplayDevice {
  onlyFields(d, 'device', DEVICE_FIELDS);
  const profile = d['profile'] ?? 'spec';
  if (typeof profile !== 'string' || !isProfileName(profile)) throw new ReplayInputError('device.profile', `expected one of ${PROFILE_NAMES.join(', ')}`);
  const eps = d['endpoints'];
  if (!Array.isArray(eps)) throw new ReplayInputError('device.endpoints', 'expected an array of endpoint IDs');
  const regions = d['reserved_regions'] ?? [];
  if (!Array.isArray(regions)) throw new ReplayInputError('device.reserved_regions', 'expected an array');
  const granule = d['granule'];
  if (granule !== undefined && (typeof granule !== 'string' || !(granule in GRANULE_SHIFT))) throw new ReplayInputError('device.granule', 'expected one of 4k, 8k, 16k, 64k');
  const bootBypass = d['boot_bypass'];
  if (bootBypass !== undefined && typeof bootBypass !== 'boolean') throw new ReplayInputError('device.boot_bypass', 'expected true or false');
  const range = d['domain_range'];
  if (range !== undefined && (!Array.isArray(range) || range.length !== 2)) throw new ReplayInputError('device.domain_range', 'expected [start, end]');
  const endpoints = eps.map((e, i) => u32(e, `device.endpoints[${i}]`));
  const twice = endpoints.findIndex((e, i) => endpoints.indexOf(e) !== i);
  if (twice >= 0) throw new ReplayInputError(`device.endpoints[${twice}]`, `endpoint ${endpoints[twice]} is listed twice`);
  return {
    profile,
    endpoints,
    ...(d['aw_bits'] !== undefined && { awBits: integer(d['aw_bits'], 'device.aw_bits', 32, 64) }),
    ...(granule !== undefined && { granule: granule as Granule }),
    ...(d['probe_size'] !== undefined && { probeSize: integer(d['probe_size'], 'device.probe_size', 0, 1 << 16) }),
    reservedRegions: regions.map((r, i) => parseRegion(r, `device.reserved_regions[${i}]`)),
    ...(bootBypass !== undefined && { bootBypass }),
    ...(range !== undefined && { domainRange: domainRange(range) }),
    ...(d['features'] !== undefined && { features: parseFeatures(object(d['features'], 'device.features')) }),
  };
}

function domainRange(r: unknown[]): readonly [number, number] {
  const [start, end] = [u32(r[0], 'device.domain_range[0]'), u32(r[1], 'device.domain_range[1]')];
  if (end < start) throw new ReplayInputError('device.domain_range[1]', 'below the start');
  return [start, end];
}

function parseFeatures(f: Record<string, unknown>): Partial<FeatureSwitches> {
  onlyFields(f, 'device.features', FEATURE_NAMES);
  for (const [k, v] of Object.entries(f)) if (typeof v !== 'boolean') throw new ReplayInputError(`device.features.${k}`, 'expected true or false');
  return f as Partial<FeatureSwitches>;
}

function parseRegion(v: unknown, at: string): ReplayDevice['reservedRegions'][number] {
  const r = object(v, at);
  onlyFields(r, at, ['start', 'end', 'type']);
  const type = r['type'];
  if (type !== 'reserved' && type !== 'msi') throw new ReplayInputError(`${at}.type`, 'expected "reserved" or "msi"');
  const start = hex(r['start'], `${at}.start`);
  const end = hex(r['end'], `${at}.end`);
  if (end < start) throw new ReplayInputError(`${at}.end`, 'below start');
  return { start, end, type };
}

function parseRequest(v: unknown, at: string): ReplayRequest {
  const r = object(v, at);
  const type = r['type'];
  if (typeof type !== 'string' || !(type in REQUEST_FIELDS)) throw new ReplayInputError(`${at}.type`, `expected one of ${Object.keys(REQUEST_FIELDS).join(', ')}`);
  const t = type as ReplayRequest['type'];
  onlyFields(r, at, ['type', ...REQUEST_FIELDS[t]]);
  const field = (name: string) => `${at}.${name}`;
  switch (t) {
    case 'attach':
      return { type: t, domain: u32(r['domain'], field('domain')), endpoint: u32(r['endpoint'], field('endpoint')), flags: flags(r['flags'], field('flags'), ATTACH_FLAG_NAMES), reserved: optionalU32(r['reserved'], field('reserved')) };
    case 'detach':
      return { type: t, domain: u32(r['domain'], field('domain')), endpoint: u32(r['endpoint'], field('endpoint')) };
    case 'map':
      return {
        type: t,
        domain: u32(r['domain'], field('domain')),
        virtStart: hex(r['virt_start'], field('virt_start')),
        virtEnd: hex(r['virt_end'], field('virt_end')),
        physStart: hex(r['phys_start'], field('phys_start')),
        flags: flags(r['flags'], field('flags'), MAP_FLAG_NAMES),
      };
    case 'unmap':
      return { type: t, domain: u32(r['domain'], field('domain')), virtStart: hex(r['virt_start'], field('virt_start')), virtEnd: hex(r['virt_end'], field('virt_end')), reserved: optionalU32(r['reserved'], field('reserved')) };
    case 'probe':
      return { type: t, endpoint: u32(r['endpoint'], field('endpoint')) };
  }
}

function object(v: unknown, at: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ReplayInputError(at, 'expected an object');
  return v as Record<string, unknown>;
}

function onlyFields(o: Record<string, unknown>, at: string, known: readonly string[]): void {
  const extra = Object.keys(o).find((k) => !known.includes(k));
  if (extra !== undefined) throw new ReplayInputError(`${at}.${extra}`, `unknown field (expected ${known.join(', ')})`);
}

function integer(v: unknown, at: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ReplayInputError(at, `expected an integer from ${min} to ${max}`);
  return v;
}

const u32 = (v: unknown, at: string): number => integer(v, at, 0, 0xffff_ffff);
const optionalU32 = (v: unknown, at: string): number => (v === undefined ? 0 : u32(v, at));

function hex(v: unknown, at: string): Addr {
  const a = typeof v === 'string' && /^0x/i.test(v) ? parseU64(v) : undefined;
  if (a === undefined) throw new ReplayInputError(at, 'expected a hex string of at most 64 bits ("0x1000")');
  return a;
}

/** Flag names, or a raw number to send bits the spec does not define. */
function flags(v: unknown, at: string, names: Readonly<Record<string, number>>): number {
  if (v === undefined) return 0;
  if (typeof v === 'number') return u32(v, at);
  if (!Array.isArray(v)) throw new ReplayInputError(at, `expected an array of ${Object.keys(names).join(', ')}`);
  return v.reduce<number>((acc, f, i) => {
    const bit = typeof f === 'string' ? names[f] : undefined;
    if (bit === undefined) throw new ReplayInputError(`${at}[${i}]`, `expected one of ${Object.keys(names).join(', ')}`);
    return acc | bit;
  }, 0);
}

// ---- QEMU trace input ----

/** `[PID@SECONDS.MICROS:]virtio_iommu_<event> key=value ...`, as the log trace backend prints them. */
const TRACE_LINE = /^(?:\d+@\d+(?:\.\d+)?:)?virtio_iommu_(attach|detach|map|unmap) (.*)$/;
/** hw/virtio/trace-events: the arguments each event prints, in order. */
const TRACE_ARGS: Readonly<Record<string, readonly string[]>> = {
  attach: ['domain', 'endpoint'],
  detach: ['domain', 'endpoint'],
  map: ['domain', 'virt_start', 'virt_end', 'phys_start', 'flags'],
  unmap: ['domain', 'virt_start', 'virt_end'],
};

/**
 * Takes the ATTACH, DETACH, MAP and UNMAP requests a QEMU trace log recorded and
 * the endpoints it names. QEMU traces requests as they arrive, before checking
 * them; attach does not print its flags, so every ATTACH replays without ATTACH_F_BYPASS.
 */
export function parseQemuTrace(text: string): ReplayInput {
  const requests: ReplayRequest[] = [];
  const lines: number[] = [];
  const endpoints = new Set<number>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const m = TRACE_LINE.exec(raw.trim());
    if (!m) return;
    const event = m[1]!;
    const at = `line ${i + 1}`;
    const args = traceArgs(m[2]!, TRACE_ARGS[event]!, `${at}: virtio_iommu_${event}`);
    // %d of a u32: QEMU prints IDs from 2^31 up as negative numbers.
    const id = (name: string): number => Number(args[name]) >>> 0;
    const addr = (name: string): Addr => toAddr(BigInt(args[name]!));
    switch (event) {
      case 'attach':
      case 'detach':
        endpoints.add(id('endpoint'));
        requests.push(event === 'attach' ? { type: 'attach', domain: id('domain'), endpoint: id('endpoint'), flags: 0, reserved: 0 } : { type: 'detach', domain: id('domain'), endpoint: id('endpoint') });
        break;
      case 'map':
        requests.push({ type: 'map', domain: id('domain'), virtStart: addr('virt_start'), virtEnd: addr('virt_end'), physStart: addr('phys_start'), flags: id('flags') });
        break;
      default:
        requests.push({ type: 'unmap', domain: id('domain'), virtStart: addr('virt_start'), virtEnd: addr('virt_end'), reserved: 0 });
    }
    lines.push(i + 1);
  });
  return { device: { profile: 'qemu', endpoints: [...endpoints].sort((a, b) => a - b), reservedRegions: [] }, requests, lines };
}

function traceArgs(text: string, names: readonly string[], at: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [, k, v] of text.matchAll(/(\w+)=(\S+)/g)) out[k!] = v!;
  for (const name of names) {
    const v = out[name];
    const ok = v !== undefined && (/^0x[0-9a-f]{1,16}$/i.test(v) || /^-?\d{1,10}$/.test(v));
    if (!ok) throw new ReplayInputError(at, `expected ${name}=<number>`);
  }
  return out;
}

// ---- the replay ----

const QUEUE_SIZE = 256;
/** Requests in flight at once: two descriptors each. */
const BATCH = QUEUE_SIZE / 2;
const RING_BYTES = 0x4000;
const TAIL = VirtioIommuReqTail.span;
/** What the driver leaves in the tail, so that an unwritten one shows. */
const SENTINEL = 0xff;
const MMIO_LINE = 0;

/** Sends every request through the device's request queue, in order, and reports each status and the final domains. */
export function replay(input: ReplayInput, opts: { readonly profile?: ProfileName } = {}): ReplayResult {
  const d = input.device;
  const profile = opts.profile ?? d.profile;
  const events = new EventLoop();
  const trace = new HostTrace(events);
  trace.enabled = false;
  const probeSize = d.probeSize ?? 512;
  const slot = align(VirtioIommuReqProbe.span, 16) + align(probeSize + TAIL, 16);
  const mem = new GuestMemory([{ gpa: 0, size: RING_BYTES + BATCH * slot }]);
  const irq = new InterruptController(events, trace, { base: 0xfee0_0000, size: 0x10_0000, destShift: 12 }, 1);
  const physical = new PhysicalSpace(mem, irq, trace, 'virtio-iommu');
  const dev = new VirtioIommu(
    { name: 'virtio-iommu', mem, space: physical, events, trace },
    {
      profile,
      reservedRegions: d.reservedRegions,
      ...(d.awBits !== undefined && { awBits: d.awBits }),
      ...(d.granule !== undefined && { granule: d.granule }),
      ...(d.probeSize !== undefined && { probeSize: d.probeSize }),
      ...(d.bootBypass !== undefined && { bootBypass: d.bootBypass }),
      ...(d.domainRange !== undefined && { domainRange: d.domainRange }),
      ...(d.features !== undefined && { features: d.features }),
    },
  );
  for (const id of d.endpoints) dev.addEndpoint(id, { physical, name: `endpoint ${id}` });
  const driver = new Driver(mem, new VirtioMmioTransport(dev, irq, MMIO_LINE), slot);
  const results: ReplayRequestResult[] = [];
  for (let i = 0; i < input.requests.length; i += BATCH) {
    const batch = input.requests.slice(i, i + BATCH);
    const done = driver.send(batch, () => events.runUntil(() => false));
    batch.forEach((r, j) => results.push(describe(i + j, r, done[j]!, input.lines?.[i + j])));
  }
  return { profile, results, final: finalState(dev) };
}

interface Completion {
  readonly tail: number;
  readonly usedLength: number;
  readonly properties?: Uint8Array;
}

/** A driver with one request queue in guest RAM, talking to the device through its virtio-mmio registers. */
class Driver {
  private readonly regs: VirtioMmioTransport['handler'];
  private readonly desc = 0;
  private readonly avail = splitRing.descBytes(QUEUE_SIZE);
  private readonly used = align(this.avail + splitRing.availBytes(QUEUE_SIZE), 4);
  private availIdx = 0;
  private usedIdx = 0;
  private readonly probeSize: number;

  constructor(
    private readonly mem: GuestMemory,
    transport: VirtioMmioTransport,
    private readonly slot: number,
  ) {
    this.regs = transport.handler;
    this.probeSize = this.regs.read(VIRTIO_MMIO_CONFIG + VirtioIommuConfig.off.probe_size, 4);
    const w = (off: number, v: number) => this.regs.write(off, 4, v);
    w(MMIO.status, 0);
    w(MMIO.status, STATUS.ACKNOWLEDGE | STATUS.DRIVER);
    // Accept every feature offered, as a driver that knows them all would.
    for (const sel of [0, 1]) {
      w(MMIO.device_features_sel, sel);
      w(MMIO.driver_features_sel, sel);
      w(MMIO.driver_features, this.regs.read(MMIO.device_features, 4));
    }
    w(MMIO.status, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK);
    w(MMIO.queue_sel, VIRTIO_IOMMU_REQUEST_QUEUE);
    w(MMIO.queue_num, QUEUE_SIZE);
    w(MMIO.queue_desc_low, this.desc);
    w(MMIO.queue_driver_low, this.avail);
    w(MMIO.queue_device_low, this.used);
    w(MMIO.queue_ready, 1);
    w(MMIO.status, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK);
  }

  /** Queues the batch, kicks once, lets the device run, and collects each completion by its head. */
  send(batch: readonly ReplayRequest[], run: () => void): Completion[] {
    const dv = this.mem.dv;
    const writable: number[] = [];
    batch.forEach((r, i) => {
      const readable = encodeRequest(r);
      const at = RING_BYTES + i * this.slot;
      const w = align(at + readable.length, 16);
      const wlen = r.type === 'probe' ? this.probeSize + TAIL : TAIL;
      this.mem.load(at, readable);
      this.mem.u8.fill(0, w, w + wlen);
      this.mem.u8[w + wlen - TAIL] = SENTINEL;
      writable.push(w, wlen);
      this.setDesc(2 * i, at, readable.length, VIRTQ_DESC_F.NEXT, 2 * i + 1);
      this.setDesc(2 * i + 1, w, wlen, VIRTQ_DESC_F.WRITE, 0);
      dv.setUint16(this.avail + splitRing.availRing(this.availIdx % QUEUE_SIZE), 2 * i, true);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    });
    dv.setUint16(this.avail + VirtqAvailHeader.off.idx, this.availIdx, true);
    this.regs.write(MMIO.queue_notify, 4, VIRTIO_IOMMU_REQUEST_QUEUE);
    run();
    const usedLen = new Map<number, number>();
    for (const end = dv.getUint16(this.used + VirtqUsedHeader.off.idx, true); this.usedIdx !== end; this.usedIdx = (this.usedIdx + 1) & 0xffff) {
      const e = this.used + splitRing.usedRing(this.usedIdx % QUEUE_SIZE);
      usedLen.set(dv.getUint32(e + VirtqUsedElem.off.id, true), dv.getUint32(e + VirtqUsedElem.off.len, true));
    }
    return batch.map((r, i) => {
      const [w, wlen] = [writable[2 * i]!, writable[2 * i + 1]!];
      const tail = this.mem.u8[w + wlen - TAIL]!;
      return { tail, usedLength: usedLen.get(2 * i) ?? 0, ...(r.type === 'probe' && { properties: this.mem.u8.slice(w, w + wlen - TAIL) }) };
    });
  }

  private setDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    const at = this.desc + i * VirtqDesc.span;
    const dv = this.mem.dv;
    dv.setBigUint64(at + VirtqDesc.off.addr, BigInt(addr), true);
    dv.setUint32(at + VirtqDesc.off.len, len, true);
    dv.setUint16(at + VirtqDesc.off.flags, flags, true);
    dv.setUint16(at + VirtqDesc.off.next, next, true);
  }
}

/** The device-readable part of a request. */
function encodeRequest(r: ReplayRequest): Uint8Array {
  switch (r.type) {
    case 'attach': {
      const b = VirtioIommuReqAttach.encode({ type: VIRTIO_IOMMU_T.ATTACH, domain: r.domain, endpoint: r.endpoint, flags: r.flags, status: 0 });
      new DataView(b.buffer).setUint32(RESERVED_OFFSET.attach, r.reserved, true);
      return b.subarray(0, requestReadable(b.length));
    }
    case 'detach':
      return VirtioIommuReqDetach.encode({ type: VIRTIO_IOMMU_T.DETACH, domain: r.domain, endpoint: r.endpoint, status: 0 }).subarray(0, requestReadable(VirtioIommuReqDetach.span));
    case 'map':
      return VirtioIommuReqMap.encode({ type: VIRTIO_IOMMU_T.MAP, domain: r.domain, virt_start: BigInt(r.virtStart), virt_end: BigInt(r.virtEnd), phys_start: BigInt(r.physStart), flags: r.flags, status: 0 }).subarray(
        0,
        requestReadable(VirtioIommuReqMap.span),
      );
    case 'unmap': {
      const b = VirtioIommuReqUnmap.encode({ type: VIRTIO_IOMMU_T.UNMAP, domain: r.domain, virt_start: BigInt(r.virtStart), virt_end: BigInt(r.virtEnd), status: 0 });
      new DataView(b.buffer).setUint32(RESERVED_OFFSET.unmap, r.reserved, true);
      return b.subarray(0, requestReadable(b.length));
    }
    case 'probe':
      return VirtioIommuReqProbe.encode({ type: VIRTIO_IOMMU_T.PROBE, endpoint: r.endpoint });
  }
}

function describe(index: number, r: ReplayRequest, c: Completion, line: number | undefined): ReplayRequestResult {
  return {
    index,
    type: r.type,
    fields: fieldsOf(r),
    status: c.tail === SENTINEL ? 'NONE' : statusName(c.tail),
    used_length: c.usedLength,
    ...(line !== undefined && { line }),
    ...(c.properties && c.tail === 0 && { properties: decodeProperties(c.properties) }),
  };
}

function fieldsOf(r: ReplayRequest): ReplayFields {
  switch (r.type) {
    case 'attach':
      return { domain: r.domain, endpoint: r.endpoint, flags: flagNames(r.flags, ATTACH_FLAG_NAMES), ...(r.reserved !== 0 && { reserved: r.reserved }) };
    case 'detach':
      return { domain: r.domain, endpoint: r.endpoint };
    case 'map':
      return { domain: r.domain, virt_start: hexAddr(r.virtStart), virt_end: hexAddr(r.virtEnd), phys_start: hexAddr(r.physStart), flags: flagNames(r.flags, MAP_FLAG_NAMES) };
    case 'unmap':
      return { domain: r.domain, virt_start: hexAddr(r.virtStart), virt_end: hexAddr(r.virtEnd), ...(r.reserved !== 0 && { reserved: r.reserved }) };
    case 'probe':
      return { endpoint: r.endpoint };
  }
}

/** Names of the set bits, and any undefined ones in hex. */
function flagNames(flags: number, names: Readonly<Record<string, number>>): string[] {
  const out = Object.entries(names).flatMap(([n, b]) => (flags & b ? [n] : []));
  const rest = Object.values(names).reduce((f, b) => f & ~b, flags);
  return rest ? [...out, '0x' + (rest >>> 0).toString(16)] : out;
}

/** The property list as a driver walks it (§5.13.6.7): until NONE or the end of the buffer. */
function decodeProperties(buf: Uint8Array): { type: string; start?: string; end?: string }[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: { type: string; start?: string; end?: string }[] = [];
  for (let at = 0; at + VirtioIommuProbeProperty.span <= buf.length; ) {
    const type = dv.getUint16(at + VirtioIommuProbeProperty.off.type, true) & VIRTIO_IOMMU_PROBE_T_MASK;
    const len = dv.getUint16(at + VirtioIommuProbeProperty.off.length, true);
    if (type === VIRTIO_IOMMU_PROBE_T.NONE) break;
    const R = VirtioIommuProbeResvMem.off;
    if (type === VIRTIO_IOMMU_PROBE_T.RESV_MEM && at + VirtioIommuProbeResvMem.span <= buf.length) {
      const subtype = dv.getUint8(at + R.subtype);
      out.push({
        type: subtype === VIRTIO_IOMMU_RESV_MEM_T.MSI ? 'msi' : subtype === VIRTIO_IOMMU_RESV_MEM_T.RESERVED ? 'reserved' : `resv_mem subtype ${subtype}`,
        start: hexAddr(toAddr(dv.getBigUint64(at + R.start, true))),
        end: hexAddr(toAddr(dv.getBigUint64(at + R.end, true))),
      });
    } else out.push({ type: `type ${type}` });
    at += VirtioIommuProbeProperty.span + len;
  }
  return out;
}

function finalState(dev: VirtioIommu): ReplayResult['final'] {
  const domains = [...dev.state.domains.values()].sort((a, b) => a.id - b.id);
  return {
    domains: domains.map((dom) => ({
      id: dom.id,
      bypass: dom.bypass,
      endpoints: dom.endpoints.map((ep) => ep.id).sort((a, b) => a - b),
      mappings: [...dom.mappings].map(({ value: m }) => ({
        virt_start: hexAddr(m.virtStart),
        virt_end: hexAddr(m.virtEnd),
        phys_start: hexAddr(m.physStart),
        flags: flagNames(m.flags, MAP_FLAG_NAMES),
      })),
    })),
  };
}

const align = (v: number, a: number): number => Math.ceil(v / a) * a;
