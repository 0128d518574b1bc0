// swiotlb, the software bounce-buffer pool (Linux kernel/dma/swiotlb.c): low
// memory cut into 2 KiB slots; a mapping takes up to 128 contiguous slots and
// never crosses a 128-slot segment. Slot search and alignment follow Linux 6.9+;
// as since 5.18, map copies the original in whatever the direction.
import type { GuestSwiotlb } from '../abi/report.ts';
import { hex64 } from '../abi/virtio.ts';
import type { Device } from '../kernel/device.ts';
import type { Kernel } from '../kernel/kernel.ts';
import { PAGE_SIZE } from '../kernel/page-alloc.ts';
import { devWarn, dmaState } from './dev-state.ts';
import { DmaDirection } from './ops.ts';

export const IO_TLB_SHIFT = 11;
export const IO_TLB_SIZE = 1 << IO_TLB_SHIFT;
/** Slots per segment: the largest contiguous mapping. */
export const IO_TLB_SEGSIZE = 128;
export const IO_TLB_DEFAULT_SIZE = 64 << 20;
/** The boot allocation halves the pool on failure down to this (1 MiB). */
export const IO_TLB_MIN_SLABS = (1 << 20) >> IO_TLB_SHIFT;
/** The pool must sit where 32-bit devices reach it. */
export const SWIOTLB_MAX_ADDR = 0xffff_ffff;

/** What the report shows of the pool (abi/report.ts). */
export type SwiotlbStats = GuestSwiotlb;

interface Bounce {
  /** First slot of the allocation, alignment padding included. */
  readonly index: number;
  readonly nslots: number;
  readonly tlbAddr: number;
  readonly orig: number;
  readonly size: number;
}

type SwiotlbKernel = Pick<Kernel, 'mem' | 'pages' | 'log' | 'now'>;

export const nrSlots = (bytes: number): number => Math.ceil(bytes / IO_TLB_SIZE);
const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

export class Swiotlb {
  private readonly end: number;
  /** Free slots from each slot to the end of its segment; 0 means in use (Linux's slots[].list). */
  private readonly list: Uint8Array;
  /** The allocation each slot belongs to (its first slot), -1 when free. */
  private readonly owner: Int32Array;
  private readonly live = new Map<number, Bounce>();
  /** Where the next search starts, so allocations rotate through the pool (area->index). */
  private index = 0;
  private used = 0;
  private hiwater = 0;
  private bounces = 0;
  private bytesBounced = 0;
  private readonly fullWarnings: Ratelimit;

  private constructor(
    private readonly k: SwiotlbKernel,
    readonly start: number,
    readonly nslabs: number,
  ) {
    this.end = start + nslabs * IO_TLB_SIZE;
    this.list = new Uint8Array(nslabs);
    this.owner = new Int32Array(nslabs).fill(-1);
    for (let i = 0; i < nslabs; i++) this.list[i] = IO_TLB_SEGSIZE - (i % IO_TLB_SEGSIZE);
    this.fullWarnings = new Ratelimit(k);
  }

  /**
   * swiotlb_init: takes `nslabs` slots (rounded up to whole segments) from pages
   * below 4 GiB, halving on failure down to 1 MiB as Linux does at boot.
   */
  static init(k: SwiotlbKernel, nslabs: number): Swiotlb | undefined {
    const wanted = alignUp(nslabs, IO_TLB_SEGSIZE);
    for (let n = wanted; ; n = alignUp(n >> 1, IO_TLB_SEGSIZE)) {
      const bytes = n * IO_TLB_SIZE;
      const start = k.pages.alloc(bytes / PAGE_SIZE, SWIOTLB_MAX_ADDR);
      if (start >= 0) {
        k.mem.fill(start, bytes);
        if (n !== wanted) k.log.info(`software IO TLB: SWIOTLB bounce buffer size adjusted ${wanted} -> ${n} slabs`);
        k.log.info(`software IO TLB: mapped [mem ${hex64(BigInt(start))}-${hex64(BigInt(start + bytes - 1))}] (${bytes >> 20}MB)`);
        return new Swiotlb(k, start, n);
      }
      if (n <= IO_TLB_MIN_SLABS) break;
    }
    k.log.warn('software IO TLB: cannot allocate the bounce buffer pool');
    return undefined;
  }

