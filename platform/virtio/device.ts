// The transport-independent half of a virtio device (virtio 1.4 §2-§3): device
// status and feature negotiation as QEMU's virtio_set_status and
// virtio_validate_features do, config space with its generation, and queue work on the virtual clock.
import { DEVICE_NAME, F, STATUS, bit, featureNames, has, hex64, statusNames } from '../../abi/virtio.ts';
import { readSized } from '../bus.ts';
import type { AccessSize } from '../../abi/boot.ts';
import type { AddressSpace } from '../address-space.ts';
import type { EventLoop } from '../events.ts';
import type { GuestMemory } from '../memory.ts';
import type { HostTrace } from '../trace.ts';
import { type DescriptorChain, DeviceDma, QueueError, SplitQueue } from './queue.ts';

/**
 * Virtual-time cost of a kick: the trapped register write (a vmexit) plus
 * waking the device's thread through its ioeventfd, about 1-2 us on KVM.
 */
export const VIRTIO_NOTIFY_LATENCY_NS = 1500;

/** How the device raises its two kinds of interrupt; each transport delivers them its own way. */
export interface VirtioTransport {
  signalUsed(queue: number): void;
  signalConfig(): void;
}

/** What a device model is built with: guest RAM, the DMA view of its endpoint, the clock and the trace. */
export interface DeviceContext {
  readonly name: string;
  readonly mem: GuestMemory;
  /** Every DMA goes through here, ACCESS_PLATFORM negotiated or not: the machine decides what space an endpoint sees. */
  readonly space: AddressSpace;
  readonly events: EventLoop;
  readonly trace: HostTrace;
  /** Told the driver's features once they are final: the machine picks the endpoint's address space from ACCESS_PLATFORM, as QEMU does. */
  readonly featuresFinal?: (features: bigint) => void;
}

/** Options common to every virtio device, named as in the scenario's DeviceConfig. */
export interface VirtioDeviceOptions {
  /** Largest queue size the device offers (QEMU's queue-size); a power of two. Default 256. */
  readonly queueSize?: number;
  /** Offer VIRTIO_F_VERSION_1 (default). Without it the device is legacy-only. */
  readonly version1?: boolean;
  /** QEMU's iommu_platform: offer VIRTIO_F_ACCESS_PLATFORM and refuse FEATURES_OK without it. */
  readonly iommuPlatform?: boolean;
  readonly indirectDesc?: boolean;
  readonly eventIdx?: boolean;
}

export interface DeviceSpec {
  readonly deviceId: number;
  readonly numQueues: number;
  /** Device-type feature bits (0-23); the ring and transport bits come from the options. */
  readonly features: bigint;
  readonly featureNames?: Readonly<Record<number, string>>;
  readonly configSize: number;
}

export interface VirtioDeviceReport {
  readonly name: string;
  readonly device: string;
  readonly featuresOffered: string;
  readonly featuresAccepted: string;
  readonly offered: string[];
  readonly accepted: string[];
  readonly statusHistory: { ts: number; status: string[] }[];
  readonly queues: { index: number; size: number; popped: number; used: number }[];
  readonly dma: { readBytes: number; writtenBytes: number };
  readonly interrupts: { used: number; config: number };
  readonly errors: { ts: number; reason: string; detail: string }[];
  readonly refusedFeatures: { ts: number; reason: string }[];
  readonly stats: Record<string, number>;
}

export abstract class VirtioDeviceModel {
  readonly name: string;
  readonly deviceId: number;
  readonly offeredFeatures: bigint;
  driverFeatures = 0n;
  status = 0;
  readonly queues: SplitQueue[];
  readonly config: Uint8Array;
  protected readonly configView: DataView;
  /** 8-bit, bumped whenever the device changes a config field (§2.5). Reset keeps it: config describes the device, not the session. */
  configGeneration = 0;

  readonly space: AddressSpace;
  protected readonly events: EventLoop;
  protected readonly trace: HostTrace;
  private readonly dma: DeviceDma;
  private readonly requireAccessPlatform: boolean;
  private readonly names: Readonly<Record<number, string>>;
  private transport: VirtioTransport | undefined;
  /** QEMU's vdev->broken: after a driver error nothing more is processed until reset. */
  private broken = false;
  /** Bumped by reset so that work scheduled before it is dropped. */
  private epoch = 0;
  private readonly kicked: boolean[];
  /** When each queue's server is next free: requests complete one after another. */
  private readonly busyUntil: number[];
  /** Served chains waiting for their completion time, per queue, in completion order. */
  private readonly completions: CompletionFifo[];
  private dueHandlers: (() => void)[];

