// Split virtqueue, driver side (virtio 1.4 §2.7), behaving as Linux's
// drivers/virtio/virtio_ring.c: desc_extra bookkeeping, free list, indirect
// tables, EVENT_IDX suppression, and the DMA API whenever ACCESS_PLATFORM is negotiated.
//
// Ordering: descriptors and ring entries are plain stores; every field the
// other side polls (avail idx/flags, used_event, used idx/flags, avail_event)
// goes through Atomics, whose seq-cst order stands in for virtio_wmb/rmb/mb.
// Atomics use host byte order, which is the ring's little-endian on every Node target.
import { DMA_MAPPING_ERROR, addAddr, hi32, lo32, type Addr } from '../../abi/addr.ts';
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F,
  VIRTQ_MAX_SIZE,
  VIRTQ_USED_F_NO_NOTIFY,
  VirtqAvailHeader,
  VirtqDesc,
  VirtqUsedElem,
  VirtqUsedHeader,
  needEvent,
  splitRing,
} from '../../abi/ring.ts';
import { F, has } from '../../abi/virtio.ts';
import { dmaAllocCoherent, dmaFreeCoherent, dmaMapSingle, dmaMappingError, dmaUnmapSingle } from '../../dma/api.ts';
import { DmaDirection, type CoherentBuffer } from '../../dma/ops.ts';
import type { Device } from '../../kernel/device.ts';
import { PAGE_SIZE } from '../../kernel/page-alloc.ts';
import type { VirtioDevice } from './core.ts';

/** A guest-physical piece of a buffer. */
export interface Segment {
  readonly phys: number;
  readonly len: number;
}

/** Why a buffer was not added, as Linux's errno: no descriptors, a mapping failed (retryable), or the queue is broken. */
export type VqError = 'ENOSPC' | 'ENOMEM' | 'EIO';

/** getBuf's answer; the object is reused, so it is valid until the next getBuf. */
export interface UsedBuf<T> {
  readonly token: T;
  /** Bytes the device says it wrote into the device-writable segments. */
  readonly len: number;
}

export interface VqInfo {
  readonly name: string;
  readonly callback?: (vq: Virtqueue) => void;
}

export interface VirtqueueStats {
  added: number;
  bytesOut: number;
  bytesIn: number;
  kicks: number;
  kicksSuppressed: number;
  interrupts: number;
}

const { NEXT, WRITE, INDIRECT } = VIRTQ_DESC_F;
const DESC = VirtqDesc.off;
const AVAIL = VirtqAvailHeader.off;
const USED = VirtqUsedHeader.off;
const ELEM = VirtqUsedElem.off;
/** Linux puts the used ring on its own cache line (vring_align = SMP_CACHE_BYTES), away from the driver's writes. */
const VRING_ALIGN = 64;

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

function vringLayout(num: number) {
  const avail = splitRing.descBytes(num);
  const used = alignUp(avail + splitRing.availBytes(num), VRING_ALIGN);
  return { avail, used, size: used + splitRing.usedBytes(num) };
}

/** Driver-side copy of what was put in descriptors, so unmapping never trusts memory the device can write. */
class DescExtra {
  readonly addr: Addr[];
  readonly len: Uint32Array;
  readonly flags: Uint16Array;
  /** Chain link; for the ring's own table also the free list. */
  readonly next: Uint16Array;

  constructor(n: number) {
    this.addr = new Array<Addr>(n).fill(0);
    this.len = new Uint32Array(n);
    this.flags = new Uint16Array(n);
    this.next = new Uint16Array(n);
    for (let i = 0; i < n; i++) this.next[i] = i + 1;
  }
}

interface IndirectTable {
  readonly gpa: number;
  readonly extra: DescExtra;
}

/**
 * vring_create_virtqueue: allocates the ring for up to `maxNum` entries,
 * halving the size while memory is short (may_reduce_num). Undefined when no
 * size fits or `maxNum` is not a power of two.
 */
export function createVirtqueue(vdev: VirtioDevice, index: number, maxNum: number, info: VqInfo): Virtqueue | undefined {
  if (maxNum === 0 || maxNum > VIRTQ_MAX_SIZE || (maxNum & (maxNum - 1)) !== 0) {
    vdev.k.log.err(`${vdev.name}: Bad virtqueue length ${maxNum}`);
    return undefined;
  }
  const useDmaApi = has(vdev.features, F.ACCESS_PLATFORM);
  for (let num = maxNum; num >= 1; num >>= 1) {
    const ring = allocRing(vdev, vringLayout(num).size, useDmaApi);
    if (ring) return new Virtqueue(vdev, index, num, ring, useDmaApi, info);
  }
  return undefined;
}

