// Test scaffolding for the virtio device models: a small machine (RAM, clock,
// interrupt controller, identity DMA space) and a driver side written straight
// into guest RAM and registers, as a guest would, with no guest code imported.
import { type Addr, hi32, lo32 } from '../../abi/addr.ts';
import { VirtqAvailHeader, VirtqDesc, VirtqUsedElem, VirtqUsedHeader, splitRing } from '../../abi/ring.ts';
import { MMIO } from '../../abi/virtio-mmio.ts';
import { STATUS, bit } from '../../abi/virtio.ts';
import { PhysicalSpace } from '../../platform/address-space.ts';
import { MmioBus } from '../../platform/bus.ts';
import { EventLoop } from '../../platform/events.ts';
import { InterruptController } from '../../platform/irq.ts';
import { GuestMemory } from '../../platform/memory.ts';
import { HostTrace } from '../../platform/trace.ts';
import { type DeviceContext, VirtioDeviceModel, type VirtioDeviceOptions } from '../../platform/virtio/device.ts';
import { VirtioMmioTransport } from '../../platform/virtio/mmio.ts';
import type { DescriptorChain, SplitQueue } from '../../platform/virtio/queue.ts';

export const RAM_BYTES = 4 * 2 ** 20;
export const MSI_WINDOW = { base: 0xfee0_0000, size: 0x10_0000, destShift: 12 };
export const MMIO_LINE = 5;
/** Where test rings and buffers go in guest RAM. */
export const RING_BASE = 0x1_0000;
export const BUFFER_BASE = 0x10_0000;

export class Host {
  readonly events = new EventLoop();
  readonly trace = new HostTrace(this.events);
  readonly mem = new GuestMemory([{ gpa: 0, size: RAM_BYTES }]);
  readonly irq = new InterruptController(this.events, this.trace, MSI_WINDOW, 1);
  readonly space = new PhysicalSpace(this.mem, this.irq, this.trace, 'test-endpoint');
  readonly bus = new MmioBus(this.trace);
  /** Vectors delivered to CPU 0, in order. */
  readonly delivered: number[] = [];
  private next = BUFFER_BASE;

  constructor() {
    this.irq.connect((_cpu, vector) => this.delivered.push(vector));
  }

  ctx(name = 'dev0'): DeviceContext {
    return { name, mem: this.mem, space: this.space, events: this.events, trace: this.trace };
  }

  /** A bump allocator for guest buffers. */
  alloc(len: number, align = 16): number {
    const a = Math.ceil(this.next / align) * align;
    this.next = a + len;
    return a;
  }

  put(gpa: number, bytes: Uint8Array): void {
    this.mem.load(gpa, bytes);
  }

  get(gpa: number, len: number): Uint8Array {
    return this.mem.u8.slice(gpa, gpa + len);
  }

  run(): void {
    this.events.runUntil(() => false);
  }

  traced(name: string): number {
    return this.trace.events.filter((e) => e.name === name).length;
  }
}

export interface Desc {
  addr: Addr;
  len: number;
  flags?: number;
  next?: number;
}

/** Writes descriptor `i` of the table at `table` (the queue's or an indirect one). */
export function writeDesc(mem: GuestMemory, table: number, i: number, d: Desc): void {
  const at = table + i * VirtqDesc.span;
  mem.dv.setUint32(at + VirtqDesc.off.addr, lo32(d.addr), true);
  mem.dv.setUint32(at + VirtqDesc.off.addr + 4, hi32(d.addr), true);
  mem.dv.setUint32(at + VirtqDesc.off.len, d.len, true);
  mem.dv.setUint16(at + VirtqDesc.off.flags, d.flags ?? 0, true);
  mem.dv.setUint16(at + VirtqDesc.off.next, d.next ?? 0, true);
}

/** The driver's view of one split ring in guest RAM, laid out contiguously from `base`. */
export class TestRing {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  availIdx = 0;

  constructor(
    readonly mem: GuestMemory,
    readonly size: number,
    base = RING_BASE,
  ) {
    this.desc = base;
    this.avail = this.desc + splitRing.descBytes(size);
    this.used = Math.ceil((this.avail + splitRing.availBytes(size)) / 4) * 4;
  }

  setDesc(i: number, d: Desc): void {
    writeDesc(this.mem, this.desc, i, d);
  }

  /** Makes the chain at `head` available: ring entry first, then idx. */
  add(head: number): void {
    this.mem.dv.setUint16(this.avail + splitRing.availRing(this.availIdx % this.size), head, true);
    this.setAvailIdx(this.availIdx + 1);
  }

  setAvailIdx(v: number): void {
    this.availIdx = v & 0xffff;
    this.mem.dv.setUint16(this.avail + VirtqAvailHeader.off.idx, this.availIdx, true);
  }

