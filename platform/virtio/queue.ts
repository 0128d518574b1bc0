// Device side of a split virtqueue (virtio 1.4 §2.7), in the manner of rust-vmm's
// virtio-queue: ring state, one chain walker that checks every descriptor rule
// (as QEMU's virtqueue_pop and vhost_get_vq_desc do), the used ring and notification suppression.
import { type Addr, addAddr, fromHiLo, hi32, lo32 } from '../../abi/addr.ts';
import { copyBytes } from '../../abi/bytes.ts';
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F, VIRTQ_MAX_SIZE, VIRTQ_USED_F_NO_NOTIFY, VirtqAvailHeader, VirtqDesc, VirtqUsedElem, VirtqUsedHeader, needEvent, splitRing } from '../../abi/ring.ts';
import { type AddressSpace, DMA_READ, DMA_WRITE } from '../address-space.ts';
import type { GuestMemory } from '../memory.ts';

/** An address space promises contiguity only within one 4 KiB page, the smallest IOMMU granule. */
const PAGE_SHIFT = 12;
const PAGE = 1 << PAGE_SHIFT;
const TWO_64 = 1n << 64n;
/** A chain's total length stays below 2^32 (§2.7.5); rust-vmm likewise stops where a u32 sum would overflow. */
const MAX_CHAIN_BYTES = 2 ** 32;
/** Word copies pay from here, and set() takes over at its own threshold. */
const WORDS_FROM = 8;
const WORDS_BELOW = 512;
/** rust-vmm's bound on an indirect table: len / 16 <= u16::MAX. */
const MAX_INDIRECT_ENTRIES = 0xffff;

const D = VirtqDesc.off;
const DESC = VirtqDesc.span;

/** Why a queue stopped: each a rule of §2.7 that the driver broke, named after QEMU's and vhost's messages. */
export type QueueErrorReason =
  | 'AVAIL_IDX_OUT_OF_RANGE'
  | 'HEAD_OUT_OF_RANGE'
  | 'NEXT_OUT_OF_RANGE'
  | 'LOOPED_DESCRIPTOR'
  | 'INDIRECT_NOT_NEGOTIATED'
  | 'INDIRECT_TABLE_SIZE'
  | 'NESTED_INDIRECT'
  | 'INDIRECT_WITH_NEXT'
  | 'INCORRECT_ORDER'
  | 'CHAIN_TOO_LONG'
  | 'UNREACHABLE_BUFFER'
  | 'UNREACHABLE_RING'
  | 'MISALIGNED_RING'
  | 'BAD_QUEUE_SIZE';

/** A driver error found by the device. Returned, never thrown: the device layer turns it into DEVICE_NEEDS_RESET. */
export class QueueError {
  constructor(
    readonly reason: QueueErrorReason,
    readonly detail: string,
  ) {}
}

export interface Segment {
  readonly addr: Addr;
  readonly len: number;
}

/** A segment as the walker found it: `off` is where it lies in guest RAM when one translation covers it, else -1. */
export interface WalkedSegment extends Segment {
  readonly off: number;
}

interface MutableSegment {
  addr: Addr;
  len: number;
  off: number;
}

/**
 * Calls visit(bufferOffset, pos, n) for each page-bounded run of [addr, addr + len)
 * as the space resolves it. False at the first unreachable run, or if the range wraps past 2^64.
 */
export function eachPage(space: AddressSpace, addr: Addr, len: number, access: number, visit?: (off: number, pos: number, n: number) => void): boolean {
  // Most buffers sit inside one page: one translation, no splitting.
  if (typeof addr === 'number' && (lo32(addr) & (PAGE - 1)) + len <= PAGE) {
    const off = space.resolve(addr, len, access);
    if (off < 0) return false;
    visit?.(off, 0, len);
    return true;
  }
  if (typeof addr === 'bigint' && addr + BigInt(len) > TWO_64) return false;
  for (let pos = 0; pos < len; ) {
    const a = pos === 0 ? addr : addAddr(addr, pos);
    const n = Math.min(len - pos, PAGE - (lo32(a) & (PAGE - 1)));
    const off = space.resolve(a, n, access);
    if (off < 0) return false;
    visit?.(off, pos, n);
    pos += n;
  }
  return true;
}

