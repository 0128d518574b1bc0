// Test scaffolding for the virtio-iommu device model: the device on virtio-mmio
// with its request and event queues in guest RAM, raw requests written byte by
// byte as a driver would, and fault records read back off the event queue.
import { type Addr } from '../../abi/addr.ts';
import { VIRTQ_DESC_F } from '../../abi/ring.ts';
import {
  VIRTIO_IOMMU_EVENT_QUEUE,
  VIRTIO_IOMMU_REQUEST_QUEUE,
  VIRTIO_IOMMU_T,
  VirtioIommuFault,
  VirtioIommuReqAttach,
  VirtioIommuReqDetach,
  VirtioIommuReqMap,
  VirtioIommuReqProbe,
  VirtioIommuReqUnmap,
  requestReadable,
} from '../../abi/virtio-iommu.ts';
import { type EndpointSpace } from '../../platform/iommu/endpoint-space.ts';
import { type EndpointOptions, RESERVED_OFFSET, VirtioIommu, type VirtioIommuOptions } from '../../platform/iommu/virtio-iommu.ts';
import { Host, MmioDriver, TestRing, acceptAll } from './virtio-harness.ts';

const { NEXT, WRITE } = VIRTQ_DESC_F;
/** Where requests and replies go in guest RAM. */
const READABLE_AT = 0x20_0000;
const WRITABLE_AT = 0x21_0000;
const EVENTS_AT = 0x30_0000;
/** What the driver leaves in the writable part, so that bytes the device did not write show. */
export const SENTINEL = 0xee;

export interface Reply {
  /** The first tail byte where the driver expects it (the last 4 writable bytes), or undefined if untouched. */
  readonly status: number | undefined;
  readonly usedLen: number;
  /** The whole writable part after the device was done. */
  readonly out: Uint8Array;
}

export interface SendOptions {
  /** Device-writable bytes; default 4 (just the tail). */
  readonly writable?: number;
  /** Split the readable part into two descriptors after this many bytes. */
  readonly splitAt?: number;
}

export class IommuBench {
  readonly h = new Host();
  readonly dev: VirtioIommu;
  readonly drv: MmioDriver;
  readonly req: TestRing;
  readonly evt: TestRing;
  private readonly spaces = new Map<number, EndpointSpace>();
  private eventsPosted = 0;
  private eventsSeen = 0;

  constructor(opts: VirtioIommuOptions = {}, setup: { endpoints?: readonly number[]; features?: (dev: VirtioIommu) => bigint; eventBuffers?: number; eventBufferLen?: number } = {}) {
    this.dev = new VirtioIommu(this.h.ctx('virtio-iommu.0'), opts);
    for (const id of setup.endpoints ?? [8]) this.endpoint(id);
    this.drv = new MmioDriver(this.h, this.dev);
    if (!this.drv.negotiate(setup.features?.(this.dev) ?? acceptAll(this.dev))) throw new Error('test setup: FEATURES_OK refused');
    this.req = new TestRing(this.h.mem, 256);
    this.evt = new TestRing(this.h.mem, 64, 0x1_8000);
    this.drv.setupQueue(VIRTIO_IOMMU_REQUEST_QUEUE, this.req);
    this.drv.setupQueue(VIRTIO_IOMMU_EVENT_QUEUE, this.evt);
    this.drv.driverOk();
    this.postEvents(setup.eventBuffers ?? 8, setup.eventBufferLen ?? VirtioIommuFault.span);
  }

  /** An endpoint's DMA view; made on first use. */
  endpoint(id: number, opts: Partial<EndpointOptions> = {}): EndpointSpace {
    let space = this.spaces.get(id);
    if (!space) this.spaces.set(id, (space = this.dev.addEndpoint(id, { physical: this.h.space, name: `ep${id}`, ...opts })));
    return space;
  }

