// In-test virtio devices: one device core (status, features, config with a
// generation counter, queues served through DeviceRing) behind either a
// virtio-mmio register block or a modern virtio-pci function. Register offsets
// are the spec's numbers, written out here rather than taken from abi/.
import type { AccessSize } from '../../../abi/boot.ts';
import { DeviceRing, type Chain } from './device-ring.ts';
import { MSI_DEST_SHIFT, MSI_DOORBELL, type FakeMachine, type MmioWindow } from './machine.ts';

const FEATURES_OK = 8;
const DRIVER_OK = 4;
const ACCESS_PLATFORM = 1n << 33n;
const NO_VECTOR = 0xffff;

/** Handles one chain; returns the bytes written into its writable part (the used length). */
export type Serve = (chain: Chain, dv: DataView) => number;

interface QueueState {
  readonly max: number;
  size: number;
  ready: number;
  vector: number;
  /** lo/hi words of desc, driver and device areas. */
  readonly words: number[];
  ring: DeviceRing | undefined;
}

export interface ModelOptions {
  readonly deviceId: number;
  readonly features: bigint;
  readonly queues: readonly number[];
  readonly serve: Serve;
  readonly config?: Uint8Array;
}

export class VirtioModel {
  status = 0;
  driverFeatures = 0n;
  generation = 0;
  readonly statusWrites: number[] = [];
  /** When set, FEATURES_OK never latches. */
  refuseFeatures = false;
  /** When false, a notify is served at once instead of when the CPU next halts. */
  deferred = true;
  /** Called before every config read, to change the config under the driver. */
  onConfigRead: ((off: number) => void) | undefined;
  notifies = 0;
  served = 0;
  readonly config: Uint8Array;
  readonly queues: QueueState[];
  /** Set by the transport front: raise a queue or config interrupt. */
  signal: (what: number | 'config') => void = () => {};

  constructor(
    readonly m: FakeMachine,
    readonly opts: ModelOptions,
  ) {
    this.config = opts.config ?? new Uint8Array(0);
    this.queues = opts.queues.map((max) => ({ max, size: max, ready: 0, vector: NO_VECTOR, words: [0, 0, 0, 0, 0, 0], ring: undefined }));
  }

  writeStatus(v: number): void {
    this.statusWrites.push(v);
    if (v === 0) return this.reset();
    const newlyOk = v & FEATURES_OK & ~this.status;
    if (newlyOk && (this.refuseFeatures || (this.driverFeatures & ~this.opts.features) !== 0n)) v &= ~FEATURES_OK;
    this.status = v;
  }

  configRead(off: number, size: AccessSize): number {
    this.onConfigRead?.(off);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + (this.config[off + i] ?? 0);
    return v;
  }

  /** Changes config bytes as a device does: the generation moves with them. */
  setConfig(off: number, bytes: number[]): void {
    this.config.set(bytes, off);
    this.generation = (this.generation + 1) & 0xff;
  }

  notify(q: number): void {
    if (!(this.status & DRIVER_OK)) throw new Error(`notify of queue ${q} before DRIVER_OK`);
    this.notifies++;
    if (this.deferred) this.m.defer(() => this.process(q));
    else this.process(q);
  }

  /** Serves everything available on queue `q`, then interrupts if the driver wants it. */
  process(q: number): void {
    const ring = this.ring(q);
    const old = ring.usedIdx;
    for (let c = ring.pop(); c; c = ring.pop()) {
      ring.push(c.head, this.opts.serve(c, this.m.dv));
      this.served++;
    }
    // With EVENT_IDX: kick me again at the next buffer (ignored by the driver otherwise).
    ring.setAvailEvent(ring.lastAvail);
    if (ring.usedIdx !== old && ring.wantsInterrupt(old)) this.signal(q);
  }