/** vring_alloc_queue: coherent DMA memory with the DMA API, else pages whose bus address is their physical one. */
function allocRing(vdev: VirtioDevice, size: number, useDmaApi: boolean): CoherentBuffer | undefined {
  if (useDmaApi) return dmaAllocCoherent(vdev.dmaDev, size);
  const gpa = vdev.k.pages.alloc(Math.ceil(size / PAGE_SIZE));
  return gpa < 0 ? undefined : { cpuAddr: gpa, dmaAddr: gpa, size };
}

export class Virtqueue<T extends {} = {}> {
  readonly name: string;
  readonly stats: VirtqueueStats = { added: 0, bytesOut: 0, bytesIn: 0, kicks: 0, kicksSuppressed: 0, interrupts: 0 };
  broken = false;
  /** Bus addresses of the three areas, for the transport to program. */
  readonly descAddr: Addr;
  readonly availAddr: Addr;
  readonly usedAddr: Addr;

  private readonly callback: ((vq: Virtqueue) => void) | undefined;
  private readonly dmaDev: Device;
  private readonly indirect: boolean;
  private readonly eventIdx: boolean;
  private readonly dv: DataView;
  private readonly u16: Uint16Array;
  /** Byte offsets of the areas in the RAM buffer. */
  private readonly descOff: number;
  private readonly availOff: number;
  private readonly usedOff: number;
  /** Uint16Array indices of the polled fields. */
  private readonly availIdxI: number;
  private readonly availFlagsI: number;
  private readonly usedEventI: number;
  private readonly usedIdxI: number;
  private readonly usedFlagsI: number;
  private readonly availEventI: number;

  private readonly extra: DescExtra;
  private readonly tokens: (T | undefined)[];
  private readonly indirects: (IndirectTable | undefined)[];
  private freeHead = 0;
  private numFree: number;
  private availIdxShadow = 0;
  private availFlagsShadow = 0;
  private numAdded = 0;
  private lastUsedIdx = 0;
  private usedIdxSeen = 0;
  private readonly usedBuf: { token: T; len: number } = { token: undefined as unknown as T, len: 0 };

  constructor(
    readonly vdev: VirtioDevice,
    readonly index: number,
    readonly num: number,
    private readonly ring: CoherentBuffer,
    readonly useDmaApi: boolean,
    info: VqInfo,
  ) {
    const { mem } = vdev.k;
    const layout = vringLayout(num);
    this.name = info.name;
    this.callback = info.callback;
    this.dmaDev = vdev.dmaDev;
    this.indirect = has(vdev.features, F.INDIRECT_DESC);
    this.eventIdx = has(vdev.features, F.EVENT_IDX);
    this.dv = mem.dv;
    this.u16 = new Uint16Array(mem.u8.buffer);
    this.descOff = mem.off(ring.cpuAddr, ring.size);
    if (this.descOff % 4 !== 0) throw new RangeError(`${vdev.name}: ring at unaligned RAM offset ${this.descOff}`);
    mem.fill(ring.cpuAddr, ring.size);
    this.availOff = this.descOff + layout.avail;
    this.usedOff = this.descOff + layout.used;
    this.descAddr = ring.dmaAddr;
    this.availAddr = addAddr(ring.dmaAddr, layout.avail);
    this.usedAddr = addAddr(ring.dmaAddr, layout.used);
    this.availIdxI = (this.availOff + AVAIL.idx) >> 1;
    this.availFlagsI = (this.availOff + AVAIL.flags) >> 1;
    this.usedEventI = (this.availOff + splitRing.usedEvent(num)) >> 1;
    this.usedIdxI = (this.usedOff + USED.idx) >> 1;
    this.usedFlagsI = (this.usedOff + USED.flags) >> 1;
    this.availEventI = (this.usedOff + splitRing.availEvent(num)) >> 1;
    this.extra = new DescExtra(num);
    this.tokens = new Array<T | undefined>(num).fill(undefined);
    this.indirects = new Array<IndirectTable | undefined>(num).fill(undefined);
    this.numFree = num;
    // A queue nobody is called back for wants no interrupts, as Linux sets NO_INTERRUPT for a NULL callback.
    if (!this.callback) this.disableCb();
  }