/** A device's DMA port: guest RAM reached only through its endpoint's address space, with byte counters for the report. */
export class DeviceDma {
  /** Payload bytes moved; ring accesses are not counted. */
  readBytes = 0;
  writtenBytes = 0;
  readonly u8: Uint8Array;
  readonly dv: DataView;
  /**
   * Copies of a request's size go four bytes at a time when both sides are
   * aligned: guest RAM as words, and the word view of the device buffer
   * copied last (a device reuses its request and status buffers).
   */
  private readonly ramWords: Int32Array;
  private wordsOf: Uint8Array | undefined;
  private wordsAt = 0;
  private words: Int32Array<ArrayBufferLike> = new Int32Array(0);

  constructor(
    mem: GuestMemory,
    readonly space: AddressSpace,
  ) {
    this.u8 = mem.u8;
    this.dv = mem.dv;
    this.ramWords = new Int32Array(mem.buffer, 0, mem.buffer.byteLength >> 2);
  }

  /**
   * Copies guest memory at `addr` into buf[pos, pos + len) (DMA_READ), or that
   * part of `buf` into guest memory (DMA_WRITE); false if a byte is unreachable.
   */
  transfer(addr: Addr, buf: Uint8Array, access: number, pos = 0, len = buf.length - pos): boolean {
    // Most transfers (request headers, status bytes) sit in one page: translate once, copy, no closure.
    if (typeof addr === 'number' && (lo32(addr) & (PAGE - 1)) + len <= PAGE) {
      const off = this.space.resolve(addr, len, access);
      if (off < 0) return false;
      this.copy(off, pos, len, buf, access);
      return true;
    }
    return eachPage(this.space, addr, len, access, (off, at, n) => this.copy(off, pos + at, n, buf, access));
  }

  /** Moves bytes at a RAM offset already resolved for `access`. */
  copy(off: number, pos: number, n: number, buf: Uint8Array, access: number): void {
    if (access === DMA_READ) this.readBytes += n;
    else this.writtenBytes += n;
    if (n >= WORDS_FROM && n < WORDS_BELOW) {
      if (buf !== this.wordsOf) this.takeWords(buf);
      const at = this.wordsAt + pos;
      if (((off | at | n) & 3) === 0) {
        const ram = this.ramWords;
        const own = this.words;
        const r = off >> 2;
        const b = at >> 2;
        if (access === DMA_READ) for (let i = 0; i < n >> 2; i++) own[b + i] = ram[r + i]!;
        else for (let i = 0; i < n >> 2; i++) ram[r + i] = own[b + i]!;
        return;
      }
    }
    if (access === DMA_READ) copyBytes(buf, pos, this.u8, off, n);
    else copyBytes(this.u8, off, buf, pos, n);
  }

  /** The word view of a device's buffer; byteOffset and buffer are slow getters, so it is kept for the next copy. */
  private takeWords(buf: Uint8Array): void {
    this.wordsOf = buf;
    this.wordsAt = buf.byteOffset;
    this.words = new Int32Array(buf.buffer, 0, buf.buffer.byteLength >> 2);
  }
}

/**
 * A ring area the device reads or writes field by field. It is resolved once,
 * page by page, to byte offsets in guest RAM; fields are naturally aligned and
 * so never straddle a page.
 */
class MappedArea {
  private readonly pages: number[] = [];
  private start = 0;
  /** Offset of byte 0 when the pages lie one after another in RAM (always without an IOMMU), else -1. */
  private flat = -1;

  /** False if any byte of the area is unreachable. */
  map(space: AddressSpace, addr: Addr, bytes: number, access: number): boolean {
    this.start = lo32(addr) & (PAGE - 1);
    this.pages.length = 0;
    const ok = eachPage(space, addr, bytes, access, (off, pos) => {
      this.pages.push(off - ((this.start + pos) & (PAGE - 1)));
    });
    const pages = this.pages;
    let flat = ok;
    for (let i = 1; i < pages.length && flat; i++) flat = pages[i] === pages[i - 1]! + PAGE;
    this.flat = flat ? pages[0]! + this.start : -1;
    return ok;
  }