  ring(q: number): DeviceRing {
    const s = this.queues[q]!;
    if (!s.ready) throw new Error(`queue ${q} used while not ready`);
    const addr = (i: number) => (BigInt(s.words[2 * i + 1]!) << 32n) | BigInt(s.words[2 * i]!);
    s.ring ??= new DeviceRing(this.m.dv, (a, len) => this.translate(a, len), s.size, { desc: addr(0), driver: addr(1), device: addr(2) }, (this.driverFeatures & (1n << 29n)) !== 0n, (this.driverFeatures & (1n << 28n)) !== 0n);
    return s.ring;
  }

  private translate(addr: bigint, len: number): number {
    const gpa = this.driverFeatures & ACCESS_PLATFORM ? this.m.iommu.translate(addr, len) : Number(addr);
    return this.m.ramOff(gpa, len);
  }

  private reset(): void {
    this.status = 0;
    this.driverFeatures = 0n;
    for (const s of this.queues) Object.assign(s, { size: s.max, ready: 0, vector: NO_VECTOR, ring: undefined });
  }
}

const wordOf = (v: bigint, sel: number) => (sel < 2 ? Number((v >> BigInt(32 * sel)) & 0xffff_ffffn) : 0);
const withWord = (v: bigint, sel: number, w: number) => (sel < 2 ? (v & ~(0xffff_ffffn << BigInt(32 * sel))) | (BigInt(w >>> 0) << BigInt(32 * sel)) : v);

/** A virtio-mmio register block (virtio 1.4 §4.2.2) in front of a model. */
export class MmioFront implements MmioWindow {
  readonly size = 0x200;
  interruptStatus = 0;
  version = 2;
  magic = 0x74726976;
  private featuresSel = 0;
  private driverFeaturesSel = 0;
  private queueSel = 0;

  constructor(
    readonly base: number,
    readonly irq: number,
    readonly model: VirtioModel,
  ) {
    model.signal = (what) => {
      this.interruptStatus |= what === 'config' ? 2 : 1;
      model.m.raiseLine(irq);
    };
  }

  read(off: number, size: AccessSize): number {
    const md = this.model;
    if (off >= 0x100) return md.configRead(off - 0x100, size);
    const q = md.queues[this.queueSel];
    switch (off) {
      case 0x000: return this.magic;
      case 0x004: return this.version;
      case 0x008: return md.opts.deviceId;
      case 0x00c: return 0x554d4551;
      case 0x010: return wordOf(md.opts.features, this.featuresSel);
      case 0x034: return q?.max ?? 0;
      case 0x044: return q?.ready ?? 0;
      case 0x060: return this.interruptStatus;
      case 0x070: return md.status;
      case 0x0fc: return md.generation;
      default: throw new Error(`virtio-mmio read of 0x${off.toString(16)}`);
    }
  }

  write(off: number, _size: AccessSize, v: number): void {
    const md = this.model;
    const q = md.queues[this.queueSel];
    switch (off) {
      case 0x014: this.featuresSel = v; return;
      case 0x020: md.driverFeatures = withWord(md.driverFeatures, this.driverFeaturesSel, v); return;
      case 0x024: this.driverFeaturesSel = v; return;
      case 0x030: this.queueSel = v; return;
      case 0x038: q!.size = v; return;
      case 0x044: q!.ready = v; return;
      case 0x050: md.notify(v); return;
      case 0x064: this.interruptStatus &= ~v; return;
      case 0x070: md.writeStatus(v); return;
      case 0x080: case 0x084: case 0x090: case 0x094: case 0x0a0: case 0x0a4:
        q!.words[((off - 0x80) >> 4) * 2 + ((off >> 2) & 1)] = v;
        return;
      default: throw new Error(`virtio-mmio write of 0x${off.toString(16)}`);
    }
  }
}

export interface PciOptions {
  /** MSI-X table size; 0 leaves the MSI-X capability out. */
  readonly msixEntries: number;
  /** Put a capability naming a non-existent BAR ahead of the real common one. */
  readonly badCapFirst?: boolean;
}