  /** Descriptors not in use. */
  get numFreeDescs(): number {
    return this.numFree;
  }

  /**
   * virtqueue_add_sgs: exposes `out` (device-readable) then `ins` (device-writable)
   * as one buffer identified by `token`. Nothing is left mapped on failure.
   */
  add(out: readonly Segment[], ins: readonly Segment[], token: T): VqError | undefined {
    if (this.broken) return 'EIO';
    const total = out.length + ins.length;
    if (total === 0) throw new RangeError(`${this.vdev.name}: ${this.name}: buffer without segments`);
    // The spec bounds a chain, indirect or not, by the queue size.
    if (total > this.num) return 'ENOSPC';
    const head = this.freeHead;
    const table = this.indirect && total > 1 && this.numFree > 0 ? this.allocIndirect(total) : undefined;
    if (table) {
      if (!this.addIndirect(head, table, out, ins)) return 'ENOMEM';
    } else {
      if (this.numFree < total) return 'ENOSPC';
      const next = this.fill(this.descOff, this.extra, head, out, ins);
      if (next < 0) return 'ENOMEM';
      this.freeHead = next;
      this.numFree -= total;
    }
    this.tokens[head] = token;
    this.account(out, ins);
    this.publish(head);
    return undefined;
  }

  /** virtqueue_kick_prepare: does the device want a notification for what was added since the last call? */
  kickPrepare(): boolean {
    const newIdx = this.availIdxShadow;
    const oldIdx = (newIdx - this.numAdded) & 0xffff;
    this.numAdded = 0;
    const needKick = this.eventIdx
      ? needEvent(Atomics.load(this.u16, this.availEventI), newIdx, oldIdx)
      : (Atomics.load(this.u16, this.usedFlagsI) & VIRTQ_USED_F_NO_NOTIFY) === 0;
    if (!needKick) this.stats.kicksSuppressed++;
    return needKick;
  }

  /** virtqueue_notify: false once the queue is broken. */
  notify(): boolean {
    if (this.broken) return false;
    this.vdev.transport.notify(this);
    this.stats.kicks++;
    return true;
  }

  kick(): boolean {
    return this.kickPrepare() ? this.notify() : true;
  }

  /** virtqueue_get_buf: the next used buffer, unmapped and detached; undefined when none (or broken). */
  getBuf(): UsedBuf<T> | undefined {
    if (this.broken || !this.moreUsed()) return undefined;
    const e = this.usedOff + splitRing.usedRing(this.lastUsedIdx & (this.num - 1));
    const id = this.dv.getUint32(e + ELEM.id, true);
    const len = this.dv.getUint32(e + ELEM.len, true);
    if (id >= this.num) return this.badRing(`id ${id} out of range`);
    const token = this.tokens[id];
    if (token === undefined) return this.badRing(`id ${id} is not a head!`);
    this.detach(id);
    this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
    // Ask for an interrupt at the next entry. A plain store here; moreUsed()
    // stores it again with a full barrier before it reloads used.idx, the
    // ordering virtio_store_mb gives Linux on every call.
    if (!(this.availFlagsShadow & VIRTQ_AVAIL_F_NO_INTERRUPT)) this.u16[this.usedEventI] = this.lastUsedIdx;
    this.usedBuf.token = token;
    this.usedBuf.len = len;
    return this.usedBuf;
  }

  /** virtqueue_disable_cb: a hint only; the device may still interrupt. */
  disableCb(): void {
    if (this.availFlagsShadow & VIRTQ_AVAIL_F_NO_INTERRUPT) return;
    this.availFlagsShadow |= VIRTQ_AVAIL_F_NO_INTERRUPT;
    // With EVENT_IDX the flags are ignored. Linux writes used_event = 0; an index
    // already passed is better: it fires only after a full 16-bit wrap.
    if (this.eventIdx) Atomics.store(this.u16, this.usedEventI, (this.lastUsedIdx - 1) & 0xffff);
    else Atomics.store(this.u16, this.availFlagsI, this.availFlagsShadow);
  }