  /** Offset in guest RAM of byte `x` of the area. */
  at(x: number): number {
    if (this.flat >= 0) return this.flat + x;
    const p = this.start + x;
    return this.pages[p >>> PAGE_SHIFT]! + (p & (PAGE - 1));
  }
}

/**
 * A popped buffer: its device-readable then device-writable segments. It and
 * its segments are valid until it is pushed. The walker resolved each
 * single-page segment once, as QEMU maps a descriptor once at pop; reads and
 * writes reuse that while the address space is unchanged, and translate
 * again (and may fault) once a mapping went away.
 */
export class DescriptorChain {
  head = 0;
  readonly readable: WalkedSegment[] = [];
  readonly writable: WalkedSegment[] = [];
  /** The space's generation when the walker resolved the segments. */
  generation = 0;
  /** Segment objects kept across reuse, so that a pop allocates nothing per descriptor once warm. */
  private readonly pool: MutableSegment[] = [];
  private pooled = 0;
  readableBytes = 0;
  writableBytes = 0;
  /** Bytes the device wrote into the writable part: the exact used length. */
  written = 0;
  /** A DMA access failed after the pop (the mapping went away), so the request moved only part of its data. */
  faulted = false;

  constructor(private readonly dma: DeviceDma) {}

  /** Copies `len` readable bytes from stream position `pos` into `dst`; returns the count (short at the end or on a fault). */
  read(pos: number, dst: Uint8Array, len = dst.length): number {
    return this.copy(this.readable, pos, dst, len, DMA_READ);
  }

  /** Copies `src` into the writable part at stream position `pos`; returns the count (short at the end or on a fault). */
  write(pos: number, src: Uint8Array): number {
    const n = this.copy(this.writable, pos, src, src.length, DMA_WRITE);
    this.written += n;
    return n;
  }

  /** Empties the chain for reuse by the next pop. */
  clear(head: number): void {
    this.head = head;
    // pop() is V8's fast path; setting length is a runtime call on every request.
    while (this.readable.length > 0) this.readable.pop();
    while (this.writable.length > 0) this.writable.pop();
    this.pooled = 0;
    this.readableBytes = this.writableBytes = this.written = 0;
    this.faulted = false;
  }

  /** The walker's only way to add a buffer; its offset comes later, from the reachability check. */
  add(addr: Addr, len: number, writable: boolean): void {
    const seg = this.pool[this.pooled] ?? (this.pool[this.pooled] = { addr, len, off: -1 });
    this.pooled++;
    seg.addr = addr;
    seg.len = len;
    seg.off = -1;
    if (writable) {
      this.writable.push(seg);
      this.writableBytes += len;
    } else {
      this.readable.push(seg);
      this.readableBytes += len;
    }
  }

  /**
   * The walker's last check: every byte reachable through `space`, readable
   * segments for DMA_READ and writable ones for DMA_WRITE. Keeps the offset of
   * each segment one translation covers; returns the first unreachable one.
   */
  resolve(space: AddressSpace): Segment | undefined {
    this.generation = space.generation;
    // The pool holds the segments in walk order, the readable ones first.
    const nRead = this.readable.length;
    for (let i = 0; i < this.pooled; i++) {
      const s = this.pool[i]!;
      const access = i < nRead ? DMA_READ : DMA_WRITE;
      const addr = s.addr;
      if (typeof addr === 'number' && (lo32(addr) & (PAGE - 1)) + s.len <= PAGE) {
        s.off = space.resolve(addr, s.len, access);
        if (s.off >= 0) continue;
      } else if (eachPage(space, addr, s.len, access)) continue;
      return s;
    }
    return undefined;
  }

  private copy(segs: readonly WalkedSegment[], pos: number, buf: Uint8Array, len: number, access: number): number {
    const dma = this.dma;
    const resolved = this.generation === dma.space.generation;
    let done = 0;
    for (let i = 0; i < segs.length; i++) {
      const s = segs[i]!;
      if (done === len) break;
      if (pos >= s.len) {
        pos -= s.len;
        continue;
      }
      const n = Math.min(s.len - pos, len - done);
      if (resolved && s.off >= 0) dma.copy(s.off + pos, done, n, buf, access);
      else if (!dma.transfer(pos === 0 ? s.addr : addAddr(s.addr, pos), buf, access, done, n)) {
        this.faulted = true;
        break;
      }
      done += n;
      pos = 0;
    }
    return done;
  }
}