export const PCI_BAR0 = 0xe000_0000;
const BAR0_SIZE = 0x4000;
const NOTIFY_OFF = 0x1000;
const NOTIFY_MULT = 4;
const DEVICE_OFF = 0x2100;
const MSIX_TABLE = 0x3000;

/** A modern virtio-pci function (virtio 1.4 §4.1): its config space and BAR0 are two MMIO windows. */
export class PciFront {
  readonly cfg = new Uint8Array(4096);
  private readonly cdv = new DataView(this.cfg.buffer);
  private readonly table: DataView;
  private featureSel = 0;
  private driverFeatureSel = 0;
  private queueSel = 0;
  private configVector = NO_VECTOR;

  constructor(
    readonly model: VirtioModel,
    ecamFn: number,
    readonly opts: PciOptions,
  ) {
    this.table = new DataView(new ArrayBuffer(16 * Math.max(1, opts.msixEntries)));
    this.buildConfigSpace();
    const front = this;
    model.m.map({ base: ecamFn, size: 0x1000, read: (o, s) => front.cfgRead(o, s), write: (o, s, v) => front.cfgWrite(o, s, v) });
    model.m.map({ base: PCI_BAR0, size: BAR0_SIZE, read: (o, s) => front.barRead(o, s), write: (o, s, v) => front.barWrite(o, s, v) });
    model.signal = (what) => this.msi(what === 'config' ? this.configVector : model.queues[what]!.vector);
  }

  private buildConfigSpace(): void {
    const d = this.cdv;
    d.setUint16(0x00, 0x1af4, true);
    d.setUint16(0x02, 0x1040 + this.model.opts.deviceId, true);
    d.setUint16(0x06, 0x10, true); // capabilities list
    d.setUint8(0x08, 1); // revision
    d.setUint32(0x10, PCI_BAR0 | 0x4, true); // 64-bit memory BAR
    d.setUint32(0x14, 0, true);
    const caps: number[][] = [];
    if (this.opts.msixEntries > 0) caps.push([0x11, 0, ...le16(this.opts.msixEntries - 1), ...le32(MSIX_TABLE), ...le32(MSIX_TABLE + 0x800)]);
    const vcap = (type: number, bar: number, off: number, len: number, extra: number[] = []) => [0x09, 0, 16 + extra.length, type, bar, 0, 0, 0, ...le32(off), ...le32(len), ...extra];
    if (this.opts.badCapFirst) caps.push(vcap(1, 7, 0, 64));
    caps.push(vcap(1, 0, 0, 64), vcap(2, 0, NOTIFY_OFF, 0x100, le32(NOTIFY_MULT)), vcap(3, 0, 0x2000, 1), vcap(4, 0, DEVICE_OFF, this.model.config.length));
    let at = 0x40;
    d.setUint8(0x34, at);
    caps.forEach((bytes, i) => {
      this.cfg.set(bytes, at);
      const next = i + 1 < caps.length ? at + ((bytes.length + 3) & ~3) : 0;
      this.cfg[at + 1] = next;
      at = next;
    });
  }

  private cfgRead(off: number, size: AccessSize): number {
    return size === 1 ? this.cdv.getUint8(off) : size === 2 ? this.cdv.getUint16(off, true) : this.cdv.getUint32(off, true);
  }

  private cfgWrite(off: number, size: AccessSize, v: number): void {
    if (off === 0x10) return this.cdv.setUint32(off, ((v & ~(BAR0_SIZE - 1)) | 0x4) >>> 0, true);
    if (off === 0x14 || off === 0x04) return size === 4 ? this.cdv.setUint32(off, v, true) : this.cdv.setUint16(off, v, true);
    if (off === 0x42) return this.cdv.setUint16(off, (v & 0xc000) | (this.opts.msixEntries - 1), true); // MSI-X message control
    // Other BARs and read-only registers ignore writes.
  }

