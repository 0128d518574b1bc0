// Scenario files: a machine, its devices, a kernel command line and a
// workload, in YAML (or JSON). Every field is checked; an unknown or bad one
// gets a UsageError naming it (e.g. `devices[1].transport: expected one of
// pci, mmio, got "usb"`).
import { parse } from 'yaml';
import type { Workload } from '../abi/workload.ts';
import { resolveWorkload } from '../bench/iova/workloads.ts';
import { SECTOR_SIZE } from '../abi/virtio-blk.ts';
import { DEVICE_DEFAULTS, IOMMU_FEATURES, type DeviceConfig, type HostIommuConfig, type IommuConfig, type MachineConfig } from '../platform/config.ts';
import { PRESETS, type Preset } from '../platform/presets.ts';
import { toBig } from '../abi/addr.ts';
import { VIRTIO_IOMMU_RESV_MEM_T } from '../abi/virtio-iommu.ts';
import { parseReservedRegion as parseQemuReservedRegion, parseU64 as parseAddr } from '../platform/iommu/reserved-regions.ts';
import { UsageError, readUserFile } from './errors.ts';

export interface Scenario {
  readonly name: string;
  readonly machine: MachineConfig;
  readonly cmdline: string;
  readonly workload: Workload;
}

type Obj = Record<string, unknown>;

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** A byte count: an integer, or a string such as "256M", "64KiB", "0x1000". */
export function parseSize(field: string, v: unknown): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  if (typeof v === 'string') {
    if (/^0x[0-9a-f]+$/i.test(v)) return Number(v);
    const m = /^(\d+)\s*([kmgt]?)(i?b)?$/i.exec(v.trim());
    if (m) return Number(m[1]) * UNITS[m[2]!.toLowerCase()]!;
  }
  throw new UsageError(field, `expected a size such as 4096, "64K" or "256M", got ${JSON.stringify(v)}`);
}

/** A 64-bit value: a hex or decimal string, or a safe integer (the device model's own parser). */
export function parseU64(field: string, v: unknown): bigint {
  const a = typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : typeof v === 'string' ? parseAddr(v) : undefined;
  if (a === undefined) throw new UsageError(field, `expected a 64-bit value such as "0xfee00000", got ${JSON.stringify(v)}`);
  return toBig(a);
}

class Fields {
  private readonly seen = new Set<string>();

  constructor(
    private readonly path: string,
    private readonly o: Obj,
  ) {}

  static of(path: string, v: unknown): Fields {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new UsageError(path || 'scenario', `expected a mapping, got ${JSON.stringify(v)}`);
    return new Fields(path, v as Obj);
  }

  name(key: string): string {
    return this.path ? `${this.path}.${key}` : key;
  }

  raw(key: string): unknown {
    this.seen.add(key);
    return this.o[key];
  }

  has(key: string): boolean {
    return this.o[key] !== undefined;
  }

  str(key: string, dflt?: string): string {
    const v = this.raw(key) ?? dflt;
    if (typeof v !== 'string') throw new UsageError(this.name(key), v === undefined ? 'is required' : `expected a string, got ${JSON.stringify(v)}`);
    return v;
  }

  oneOf<T extends string>(key: string, choices: readonly T[], dflt?: T): T {
    const v = this.str(key, dflt);
    if (!choices.includes(v as T)) throw new UsageError(this.name(key), `expected one of ${choices.join(', ')}, got ${JSON.stringify(v)}`);
    return v as T;
  }