export type RingArea = 'desc' | 'driver' | 'device';
const RING_ALIGN: Readonly<Record<RingArea, number>> = { desc: splitRing.descAlign, driver: splitRing.availAlign, device: splitRing.usedAlign };

export class SplitQueue {
  size: number;
  ready = false;
  readonly addr: Record<RingArea, Addr> = { desc: 0, driver: 0, device: 0 };
  /** Free-running u16 indices: the next avail entry to pop and the next used entry to fill. */
  nextAvail = 0;
  /** The avail.idx last read: entries up to it are known to be there. */
  private shadowAvailIdx = 0;
  nextUsed = 0;
  /** Negotiated ring features, set by the device when features are final. */
  eventIdx = false;
  indirectDesc = false;
  popped = 0;
  used = 0;

  /** used.idx when the device last decided whether to interrupt (QEMU's signalled_used). */
  private signalledUsed = 0;
  private readonly desc = new MappedArea();
  private readonly avail = new MappedArea();
  private readonly usedRing = new MappedArea();
  private mappedGeneration = -1;
  /** A private copy of the indirect table being walked: the driver cannot change it under the walker. */
  private table = new Uint8Array(0);
  private tableView = new DataView(this.table.buffer);
  private readonly spare: DescriptorChain[] = [];

  constructor(
    readonly index: number,
    readonly maxSize: number,
    private readonly dma: DeviceDma,
  ) {
    if (!isQueueSize(maxSize, VIRTQ_MAX_SIZE)) throw new Error(`queue ${index}: max size ${maxSize} is not a power of two <= ${VIRTQ_MAX_SIZE}`);
    this.size = maxSize;
  }

  /** Back to the state after device reset: size reads the maximum, nothing is mapped. */
  reset(): void {
    this.size = this.maxSize;
    this.ready = false;
    this.addr.desc = this.addr.driver = this.addr.device = 0;
    this.nextAvail = this.nextUsed = this.signalledUsed = this.shadowAvailIdx = 0;
    this.eventIdx = this.indirectDesc = false;
    this.mappedGeneration = -1;
  }

  /** The driver's queue size write: a power of two up to the maximum, and only while the queue is disabled. */
  setSize(n: number): void {
    if (!this.ready && isQueueSize(n, this.maxSize)) this.size = n;
  }

  /** One 32-bit half of a ring address, as both transports program them; ignored while the queue is enabled. */
  setAddressWord(area: RingArea, high: boolean, word: number): void {
    if (this.ready) return;
    const a = this.addr[area];
    this.addr[area] = high ? fromHiLo(word >>> 0, lo32(a)) : fromHiLo(hi32(a), word >>> 0);
  }

  addressWord(area: RingArea, high: boolean): number {
    const a = this.addr[area];
    return high ? hi32(a) : lo32(a);
  }

  /** QueueReady / queue_enable = 1. The areas must be aligned (§2.7: desc 16, avail 2, used 4). */
  enable(): QueueError | undefined {
    if (this.ready) return undefined;
    if (!isQueueSize(this.size, this.maxSize)) return new QueueError('BAD_QUEUE_SIZE', `queue ${this.index}: size ${this.size}`);
    for (const area of ['desc', 'driver', 'device'] as const) {
      if (lo32(this.addr[area]) % RING_ALIGN[area] !== 0) {
        return new QueueError('MISALIGNED_RING', `queue ${this.index}: ${area} area 0x${this.addr[area].toString(16)} not ${RING_ALIGN[area]}-byte aligned`);
      }
    }
    this.ready = true;
    this.mappedGeneration = -1;
    this.shadowAvailIdx = this.nextAvail; // the rings may be new: read avail.idx again
    return undefined;
  }

  disable(): void {
    this.ready = false;
  }