  /** Sends raw readable bytes with `writable` device-writable bytes behind them, and runs the device. */
  send(readable: Uint8Array, o: SendOptions = {}): Reply {
    const wlen = o.writable ?? 4;
    this.h.put(READABLE_AT, readable);
    this.h.mem.u8.fill(SENTINEL, WRITABLE_AT, WRITABLE_AT + wlen);
    const descs = [];
    if (o.splitAt !== undefined) {
      descs.push({ addr: READABLE_AT, len: o.splitAt }, { addr: READABLE_AT + o.splitAt, len: readable.length - o.splitAt });
    } else if (readable.length > 0) descs.push({ addr: READABLE_AT, len: readable.length });
    if (wlen > 0) descs.push({ addr: WRITABLE_AT, len: wlen, flags: WRITE });
    descs.forEach((d, i) => this.req.setDesc(i, { ...d, flags: (d.flags ?? 0) | (i + 1 < descs.length ? NEXT : 0), next: i + 1 }));
    const before = this.req.usedIdx;
    this.req.add(0);
    this.drv.kick(VIRTIO_IOMMU_REQUEST_QUEUE);
    this.h.run();
    const out = this.h.get(WRITABLE_AT, wlen);
    // Not completed at all: the device broke (virtio_error).
    if (this.req.usedIdx === before) return { status: undefined, usedLen: -1, out };
    const tail = out[wlen - 4];
    return { status: tail === SENTINEL ? undefined : tail, usedLen: this.req.usedElem(before).len, out };
  }

  attach(domain: number, endpoint: number, flags = 0, reserved = 0): Reply {
    const b = readable(VirtioIommuReqAttach.encode({ type: VIRTIO_IOMMU_T.ATTACH, domain, endpoint, flags, status: 0 }));
    new DataView(b.buffer).setUint32(RESERVED_OFFSET.attach, reserved, true);
    return this.send(b);
  }

  detach(domain: number, endpoint: number): Reply {
    return this.send(readable(VirtioIommuReqDetach.encode({ type: VIRTIO_IOMMU_T.DETACH, domain, endpoint, status: 0 })));
  }

  map(domain: number, virtStart: Addr, virtEnd: Addr, physStart: Addr, flags = 3): Reply {
    return this.send(readable(VirtioIommuReqMap.encode({ type: VIRTIO_IOMMU_T.MAP, domain, virt_start: BigInt(virtStart), virt_end: BigInt(virtEnd), phys_start: BigInt(physStart), flags, status: 0 })));
  }

  unmap(domain: number, virtStart: Addr, virtEnd: Addr, reserved = 0): Reply {
    const b = readable(VirtioIommuReqUnmap.encode({ type: VIRTIO_IOMMU_T.UNMAP, domain, virt_start: BigInt(virtStart), virt_end: BigInt(virtEnd), status: 0 }));
    new DataView(b.buffer).setUint32(RESERVED_OFFSET.unmap, reserved, true);
    return this.send(b);
  }

  probe(endpoint: number, writable: number): Reply {
    return this.send(VirtioIommuReqProbe.encode({ type: VIRTIO_IOMMU_T.PROBE, endpoint }), { writable });
  }

  /** Fault records the device put on the event queue since the last call. */
  faults(): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (; this.eventsSeen !== this.evt.usedIdx; this.eventsSeen++) {
      const e = this.evt.usedElem(this.eventsSeen);
      out.push(this.h.get(EVENTS_AT + e.id * 64, e.len));
    }
    return out;
  }

  postEvents(n: number, len: number): void {
    for (let i = 0; i < n; i++) {
      const d = this.eventsPosted++;
      this.h.mem.u8.fill(SENTINEL, EVENTS_AT + d * 64, EVENTS_AT + d * 64 + len);
      this.evt.setDesc(d, { addr: EVENTS_AT + d * 64, len, flags: WRITE });
      this.evt.add(d);
    }
    this.drv.kick(VIRTIO_IOMMU_EVENT_QUEUE);
  }
}

/** The device-readable part of an encoded request (everything but the tail). */
export const readable = (full: Uint8Array): Uint8Array => full.slice(0, requestReadable(full.length));

export const PAGE = 0x1000;