  private readonly statusHistory: { ts: number; status: string[] }[] = [];
  private readonly errors: { ts: number; reason: string; detail: string }[] = [];
  private readonly refused: { ts: number; reason: string }[] = [];
  private readonly featuresFinal: ((features: bigint) => void) | undefined;
  private readonly interrupts = { used: 0, config: 0 };

  protected constructor(ctx: DeviceContext, spec: DeviceSpec, opts: VirtioDeviceOptions) {
    this.name = ctx.name;
    this.deviceId = spec.deviceId;
    this.space = ctx.space;
    this.events = ctx.events;
    this.trace = ctx.trace;
    this.featuresFinal = ctx.featuresFinal;
    this.names = spec.featureNames ?? {};
    this.requireAccessPlatform = opts.iommuPlatform ?? false;
    this.offeredFeatures =
      spec.features |
      (opts.version1 ?? true ? bit(F.VERSION_1) : 0n) |
      (opts.indirectDesc ?? true ? bit(F.INDIRECT_DESC) : 0n) |
      (opts.eventIdx ?? true ? bit(F.EVENT_IDX) : 0n) |
      (this.requireAccessPlatform ? bit(F.ACCESS_PLATFORM) : 0n);
    this.dma = new DeviceDma(ctx.mem, ctx.space);
    this.queues = Array.from({ length: spec.numQueues }, (_, i) => new SplitQueue(i, opts.queueSize ?? 256, this.dma));
    this.kicked = new Array<boolean>(spec.numQueues).fill(false);
    this.busyUntil = new Array<number>(spec.numQueues).fill(0);
    this.completions = Array.from({ length: spec.numQueues }, () => new CompletionFifo());
    this.dueHandlers = this.makeDueHandlers();
    this.config = new Uint8Array(spec.configSize);
    this.configView = new DataView(this.config.buffer);
  }

  /**
   * Serves one request: moves its data through chain.read/chain.write and
   * returns the device's service time in ns. A malformed request calls
   * virtioError() instead; the chain then completes never.
   */
  protected abstract serve(queue: SplitQueue, chain: DescriptorChain): number;

  /** Device-specific counters for the report. */
  protected abstract deviceStats(): Record<string, number>;

  attach(transport: VirtioTransport): void {
    this.transport = transport;
  }

  // ---- transport side ----

  /** Word `sel` of the offered features; words past 1 read 0 (§4.1.4.3, §4.2.2). */
  deviceFeatureWord(sel: number): number {
    return sel === 0 || sel === 1 ? Number((this.offeredFeatures >> BigInt(32 * sel)) & 0xffff_ffffn) : 0;
  }

  driverFeatureWord(sel: number): number {
    return sel === 0 || sel === 1 ? Number((this.driverFeatures >> BigInt(32 * sel)) & 0xffff_ffffn) : 0;
  }

  /** Feature bits are the driver's to write only until FEATURES_OK (§3.1.1 step 5). */
  setDriverFeatureWord(sel: number, word: number): void {
    if (this.status & STATUS.FEATURES_OK || (sel !== 0 && sel !== 1)) return;
    const shift = BigInt(32 * sel);
    this.driverFeatures = (this.driverFeatures & ~(0xffff_ffffn << shift)) | (BigInt(word >>> 0) << shift);
  }

  setStatus(value: number): void {
    value &= 0xff;
    this.trace.emit('virtio_set_status', { dev: this.name, val: value });
    if (value === 0) {
      this.reset();
      return;
    }
    const old = this.status;
    const rising = value & ~old;
    if (rising & STATUS.FEATURES_OK) {
      const reason = this.featureRefusal();
      if (reason) {
        // The bit does not latch; the driver sees that when it re-reads status (§3.1.1 step 6).
        value &= ~STATUS.FEATURES_OK;
        this.refused.push({ ts: this.events.now, reason });
        this.trace.emit('virtio_features_refused', { dev: this.name, reason });
      }
    }
    // DEVICE_NEEDS_RESET is the device's to set and only reset clears it.
    value = (value & ~STATUS.DEVICE_NEEDS_RESET) | (old & STATUS.DEVICE_NEEDS_RESET);
    // Legacy drivers skip FEATURES_OK, so the features are applied at DRIVER_OK too.
    if ((value & ~old) & (STATUS.FEATURES_OK | STATUS.DRIVER_OK)) this.applyFeatures();
    this.setStatusBits(value);
  }

  /** QueueReady / queue_enable = 1. A queue set up wrongly is a driver error. */
  enableQueue(index: number): void {
    const err = this.queues[index]?.enable();
    if (err) this.virtioError(err.reason, err.detail);
  }