  /** Takes the next available chain: undefined when the ring is empty, a QueueError when the driver broke a rule. */
  pop(): DescriptorChain | QueueError | undefined {
    const bad = this.mapRings();
    if (bad) return bad;
    // avail.idx is read again only once the entries seen so far are taken, as QEMU's shadow_avail_idx.
    if (this.shadowAvailIdx === this.nextAvail) {
      const availIdx = this.dma.dv.getUint16(this.avail.at(VirtqAvailHeader.off.idx), true);
      const pending = (availIdx - this.nextAvail) & 0xffff;
      if (pending > this.size) return new QueueError('AVAIL_IDX_OUT_OF_RANGE', `queue ${this.index}: avail idx moved from ${this.nextAvail} to ${availIdx}`);
      if (pending === 0) return undefined;
      this.shadowAvailIdx = availIdx;
    }
    const head = this.dma.dv.getUint16(this.avail.at(splitRing.availRing(this.nextAvail & (this.size - 1))), true);
    const chain = this.spare.pop() ?? new DescriptorChain(this.dma);
    chain.clear(head);
    const err = this.walk(chain);
    if (err) {
      this.spare.push(chain);
      return err;
    }
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    this.popped++;
    return chain;
  }

  /** Returns a chain to the driver: the used element first, then used.idx (§2.7.8). */
  push(chain: DescriptorChain, usedLen = chain.written): QueueError | undefined {
    const bad = this.mapRings();
    if (bad) return bad;
    const dv = this.dma.dv;
    const elem = splitRing.usedRing(this.nextUsed & (this.size - 1));
    dv.setUint32(this.usedRing.at(elem + VirtqUsedElem.off.id), chain.head, true);
    dv.setUint32(this.usedRing.at(elem + VirtqUsedElem.off.len), usedLen, true);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    dv.setUint16(this.usedRing.at(VirtqUsedHeader.off.idx), this.nextUsed, true);
    this.used++;
    this.spare.push(chain);
    return undefined;
  }