  set availFlags(v: number) {
    this.mem.dv.setUint16(this.avail + VirtqAvailHeader.off.flags, v, true);
  }

  set usedEvent(v: number) {
    this.mem.dv.setUint16(this.avail + splitRing.usedEvent(this.size), v, true);
  }

  get usedIdx(): number {
    return this.mem.dv.getUint16(this.used + VirtqUsedHeader.off.idx, true);
  }

  get usedFlags(): number {
    return this.mem.dv.getUint16(this.used + VirtqUsedHeader.off.flags, true);
  }

  get availEvent(): number {
    return this.mem.dv.getUint16(this.used + splitRing.availEvent(this.size), true);
  }

  usedElem(i: number): { id: number; len: number } {
    const at = this.used + splitRing.usedRing(i % this.size);
    return { id: this.mem.dv.getUint32(at + VirtqUsedElem.off.id, true), len: this.mem.dv.getUint32(at + VirtqUsedElem.off.len, true) };
  }
}

/** A device that completes every chain with nothing written, recording the heads it served. */
export class SinkDevice extends VirtioDeviceModel {
  readonly served: number[] = [];

  constructor(ctx: DeviceContext, opts: VirtioDeviceOptions = {}) {
    super(ctx, { deviceId: 0x1f, numQueues: 2, features: bit(0), configSize: 8 }, opts);
  }

  protected serve(_q: SplitQueue, chain: DescriptorChain): number {
    this.served.push(chain.head);
    return 100;
  }

  protected deviceStats(): Record<string, number> {
    return { served: this.served.length };
  }
}

/** A guest driver reduced to register writes on a virtio-mmio transport (§3.1.1, §4.2.3). */
export class MmioDriver {
  readonly t: VirtioMmioTransport;

  constructor(
    readonly host: Host,
    readonly model: VirtioDeviceModel,
  ) {
    this.t = new VirtioMmioTransport(model, host.irq, MMIO_LINE);
  }

  read(off: number): number {
    return this.t.handler.read(off, 4);
  }

  write(off: number, v: number): void {
    this.t.handler.write(off, 4, v);
  }

  get status(): number {
    return this.read(MMIO.status);
  }

  deviceFeatures(): bigint {
    this.write(MMIO.device_features_sel, 0);
    const lo = this.read(MMIO.device_features);
    this.write(MMIO.device_features_sel, 1);
    return (BigInt(this.read(MMIO.device_features)) << 32n) | BigInt(lo);
  }

  /** Steps 1-6: reset, ACK, DRIVER, features, FEATURES_OK. True if the device kept FEATURES_OK. */
  negotiate(features: bigint): boolean {
    this.write(MMIO.status, 0);
    this.write(MMIO.status, STATUS.ACKNOWLEDGE);
    this.write(MMIO.status, STATUS.ACKNOWLEDGE | STATUS.DRIVER);
    this.write(MMIO.driver_features_sel, 0);
    this.write(MMIO.driver_features, Number(features & 0xffff_ffffn));
    this.write(MMIO.driver_features_sel, 1);
    this.write(MMIO.driver_features, Number(features >> 32n));
    this.write(MMIO.status, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK);
    return (this.status & STATUS.FEATURES_OK) !== 0;
  }

  setupQueue(index: number, ring: TestRing): void {
    this.write(MMIO.queue_sel, index);
    this.write(MMIO.queue_num, ring.size);
    this.write(MMIO.queue_desc_low, ring.desc);
    this.write(MMIO.queue_desc_high, 0);
    this.write(MMIO.queue_driver_low, ring.avail);
    this.write(MMIO.queue_driver_high, 0);
    this.write(MMIO.queue_device_low, ring.used);
    this.write(MMIO.queue_device_high, 0);
    this.write(MMIO.queue_ready, 1);
  }

  driverOk(): void {
    this.write(MMIO.status, this.status | STATUS.DRIVER_OK);
  }

  kick(queue = 0): void {
    this.write(MMIO.queue_notify, queue);
  }
}

/** Every feature the device offers except those in `without`. */
export function acceptAll(model: VirtioDeviceModel, ...without: number[]): bigint {
  return without.reduce((f, b) => f & ~bit(b), model.offeredFeatures);
}

/** A device brought up on virtio-mmio with queue 0 ready and DRIVER_OK set. */
export function bringUp<T extends VirtioDeviceModel>(host: Host, model: T, opts: { features?: bigint; queueSize?: number } = {}): { drv: MmioDriver; ring: TestRing; model: T } {
  const drv = new MmioDriver(host, model);
  if (!drv.negotiate(opts.features ?? acceptAll(model))) throw new Error('test setup: FEATURES_OK refused');
  const ring = new TestRing(host.mem, opts.queueSize ?? model.queues[0]!.maxSize);
  drv.setupQueue(0, ring);
  drv.driverOk();
  return { drv, ring, model };
}