  private barRead(off: number, size: AccessSize): number {
    const md = this.model;
    if (off >= MSIX_TABLE) return this.table.getUint32(off - MSIX_TABLE, true);
    if (off >= DEVICE_OFF) return md.configRead(off - DEVICE_OFF, size);
    const q = md.queues[this.queueSel];
    switch (off) {
      case 4: return wordOf(md.opts.features, this.featureSel);
      case 16: return this.configVector;
      case 18: return md.queues.length;
      case 20: return md.status;
      case 21: return md.generation;
      case 24: return q?.size ?? 0;
      case 26: return q?.vector ?? NO_VECTOR;
      case 28: return q?.ready ?? 0;
      case 30: return this.queueSel;
      default: throw new Error(`virtio-pci common read of ${off}`);
    }
  }

  private barWrite(off: number, _size: AccessSize, v: number): void {
    const md = this.model;
    if (off >= MSIX_TABLE) return this.table.setUint32(off - MSIX_TABLE, v, true);
    if (off >= NOTIFY_OFF) {
      if (off - NOTIFY_OFF !== v * NOTIFY_MULT) throw new Error(`notify of queue ${v} at the address of another`);
      return md.notify(v);
    }
    const q = md.queues[this.queueSel];
    const vector = (e: number) => (e < this.opts.msixEntries ? e : NO_VECTOR);
    switch (off) {
      case 0: this.featureSel = v; return;
      case 8: this.driverFeatureSel = v; return;
      case 12: md.driverFeatures = withWord(md.driverFeatures, this.driverFeatureSel, v); return;
      case 16: this.configVector = vector(v); return;
      case 20: md.writeStatus(v); return;
      case 22: this.queueSel = v; return;
      case 24: q!.size = v; return;
      case 26: q!.vector = vector(v); return;
      case 28: q!.ready = v; return;
      case 32: case 36: case 40: case 44: case 48: case 52: q!.words[(off - 32) >> 2] = v; return;
      default: throw new Error(`virtio-pci common write of ${off}`);
    }
  }

  private msi(entry: number): void {
    const ctrl = this.cdv.getUint16(0x42, true);
    if (entry === NO_VECTOR || !(ctrl & 0x8000) || ctrl & 0x4000 || this.table.getUint32(16 * entry + 12, true) & 1) return;
    const addr = this.table.getUint32(16 * entry, true);
    this.model.m.raise((addr - MSI_DOORBELL) >> MSI_DEST_SHIFT, this.table.getUint32(16 * entry + 8, true));
  }
}

const le16 = (v: number) => [v & 0xff, (v >> 8) & 0xff];
const le32 = (v: number) => [...le16(v & 0xffff), ...le16(v >>> 16)];

/** A RAM disk behind virtio-blk requests: header, data, status (virtio 1.4 §5.2.6). */
export function blkServe(disk: Uint8Array, opts: { ro?: boolean; usedLen?: (len: number) => number } = {}): Serve {
  return (c, dv) => {
    const hdr = c.readable[0]!;
    const type = dv.getUint32(hdr.off, true);
    const sector = Number(dv.getBigUint64(hdr.off + 8, true));
    const status = c.writable.at(-1)!;
    const ram = new Uint8Array(dv.buffer);
    let written = 0;
    let code = 0;
    if (type === 0 || type === 1) {
      const data = type === 0 ? c.writable[0]! : c.readable[1]!;
      const at = sector * 512;
      if (at + data.len > disk.length || (type === 1 && opts.ro)) code = 1;
      else if (type === 0) {
        ram.set(disk.subarray(at, at + data.len), data.off);
        written = data.len;
      } else disk.set(ram.subarray(data.off, data.off + data.len), at);
    } else if (type === 8) {
      const data = c.writable[0]!;
      ram.set(new TextEncoder().encode('ivory-test-disk').subarray(0, data.len), data.off);
      written = data.len;
    } else if (type !== 4) code = 2;
    dv.setUint8(status.off, code);
    return opts.usedLen ? opts.usedLen(written + 1) : written + 1;
  };
}