  /**
   * Whether the buffers used since the last call deserve an interrupt: used_event
   * with EVENT_IDX (vring_need_event), else the driver's VIRTQ_AVAIL_F_NO_INTERRUPT.
   */
  needsInterrupt(): boolean {
    const old = this.signalledUsed;
    this.signalledUsed = this.nextUsed;
    if (old === this.nextUsed || this.mapRings()) return false;
    const dv = this.dma.dv;
    if (this.eventIdx) return needEvent(dv.getUint16(this.avail.at(splitRing.usedEvent(this.size)), true), this.nextUsed, old);
    return (dv.getUint16(this.avail.at(VirtqAvailHeader.off.flags), true) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** The device is about to poll the ring: kicks are not needed (VIRTQ_USED_F_NO_NOTIFY; with EVENT_IDX avail_event just stays behind). */
  disableNotification(): void {
    if (!this.eventIdx && !this.mapRings()) this.dma.dv.setUint16(this.usedRing.at(VirtqUsedHeader.off.flags), VIRTQ_USED_F_NO_NOTIFY, true);
  }

  /** The device stops polling: ask for a kick on the next buffer. True if buffers arrived meanwhile (re-check after re-enabling, §2.7.10). */
  enableNotification(): boolean {
    if (this.mapRings()) return false;
    const dv = this.dma.dv;
    if (this.eventIdx) dv.setUint16(this.usedRing.at(splitRing.availEvent(this.size)), this.nextAvail, true);
    else dv.setUint16(this.usedRing.at(VirtqUsedHeader.off.flags), 0, true);
    return dv.getUint16(this.avail.at(VirtqAvailHeader.off.idx), true) !== this.nextAvail;
  }

  /** Resolves the three areas once, and again whenever the space's translations change. */
  private mapRings(): QueueError | undefined {
    const space = this.dma.space;
    if (this.mappedGeneration === space.generation) return undefined;
    const ok =
      this.desc.map(space, this.addr.desc, splitRing.descBytes(this.size), DMA_READ) &&
      this.avail.map(space, this.addr.driver, splitRing.availBytes(this.size), DMA_READ) &&
      this.usedRing.map(space, this.addr.device, splitRing.usedBytes(this.size), DMA_WRITE);
    if (!ok) return new QueueError('UNREACHABLE_RING', `queue ${this.index}: ring areas not reachable by the device`);
    this.mappedGeneration = space.generation;
    return undefined;
  }

  /**
   * The one place descriptor rules are checked (§2.7.5, §2.7.5.3). Structure
   * first: indices, loops, flags, order and total length; then that every
   * buffer is reachable through the device's address space.
   */
  private walk(chain: DescriptorChain): QueueError | undefined {
    const q = this.index;
    if (chain.head >= this.size) return new QueueError('HEAD_OUT_OF_RANGE', `queue ${q}: head ${chain.head} >= size ${this.size}`);
    let dv = this.dma.dv;
    let indirect = false;
    let tableSize = this.size;
    let i = chain.head;
    let hops = 0;
    let total = 0;
    for (;;) {
      // More hops than entries means a loop (QEMU "Looped descriptor"); it is never truncated.
      if (++hops > tableSize) return new QueueError('LOOPED_DESCRIPTOR', `queue ${q}: chain from head ${chain.head} longer than ${tableSize} descriptors`);
      const off = indirect ? i * DESC : this.desc.at(i * DESC);
      const addr = fromHiLo(dv.getUint32(off + D.addr + 4, true), dv.getUint32(off + D.addr, true));
      const len = dv.getUint32(off + D.len, true);
      const flags = dv.getUint16(off + D.flags, true);
      if (flags & VIRTQ_DESC_F.INDIRECT) {
        if (!this.indirectDesc) return new QueueError('INDIRECT_NOT_NEGOTIATED', `queue ${q}: INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC`);
        if (indirect) return new QueueError('NESTED_INDIRECT', `queue ${q}: INDIRECT descriptor inside an indirect table`);
        if (flags & VIRTQ_DESC_F.NEXT) return new QueueError('INDIRECT_WITH_NEXT', `queue ${q}: INDIRECT and NEXT set together`);
        if (len === 0 || len % DESC !== 0 || len / DESC > MAX_INDIRECT_ENTRIES) return new QueueError('INDIRECT_TABLE_SIZE', `queue ${q}: indirect table of ${len} bytes`);
        const table = this.loadTable(addr, len);
        if (!table) return new QueueError('UNREACHABLE_BUFFER', `queue ${q}: indirect table at 0x${addr.toString(16)} not reachable`);
        dv = table;
        indirect = true;
        tableSize = len / DESC;
        i = 0;
        hops = 0;
        continue;
      }
      const writable = (flags & VIRTQ_DESC_F.WRITE) !== 0;
      if (!writable && chain.writable.length > 0) return new QueueError('INCORRECT_ORDER', `queue ${q}: device-readable descriptor after a device-writable one`);
      total += len;
      if (total >= MAX_CHAIN_BYTES) return new QueueError('CHAIN_TOO_LONG', `queue ${q}: chain from head ${chain.head} holds 2^32 bytes or more`);
      chain.add(addr, len, writable);
      if (!(flags & VIRTQ_DESC_F.NEXT)) break;
      i = dv.getUint16(off + D.next, true);
      if (i >= tableSize) return new QueueError('NEXT_OUT_OF_RANGE', `queue ${q}: next ${i} >= ${indirect ? 'indirect table size' : 'queue size'} ${tableSize}`);
    }
    const bad = chain.resolve(this.dma.space);
    return bad === undefined ? undefined : new QueueError('UNREACHABLE_BUFFER', `queue ${q}: buffer 0x${bad.addr.toString(16)}+${bad.len} not reachable`);
  }

  /** Copies an indirect table out of guest memory; undefined if it is unreachable. */
  private loadTable(addr: Addr, len: number): DataView | undefined {
    if (this.table.length < len) {
      this.table = new Uint8Array(Math.max(len, 2 * this.table.length));
      this.tableView = new DataView(this.table.buffer);
    }
    const table = this.table;
    const u8 = this.dma.u8;
    return eachPage(this.dma.space, addr, len, DMA_READ, (off, pos, n) => copyBytes(table, pos, u8, off, n)) ? this.tableView : undefined;
  }
}

function isQueueSize(n: number, max: number): boolean {
  return Number.isInteger(n) && n > 0 && n <= max && (n & (n - 1)) === 0;
}