  /** virtqueue_enable_cb_prepare: re-enables callbacks; pass the result to poll() to catch buffers used meanwhile. */
  enableCbPrepare(): number {
    if (this.availFlagsShadow & VIRTQ_AVAIL_F_NO_INTERRUPT) {
      this.availFlagsShadow &= ~VIRTQ_AVAIL_F_NO_INTERRUPT;
      if (!this.eventIdx) Atomics.store(this.u16, this.availFlagsI, this.availFlagsShadow);
    }
    Atomics.store(this.u16, this.usedEventI, this.lastUsedIdx);
    return this.lastUsedIdx;
  }

  /** virtqueue_poll: were buffers used since `lastUsedIdx`? */
  poll(lastUsedIdx: number): boolean {
    if (this.broken) return false;
    return lastUsedIdx !== Atomics.load(this.u16, this.usedIdxI);
  }

  /** virtqueue_enable_cb: false when buffers are pending, so the caller must process again. */
  enableCb(): boolean {
    return !this.poll(this.enableCbPrepare());
  }

  /** vring_interrupt: called by the transport's handler; false when this queue had nothing (IRQ_NONE). */
  interrupt(): boolean {
    if (!this.moreUsed()) return false;
    if (this.broken) return true;
    this.stats.interrupts++;
    this.callback?.(this as Virtqueue);
    return true;
  }

  /** virtqueue_detach_unused_buf: after a reset, hands back buffers the device never used. */
  detachUnusedBuf(): T | undefined {
    for (let i = 0; i < this.num; i++) {
      const token = this.tokens[i];
      if (token === undefined) continue;
      this.detach(i);
      this.availIdxShadow = (this.availIdxShadow - 1) & 0xffff;
      Atomics.store(this.u16, this.availIdxI, this.availIdxShadow);
      return token;
    }
    return undefined;
  }

  /** vring_del_virtqueue: the device must be reset (or the queue disabled) first. Unmaps what is still outstanding. */
  free(): void {
    while (this.detachUnusedBuf() !== undefined);
    if (this.useDmaApi) dmaFreeCoherent(this.dmaDev, this.ring);
    else this.vdev.k.pages.freePagesAt(this.ring.cpuAddr, Math.ceil(this.ring.size / PAGE_SIZE));
  }

  /** used.idx is loaded again only once every entry seen so far is consumed: it never moves back. */
  private moreUsed(): boolean {
    if (this.lastUsedIdx !== this.usedIdxSeen) return true;
    if (!(this.availFlagsShadow & VIRTQ_AVAIL_F_NO_INTERRUPT)) Atomics.store(this.u16, this.usedEventI, this.lastUsedIdx);
    this.usedIdxSeen = Atomics.load(this.u16, this.usedIdxI);
    return this.lastUsedIdx !== this.usedIdxSeen;
  }

  /** BAD_RING: the device broke the protocol; nothing more goes through this queue. */
  private badRing(what: string): undefined {
    this.vdev.k.log.err(`${this.vdev.name}: ${this.name}: ${what}`);
    this.vdev.k.trace.emit('virtqueue_broken', { dev: this.vdev.name, vq: this.name, reason: what });
    this.broken = true;
    return undefined;
  }

  private publish(head: number): void {
    this.dv.setUint16(this.availOff + splitRing.availRing(this.availIdxShadow & (this.num - 1)), head, true);
    this.availIdxShadow = (this.availIdxShadow + 1) & 0xffff;
    Atomics.store(this.u16, this.availIdxI, this.availIdxShadow);
    // 65535 unkicked additions would make old == new ambiguous in kickPrepare.
    if (++this.numAdded === 0xffff) this.kick();
  }

  private account(out: readonly Segment[], ins: readonly Segment[]): void {
    this.stats.added++;
    for (let n = 0; n < out.length; n++) this.stats.bytesOut += out[n]!.len;
    for (let n = 0; n < ins.length; n++) this.stats.bytesIn += ins[n]!.len;
  }