  bool(key: string, dflt: boolean): boolean {
    const v = this.raw(key) ?? dflt;
    if (typeof v !== 'boolean') throw new UsageError(this.name(key), `expected true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  int(key: string, dflt: number | undefined, min: number, max: number): number {
    const v = this.raw(key) ?? dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new UsageError(this.name(key), v === undefined ? 'is required' : `expected an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  /** A 64-bit value: a hex string ("0xfee00000") or a safe integer. */
  u64(key: string): bigint {
    return parseU64(this.name(key), this.raw(key));
  }

  list(key: string): unknown[] {
    const v = this.raw(key) ?? [];
    if (!Array.isArray(v)) throw new UsageError(this.name(key), `expected a list, got ${JSON.stringify(v)}`);
    return v;
  }

  size(key: string, dflt: number): number {
    const v = this.raw(key);
    return v === undefined ? dflt : parseSize(this.name(key), v);
  }

  /** Rejects keys nobody asked for: a typo must not pass silently. */
  done(): void {
    for (const k of Object.keys(this.o)) {
      if (!this.seen.has(k)) throw new UsageError(this.name(k), 'unknown field');
    }
  }
}

const isPow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;

function parseDevice(path: string, v: unknown, seed: number): DeviceConfig {
  const f = Fields.of(path, v);
  const type = f.oneOf('type', ['virtio-blk', 'virtio-rng'] as const);
  const transport = f.oneOf('transport', ['pci', 'mmio'] as const, 'pci');
  const d = DEVICE_DEFAULTS;
  const queueSize = f.int('queue_size', d.queueSize, 1, 32768);
  if (!isPow2(queueSize)) throw new UsageError(f.name('queue_size'), `must be a power of two, got ${queueSize}`);
  const cfg: DeviceConfig = {
    type,
    transport,
    iommuPlatform: f.bool('iommu_platform', d.iommuPlatform),
    disableLegacy: f.bool('disable_legacy', d.disableLegacy),
    version1: f.bool('version_1', d.version1),
    queueSize,
    indirectDesc: f.bool('indirect_desc', d.indirectDesc),
    eventIdx: f.bool('event_idx', d.eventIdx),
    capacity: type === 'virtio-blk' ? f.size('capacity', d.capacity) : d.capacity,
    readOnly: type === 'virtio-blk' ? f.bool('read_only', d.readOnly) : false,
    seed: type === 'virtio-rng' ? f.int('seed', seed, 0, 2 ** 32 - 1) : seed,
    behindIommu: f.bool('behind_iommu', d.behindIommu),
    ...(f.has('host_iommu') ? { hostIommu: parseHostIommu(f.name('host_iommu'), f.raw('host_iommu')) } : {}),
  };
  if (cfg.capacity === 0 || cfg.capacity % SECTOR_SIZE !== 0) throw new UsageError(f.name('capacity'), `must be a non-zero multiple of ${SECTOR_SIZE} bytes`);
  if (transport === 'mmio' && !cfg.disableLegacy) throw new UsageError(f.name('disable_legacy'), 'applies to PCI devices only');
  f.done();
  return cfg;
}

function parseRange(path: string, v: unknown): { start: bigint; end: bigint } {
  const f = Fields.of(path, v);
  const r = { start: f.u64('start'), end: f.u64('end') };
  if (r.end < r.start) throw new UsageError(f.name('end'), 'must not be below start');
  f.done();
  return r;
}

function parseHostIommu(path: string, v: unknown): HostIommuConfig {
  const f = Fields.of(path, v);
  const awBits = f.int('aw_bits', undefined, 32, 64);
  const usable = f.has('usable_ranges') ? { usableRanges: f.list('usable_ranges').map((r, i) => parseRange(`${f.name('usable_ranges')}[${i}]`, r)) } : {};
  const cfg: HostIommuConfig = { awBits, ...usable, exposeReserved: f.bool('expose_reserved', false) };
  f.done();
  return cfg;
}

/** A reserved region as QEMU's property string "start:end:type" (type 0 reserved, 1 msi), parsed as the device model does, or as {start, end, type}. */
function parseReservedRegion(path: string, v: unknown): IommuConfig['reservedRegions'][number] {
  if (typeof v === 'string') {
    let r: ReturnType<typeof parseQemuReservedRegion>;
    try {
      r = parseQemuReservedRegion(v);
    } catch (e) {
      throw new UsageError(path, (e as Error).message);
    }
    return { start: toBig(r.start), end: toBig(r.end), type: r.subtype === VIRTIO_IOMMU_RESV_MEM_T.MSI ? 'msi' : 'reserved' };
  }
  const f = Fields.of(path, v);
  const type = f.oneOf('type', ['reserved', 'msi'] as const);
  const { start, end } = parseRange(path, { start: f.raw('start'), end: f.raw('end') });
  f.done();
  return { start, end, type };
}

const GRANULES = ['4k', '8k', '16k', '64k'] as const;

function parseIommu(v: unknown, preset: Preset): IommuConfig {
  const f = Fields.of('iommu', v);
  f.oneOf('type', ['virtio-iommu'] as const, 'virtio-iommu');
  const feats = Fields.of('iommu.features', f.raw('features') ?? {});
  const features = Object.fromEntries(IOMMU_FEATURES.filter((k) => feats.has(k)).map((k) => [k, feats.bool(k, false)]));
  feats.done();
  const optional: { -readonly [K in 'granule' | 'bootBypass' | 'probeSize' | 'domainRange']?: IommuConfig[K] } = {};
  if (f.has('granule')) optional.granule = f.oneOf('granule', GRANULES);
  if (f.has('boot_bypass')) optional.bootBypass = f.bool('boot_bypass', false);
  if (f.has('probe_size')) optional.probeSize = f.int('probe_size', undefined, 0, 1 << 20);
  if (f.has('domain_range')) {
    const dr = Fields.of('iommu.domain_range', f.raw('domain_range'));
    const range: [number, number] = [dr.int('start', 0, 0, 0xffff_ffff), dr.int('end', 0xffff_ffff, 0, 0xffff_ffff)];
    if (range[1] < range[0]) throw new UsageError(dr.name('end'), 'must not be below start');
    dr.done();
    optional.domainRange = range;
  }
  const cfg: IommuConfig = {
    transport: f.oneOf('transport', ['pci', 'mmio'] as const, 'pci'),
    profile: f.oneOf('profile', ['spec', 'qemu', 'cloud-hypervisor', 'crosvm'] as const, 'spec'),
    awBits: f.int('aw_bits', preset.iommuAwBits, 32, 64),
    reservedRegions: f.list('reserved_regions').map((r, i) => parseReservedRegion(`${f.name('reserved_regions')}[${i}]`, r)),
    features,
    ...optional,
  };
  f.done();
  return cfg;
}

function parseWorkload(v: unknown): Workload {
  const f = Fields.of('workload', v ?? {});
  const seed = f.int('seed', 1, 0, 2 ** 32 - 1);
  const out: { seed: number; disk?: Workload['disk']; entropy?: Workload['entropy']; dma?: Workload['dma'] } = { seed };
  if (f.has('disk')) {
    const d = Fields.of('workload.disk', f.raw('disk'));
    const bytes = d.size('bytes', 2 ** 20);
    const requestBytes = d.size('request_bytes', 64 * 2 ** 10);
    for (const [k, n] of [['bytes', bytes], ['request_bytes', requestBytes]] as const) {
      if (n === 0 || n % SECTOR_SIZE !== 0) throw new UsageError(d.name(k), `must be a non-zero multiple of ${SECTOR_SIZE}`);
    }
    out.disk = { bytes, requestBytes, queueDepth: d.int('queue_depth', 4, 1, 1024) };
    d.done();
  }
  if (f.has('entropy')) {
    const e = Fields.of('workload.entropy', f.raw('entropy'));
    out.entropy = { bytes: e.size('bytes', 4096), requestBytes: e.size('request_bytes', 512) };
    if (out.entropy.requestBytes === 0) throw new UsageError(e.name('request_bytes'), 'must be non-zero');
    e.done();
  }
  if (f.has('dma')) {
    const d = Fields.of('workload.dma', f.raw('dma'));
    const stream = d.str('stream', 'ring-48');
    try {
      resolveWorkload(stream);
    } catch (e) {
      throw new UsageError(d.name('stream'), (e as Error).message);
    }
    out.dma = { stream, ops: d.int('ops', 10_000, 1, 10_000_000), device: d.oneOf('device', ['virtio-blk', 'virtio-rng'] as const, 'virtio-blk') };
    d.done();
  }
  f.done();
  return out;
}

export function parseScenario(doc: unknown, fallbackName = 'scenario'): Scenario {
  const f = Fields.of('', doc);
  const name = f.str('name', fallbackName);
  const workload = parseWorkload(f.raw('workload'));
  const m = Fields.of('machine', f.raw('machine') ?? {});
  const preset = m.oneOf('preset', Object.keys(PRESETS), 'q35');
  const ramBytes = m.size('ram', 256 * 2 ** 20);
  if (ramBytes < 16 * 2 ** 20 || ramBytes % 4096 !== 0) throw new UsageError(m.name('ram'), 'must be at least 16M and a multiple of 4K');
  const machine: MachineConfig = {
    preset,
    ramBytes,
    cpus: m.int('cpus', 1, 1, 64),
    ...(m.has('max_ram_below_4g') ? { maxRamBelow4g: m.size('max_ram_below_4g', 0) } : {}),
    ...(m.has('dma_bits') ? { dmaBits: m.int('dma_bits', undefined, 24, 64) } : {}),
    devices: [],
  };
  m.done();
  const devices = f.list('devices').map((d, i) => parseDevice(`devices[${i}]`, d, workload.seed));
  const iommu = f.has('iommu') ? { iommu: parseIommu(f.raw('iommu'), PRESETS[preset]!) } : {};
  const cmdline = f.str('cmdline', '');
  f.done();
  return { name, machine: { ...machine, devices, ...iommu }, cmdline, workload };
}

export function loadScenario(path: string): Scenario {
  const text = readUserFile(path);
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (e) {
    throw new UsageError(path, `not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  try {
    return parseScenario(doc, path.replace(/^.*\//, '').replace(/\.(ya?ml|json)$/, ''));
  } catch (e) {
    if (e instanceof UsageError) throw new UsageError(`${path}: ${e.field}`, e.message.slice(e.field.length + 2));
    throw e;
  }
}