  /** is_swiotlb_buffer */
  contains(addr: number): boolean {
    return addr >= this.start && addr < this.end;
  }

  /** swiotlb_max_mapping_size: a segment, less what min_align_mask may skip. */
  maxMappingSize(dev: Device): number {
    const mask = dmaState(dev).minAlignMask;
    return IO_TLB_SIZE * IO_TLB_SEGSIZE - (mask ? alignUp(mask, IO_TLB_SIZE) : 0);
  }

  /**
   * swiotlb_tbl_map_single: takes slots for [orig, orig + size) and copies the
   * original in, whatever the direction: a device that writes only part of a
   * FROM_DEVICE buffer then leaves the rest as it was, and never sees what an
   * earlier mapping left in the slots. Returns the bounce address, or -1.
   * `allocAlignMask` is the alignment the caller needs (iommu-dma: its granule).
   */
  map(dev: Device, orig: number, size: number, allocAlignMask = 0): number {
    const minAlignMask = dmaState(dev).minAlignMask;
    // The bounce address keeps the original's low bits under min_align_mask.
    const offset = orig & minAlignMask & (allocAlignMask | (IO_TLB_SIZE - 1));
    const allocBytes = alignUp(size + offset, allocAlignMask + 1);
    const index = this.findSlots(orig, allocBytes, allocAlignMask, minAlignMask);
    if (index < 0) {
      if (this.fullWarnings.allow()) {
        devWarn(dev, `swiotlb buffer is full (sz: ${allocBytes} bytes), total ${this.nslabs} (slots), used ${this.used} (slots)`);
      }
      return -1;
    }
    const tlbAddr = this.slotAddr(index) + offset;
    this.live.set(index, { index, nslots: nrSlots(allocBytes), tlbAddr, orig, size });
    this.bounces++;
    this.bounce(tlbAddr, orig, size, DmaDirection.TO_DEVICE);
    return tlbAddr;
  }

  /** swiotlb_tbl_unmap_single: copies the device's writes back unless told to skip, then frees the slots. */
  unmap(dev: Device, tlbAddr: number, size: number, dir: DmaDirection, skipCpuSync = false): void {
    const b = this.lookup(tlbAddr);
    if (!b || b.tlbAddr !== tlbAddr) {
      devWarn(dev, `swiotlb: unmap of ${hex64(BigInt(tlbAddr))}, which is not a mapped bounce buffer`);
      return;
    }
    if (!skipCpuSync) this.syncForCpu(dev, tlbAddr, size, dir);
    this.live.delete(b.index);
    this.releaseSlots(b.index, b.nslots);
  }

  /** swiotlb_sync_single_for_cpu: the device wrote; bring its data to the original. */
  syncForCpu(dev: Device, tlbAddr: number, size: number, dir: DmaDirection): void {
    if (dir === DmaDirection.FROM_DEVICE || dir === DmaDirection.BIDIRECTIONAL) this.syncRange(dev, tlbAddr, size, DmaDirection.FROM_DEVICE);
  }

  /** swiotlb_sync_single_for_device: the CPU wrote; hand its data to the device. */
  syncForDevice(dev: Device, tlbAddr: number, size: number, dir: DmaDirection): void {
    if (dir === DmaDirection.TO_DEVICE || dir === DmaDirection.BIDIRECTIONAL) this.syncRange(dev, tlbAddr, size, DmaDirection.TO_DEVICE);
  }

  stats(): SwiotlbStats {
    const { start, nslabs, used, hiwater, bounces, bytesBounced } = this;
    return { start, nslabs, used, hiwater, bounces, bytesBounced };
  }

  private slotAddr(index: number): number {
    return this.start + index * IO_TLB_SIZE;
  }

  private lookup(tlbAddr: number): Bounce | undefined {
    if (!this.contains(tlbAddr)) return undefined;
    const owner = this.owner[(tlbAddr - this.start) >> IO_TLB_SHIFT]!;
    return owner < 0 ? undefined : this.live.get(owner);
  }