  /**
   * Maps each segment and writes it into the descriptor table at RAM offset
   * `table`, starting at `first` and following `extra.next`. Returns the index
   * after the last descriptor, or -1 after undoing the mappings made.
   */
  private fill(table: number, extra: DescExtra, first: number, out: readonly Segment[], ins: readonly Segment[]): number {
    const nOut = out.length;
    const total = nOut + ins.length;
    let i = first;
    for (let n = 0; n < total; n++) {
      const write = n >= nOut;
      const seg = write ? ins[n - nOut]! : out[n]!;
      const addr = this.map(seg.phys, seg.len, write ? DmaDirection.FROM_DEVICE : DmaDirection.TO_DEVICE);
      if (dmaMappingError(addr)) {
        for (let k = 0, j = first; k < n; k++, j = extra.next[j]!) this.unmap(extra, j);
        return -1;
      }
      const flags = (write ? WRITE : 0) | (n + 1 < total ? NEXT : 0);
      this.setDesc(table, extra, i, addr, seg.len, flags);
      i = extra.next[i]!;
    }
    return i;
  }

  private allocIndirect(total: number): IndirectTable | undefined {
    const gpa = this.vdev.k.slab.kzalloc(total * VirtqDesc.span);
    // Like Linux, a failed table allocation falls back to direct descriptors.
    return gpa < 0 ? undefined : { gpa, extra: new DescExtra(total) };
  }

  /** Fills an indirect table and points one ring descriptor at it; false (all undone) when a mapping fails. */
  private addIndirect(head: number, table: IndirectTable, out: readonly Segment[], ins: readonly Segment[]): boolean {
    const { slab, mem } = this.vdev.k;
    const bytes = table.extra.len.length * VirtqDesc.span;
    const filled = this.fill(mem.off(table.gpa, bytes), table.extra, 0, out, ins) >= 0;
    const tableAddr = filled ? this.map(table.gpa, bytes, DmaDirection.TO_DEVICE) : DMA_MAPPING_ERROR;
    if (dmaMappingError(tableAddr)) {
      if (filled) this.unmapIndirect(table);
      slab.kfree(table.gpa);
      return false;
    }
    this.setDesc(this.descOff, this.extra, head, tableAddr, bytes, INDIRECT);
    this.indirects[head] = table;
    this.freeHead = this.extra.next[head]!;
    this.numFree--;
    return true;
  }

  /** detach_buf_split: unmaps the chain at `head` (from desc_extra only) and returns its descriptors to the free list. */
  private detach(head: number): void {
    const ex = this.extra;
    this.tokens[head] = undefined;
    const table = this.indirects[head];
    if (table) {
      this.unmapIndirect(table);
      this.vdev.k.slab.kfree(table.gpa);
      this.indirects[head] = undefined;
    }
    let i = head;
    let count = 1;
    for (;;) {
      this.unmap(ex, i);
      if (!(ex.flags[i]! & NEXT)) break;
      i = ex.next[i]!;
      count++;
    }
    ex.next[i] = this.freeHead;
    this.freeHead = head;
    this.numFree += count;
  }

  private unmapIndirect(table: IndirectTable): void {
    for (let i = 0; i < table.extra.len.length; i++) this.unmap(table.extra, i);
  }

  private setDesc(table: number, extra: DescExtra, i: number, addr: Addr, len: number, flags: number): void {
    extra.addr[i] = addr;
    extra.len[i] = len;
    extra.flags[i] = flags;
    // next is computed first: a conditional in setUint16's argument makes V8 call the builtin.
    const next = flags & NEXT ? extra.next[i]! : 0;
    const o = table + i * VirtqDesc.span;
    this.dv.setUint32(o + DESC.addr, lo32(addr), true);
    this.dv.setUint32(o + DESC.addr + 4, hi32(addr), true);
    this.dv.setUint32(o + DESC.len, len, true);
    this.dv.setUint16(o + DESC.flags, flags, true);
    this.dv.setUint16(o + DESC.next, next, true);
  }

  /** vring_map_one_sg / vring_map_single. */
  private map(phys: number, len: number, dir: DmaDirection): Addr {
    return this.useDmaApi ? dmaMapSingle(this.dmaDev, phys, len, dir) : phys;
  }

  /** vring_unmap_one_split: direction from the WRITE flag; an indirect table was mapped to the device. */
  private unmap(extra: DescExtra, i: number): void {
    if (!this.useDmaApi) return;
    const dir = extra.flags[i]! & WRITE ? DmaDirection.FROM_DEVICE : DmaDirection.TO_DEVICE;
    dmaUnmapSingle(this.dmaDev, extra.addr[i]!, extra.len[i]!, dir);
  }
}