  /** A kick: the device runs after the notify latency, and polls the ring meanwhile instead of taking more kicks. */
  queueNotify(index: number): void {
    this.trace.on?.emit('virtio_queue_notify', { dev: this.name, vq: index });
    const q = this.queues[index];
    // §3.1.1: no buffer is used before DRIVER_OK.
    if (!q || !q.ready || !this.live || this.kicked[index]) return;
    this.kicked[index] = true;
    q.disableNotification();
    const epoch = this.epoch;
    this.events.schedule(VIRTIO_NOTIFY_LATENCY_NS, () => {
      if (epoch === this.epoch) this.processQueue(q);
    });
  }

  readConfig(off: number, size: AccessSize): number {
    return readSized(this.configView, off, size);
  }

  /** No field of the modelled devices is driver-writable (no CONFIG_WCE), so config writes are dropped as QEMU drops them. */
  writeConfig(off: number, size: AccessSize, value: number): void {
    this.trace.emit('virtio_config_write_ignored', { dev: this.name, off, size, value });
  }

  report(): VirtioDeviceReport {
    return {
      name: this.name,
      device: DEVICE_NAME[this.deviceId] ?? `virtio-${this.deviceId}`,
      featuresOffered: hex64(this.offeredFeatures),
      featuresAccepted: hex64(this.driverFeatures),
      offered: featureNames(this.offeredFeatures, this.names),
      accepted: featureNames(this.driverFeatures, this.names),
      statusHistory: [...this.statusHistory],
      queues: this.queues.map((q) => ({ index: q.index, size: q.size, popped: q.popped, used: q.used })),
      dma: { readBytes: this.dma.readBytes, writtenBytes: this.dma.writtenBytes },
      interrupts: { ...this.interrupts },
      errors: [...this.errors],
      refusedFeatures: [...this.refused],
      stats: this.deviceStats(),
    };
  }

  // ---- device side ----

  /** QEMU's virtio_error: the device stops, sets DEVICE_NEEDS_RESET and tells the driver (§2.1.2). */
  protected virtioError(reason: string, detail: string): void {
    this.broken = true;
    this.errors.push({ ts: this.events.now, reason, detail });
    this.trace.emit('virtio_error', { dev: this.name, reason, detail });
    // A legacy device has no NEEDS_RESET bit; it is only marked broken, as in QEMU.
    if (!has(this.driverFeatures, F.VERSION_1)) return;
    this.setStatusBits(this.status | STATUS.DEVICE_NEEDS_RESET);
    this.signalConfig();
  }