  /** A sync may cover part of a mapping, never more: a longer one is clamped, as Linux warns. */
  private syncRange(dev: Device, tlbAddr: number, size: number, dir: DmaDirection): void {
    const b = this.lookup(tlbAddr);
    if (!b || tlbAddr < b.tlbAddr) return;
    const room = b.tlbAddr + b.size - tlbAddr;
    if (size > room) {
      devWarn(dev, `swiotlb: Buffer overflow detected. Allocation size: ${room}. Mapping size: ${size}.`);
      size = room;
    }
    this.bounce(tlbAddr, b.orig + (tlbAddr - b.tlbAddr), size, dir);
  }

  private bounce(tlbAddr: number, orig: number, size: number, dir: DmaDirection): void {
    const { mem } = this.k;
    if (dir === DmaDirection.TO_DEVICE) mem.bytes(tlbAddr, size).set(mem.bytes(orig, size));
    else mem.bytes(orig, size).set(mem.bytes(tlbAddr, size));
    this.bytesBounced += size;
  }

  /**
   * swiotlb_search_pool_area: next-fit from the rotating index. A candidate must
   * be aligned to `allocAlignMask` (a page for page-sized streaming maps, as
   * swiotlb always did), match the original's bits under min_align_mask above
   * the in-slot offset, and have `nslots` free slots left in its segment.
   */
  private findSlots(orig: number, allocBytes: number, allocAlignMask: number, minAlignMask: number): number {
    const nslots = nrSlots(allocBytes);
    if (nslots > IO_TLB_SEGSIZE || nslots > this.nslabs - this.used) return -1;
    if (allocAlignMask === 0 && minAlignMask === 0 && allocBytes >= PAGE_SIZE) allocAlignMask = PAGE_SIZE - 1;
    const alignMask = allocAlignMask | (IO_TLB_SIZE - 1);
    const origMask = minAlignMask & ~alignMask;
    // Once aligned, step by the alignment rather than slot by slot.
    const stride = (Math.max(alignMask, origMask) >> IO_TLB_SHIFT) + 1;
    let index = this.index;
    for (let checked = 0; checked < this.nslabs; ) {
      const addr = this.slotAddr(index);
      if ((addr & alignMask) !== 0 || (addr & origMask) !== (orig & origMask)) {
        index = this.wrap(index + 1);
        checked++;
        continue;
      }
      if (this.list[index]! >= nslots) {
        this.takeSlots(index, nslots);
        return index;
      }
      index = this.wrap(index + stride);
      checked += stride;
    }
    return -1;
  }

  private takeSlots(index: number, nslots: number): void {
    for (let i = index; i < index + nslots; i++) {
      this.list[i] = 0;
      this.owner[i] = index;
    }
    // Free slots before the allocation now end where it starts.
    this.recountBefore(index, 0);
    this.index = this.wrap(index + nslots);
    this.used += nslots;
    this.hiwater = Math.max(this.hiwater, this.used);
  }

  private releaseSlots(index: number, nslots: number): void {
    const next = index + nslots;
    let count = next % IO_TLB_SEGSIZE !== 0 ? this.list[next]! : 0;
    for (let i = next - 1; i >= index; i--) {
      this.list[i] = ++count;
      this.owner[i] = -1;
    }
    this.recountBefore(index, count);
    this.used -= nslots;
  }

  /** Renumbers the free run ending just before `index` within its segment, continuing from `count`. */
  private recountBefore(index: number, count: number): void {
    for (let i = index - 1; i >= 0 && i % IO_TLB_SEGSIZE !== IO_TLB_SEGSIZE - 1 && this.list[i] !== 0; i--) this.list[i] = ++count;
  }

  private wrap(index: number): number {
    return index >= this.nslabs ? 0 : index;
  }
}

/** dev_warn_ratelimited: at most 10 lines per 5 s of virtual time (DEFAULT_RATELIMIT_*). */
class Ratelimit {
  private windowStart = -Infinity;
  private printed = 0;
  private missed = 0;

  constructor(private readonly k: Pick<Kernel, 'log' | 'now'>) {}

  allow(): boolean {
    const now = this.k.now();
    if (now - this.windowStart >= 5e9) {
      if (this.missed > 0) this.k.log.warn(`swiotlb_tbl_map_single: ${this.missed} callbacks suppressed`);
      this.windowStart = now;
      this.printed = 0;
      this.missed = 0;
    }
    if (this.printed < 10) {
      this.printed++;
      return true;
    }
    this.missed++;
    return false;
  }
}