  /** The device changed a config field: new generation, then a config interrupt. */
  protected configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) & 0xff;
    this.signalConfig();
  }

  protected get live(): boolean {
    return (this.status & STATUS.DRIVER_OK) !== 0 && !this.broken;
  }

  private processQueue(q: SplitQueue): void {
    this.kicked[q.index] = false;
    if (!this.live || !q.ready) return;
    do {
      for (let r = q.pop(); r !== undefined; r = q.pop()) {
        if (r instanceof QueueError) {
          this.virtioError(r.reason, r.detail);
          return;
        }
        this.trace.on?.emit('virtqueue_pop', { dev: this.name, vq: q.index, head: r.head, out_num: r.readable.length, in_num: r.writable.length });
        const cost = this.serve(q, r);
        if (this.broken) return;
        this.complete(q, r, cost);
      }
    } while (q.enableNotification());
  }

  /**
   * Puts the chain on the used ring once the queue's server has spent
   * `costNs` on it. Completion times only grow, so a queue needs one pending
   * event at a time, not one per request.
   */
  private complete(q: SplitQueue, chain: DescriptorChain, costNs: number): void {
    const done = Math.max(this.events.now, this.busyUntil[q.index]!) + costNs;
    this.busyUntil[q.index] = done;
    const fifo = this.completions[q.index]!;
    fifo.add(chain, done);
    if (fifo.length === 1) this.scheduleCompletions(q, fifo);
  }

  private scheduleCompletions(q: SplitQueue, fifo: CompletionFifo): void {
    this.events.schedule(fifo.nextDone - this.events.now, this.dueHandlers[q.index]!);
  }

  /** One completion handler per queue and epoch, made once: scheduling a completion allocates no closure. */
  private makeDueHandlers(): (() => void)[] {
    const epoch = this.epoch;
    return this.queues.map((q, i) => () => {
      if (epoch === this.epoch) this.completeDue(q, this.completions[i]!);
    });
  }

  /** Every chain due by now goes on the used ring, each followed by its interrupt decision. */
  private completeDue(q: SplitQueue, fifo: CompletionFifo): void {
    const now = this.events.now;
    while (fifo.length > 0 && fifo.nextDone <= now) {
      const chain = fifo.take();
      // As QEMU's virtqueue_fill: a broken device writes nothing more.
      if (this.broken) continue;
      const head = chain.head;
      const len = chain.written;
      const err = q.push(chain, len);
      if (err) {
        this.virtioError(err.reason, err.detail);
        continue;
      }
      this.trace.on?.emit('virtqueue_flush', { dev: this.name, vq: q.index, head, len, idx: q.nextUsed });
      if (q.needsInterrupt()) this.signalUsed(q.index);
    }
    if (fifo.length > 0) this.scheduleCompletions(q, fifo);
  }

  protected signalUsed(queue: number): void {
    this.interrupts.used++;
    this.trace.on?.emit('virtio_notify', { dev: this.name, vq: queue });
    this.transport?.signalUsed(queue);
  }

  /** As QEMU's virtio_notify_config: nothing before DRIVER_OK. */
  private signalConfig(): void {
    if (!(this.status & STATUS.DRIVER_OK)) return;
    this.interrupts.config++;
    this.trace.emit('virtio_notify_config', { dev: this.name, generation: this.configGeneration });
    this.transport?.signalConfig();
  }

  /** Why FEATURES_OK cannot latch for the features the driver wrote, or undefined if it can. */
  private featureRefusal(): string | undefined {
    const extra = this.driverFeatures & ~this.offeredFeatures;
    if (extra) return `driver accepted features not offered: ${featureNames(extra, this.names).join(', ')}`;
    if (has(this.offeredFeatures, F.VERSION_1) && !has(this.driverFeatures, F.VERSION_1)) return 'VERSION_1 offered but not accepted (modern-only device)';
    if (this.requireAccessPlatform && !has(this.driverFeatures, F.ACCESS_PLATFORM)) return 'iommu_platform device: ACCESS_PLATFORM offered but not accepted';
    return undefined;
  }

  private applyFeatures(): void {
    for (const q of this.queues) {
      q.eventIdx = has(this.driverFeatures, F.EVENT_IDX);
      q.indirectDesc = has(this.driverFeatures, F.INDIRECT_DESC);
    }
    this.featuresFinal?.(this.driverFeatures);
  }

  /** Writing 0: queues, features, pending work and errors all go back to their initial state. */
  private reset(): void {
    this.epoch++;
    this.dueHandlers = this.makeDueHandlers();
    this.broken = false;
    this.driverFeatures = 0n;
    for (const q of this.queues) q.reset();
    this.kicked.fill(false);
    this.busyUntil.fill(0);
    for (const c of this.completions) c.clear();
    this.setStatusBits(0);
  }

  private setStatusBits(value: number): void {
    this.status = value;
    this.statusHistory.push({ ts: this.events.now, status: statusNames(value) });
  }
}

/**
 * The served chains of one queue and their completion times, in the order they
 * complete: a ring whose size is a power of two (indices wrap with a mask) and
 * doubles when full. A queue never has more chains out than its size, so
 * under steady load it stops growing.
 */
class CompletionFifo {
  private chains: (DescriptorChain | undefined)[] = new Array<DescriptorChain | undefined>(16).fill(undefined);
  private done = new Float64Array(16);
  private head = 0;
  private count = 0;

  get length(): number {
    return this.count;
  }

  get nextDone(): number {
    return this.done[this.head]!;
  }

  add(chain: DescriptorChain, done: number): void {
    if (this.count === this.done.length) this.grow();
    const i = (this.head + this.count) & (this.done.length - 1);
    this.chains[i] = chain;
    this.done[i] = done;
    this.count++;
  }

  take(): DescriptorChain {
    const chain = this.chains[this.head]!;
    this.chains[this.head] = undefined;
    this.head = (this.head + 1) & (this.done.length - 1);
    this.count--;
    return chain;
  }

  clear(): void {
    this.chains.fill(undefined);
    this.head = this.count = 0;
  }

  /** Twice the room, the entries unwrapped to start at slot 0. */
  private grow(): void {
    const n = this.done.length;
    const chains = new Array<DescriptorChain | undefined>(2 * n).fill(undefined);
    const done = new Float64Array(2 * n);
    for (let k = 0; k < n; k++) {
      const i = (this.head + k) & (n - 1);
      chains[k] = this.chains[i];
      done[k] = this.done[i]!;
    }
    this.chains = chains;
    this.done = done;
    this.head = 0;
  }
}
