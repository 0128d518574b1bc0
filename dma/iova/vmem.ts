// vmem (Bonwick & Adams, USENIX 2001) as an IOVA allocator (strategy `vmem`):
// one arena of segments covering the whole pfn space, power-of-two freelists
// with a bitmap of the non-empty ones, a hash of allocated segments, and
// quantum caches (per-CPU magazines, dma/iova/magazines.ts) for small sizes.
//
// Invariants:
//   - the segments tile [startPfn, IOVA_MAX_PFN] in address order, without gap
//     or overlap, on a circular doubly linked list through the arena sentinel;
//   - a segment is free, allocated or reserved, and no two free segments are
//     neighbours (free coalesces);
//   - a free segment of n pfns is on freelist floor(log2 n), and bit k of the
//     freemap is set exactly when freelist k is non-empty;
//   - every allocated segment is in the hash under its first pfn, and only
//     those: reserved segments are not (nothing frees them);
//   - a quantum cache of class c holds first pfns of allocated segments of
//     exactly c + 1 pfns, size-aligned (what allocFast handed out).
//
// Allocation: sizes up to qcacheMax come from the quantum caches when they
// can. Otherwise the arena looks at the head of every non-empty list from
// floor(log2 size) upwards, smallest list first, and takes the first head
// that fits: size, alignment and limit are checked on that one segment. Where
// instant-fit proper would start at the first list whose every member fits
// (size + align - 1 pfns for a size-aligned request), starting one or two
// lists lower reuses a tight hole at the same cost. Only if no head fits (the
// limit or the alignment rules them out) does a constrained search walk every
// member of those lists, as vmem_xalloc does for constrained requests.
//
// Placement is bottom-up: the lowest fitting pfn of the segment chosen. The
// untouched space then stays one segment at the top whose base lies under
// every limit that still has room, so a limited request finds it at the head
// of its list; top-down placement would split that segment at every limit.
//
// Complexity: alloc O(1) from a quantum cache, O(L) list heads (L = 53 lists)
// from the arena, O(free segments) in the constrained search. free O(1): one
// hash lookup, coalescing with at most two neighbours, one freelist insert.
// reserve flushes the quantum caches and walks the segments, O(n), as
// Linux's walks its tree; an allocated segment it covers turns reserved, whole,
// when freed.
import type { IovaStats } from '../../abi/report.ts';
import { IOVA_MAX_PFN, IovaFastCounters, roundupPow2, type IovaDomain, type IovaDomainParams } from '../iova.ts';
import { IOVA_MAG_BYTES, IovaMagazineCaches } from './magazines.ts';

/** Sizes 1..8 pfns have quantum caches: one class per size, no rounding (vmem's qcache_max). */
export const VMEM_QCACHE_MAX = 8;
/** Freelists 0..52: a segment is at most 2^53 - 2 pfns. */
const VMEM_FREELISTS = 53;
const VMEM_SEG_BYTES = 64;
const VMEM_HASH_BUCKET_BYTES = 8;
const VMEM_HASH_MIN_BITS = 4;
/** The arena itself: 53 list heads and the freemap. */
const VMEM_ARENA_BYTES = VMEM_FREELISTS * 16 + 64;

const FREE = 0;
const ALLOC = 1;
const RESERVED = 2;
const SENTINEL = 3;

class VmemSeg {
  base = 0;
  size = 0;
  kind = FREE;
  /** An allocated segment under a later reservation: it turns reserved when freed instead of free. */
  pinned = false;
  /** The freelist it is on while free. */
  flist = -1;
  prev: VmemSeg = this;
  next: VmemSeg = this;
  /** Freelist links; fnext also chains recycled segments. */
  fprev: VmemSeg | null = null;
  fnext: VmemSeg | null = null;
  /** The hash chain while allocated. */
  hnext: VmemSeg | null = null;
}

/**
 * Allocated segments by first pfn: a power of two of chained buckets,
 * doubled when they average more than two segments and halved below one in
 * eight, so a lookup walks a short chain (vmem rescales its hash from a
 * timer instead). A JS Map costs several times as much here.
 */
class SegHash {
  private buckets: (VmemSeg | null)[] = [];
  private shift = 0;
  size = 0;

  constructor() {
    this.rehash(VMEM_HASH_MIN_BITS);
  }

  get bucketCount(): number {
    return this.buckets.length;
  }

  insert(seg: VmemSeg): void {
    const b = this.index(seg.base);
    seg.hnext = this.buckets[b]!;
    this.buckets[b] = seg;
    if (++this.size > 2 * this.buckets.length) this.rehash(32 - this.shift + 1);
  }

  /** Unhashes and returns the allocated segment starting at `pfn`, or null. */
  remove(pfn: number): VmemSeg | null {
    const b = this.index(pfn);
    let prev: VmemSeg | null = null;
    for (let seg = this.buckets[b]!; seg; prev = seg, seg = seg.hnext!) {
      if (seg.base !== pfn) continue;
      if (prev) prev.hnext = seg.hnext;
      else this.buckets[b] = seg.hnext;
      seg.hnext = null;
      const bits = 32 - this.shift;
      if (--this.size < this.buckets.length / 8 && bits > VMEM_HASH_MIN_BITS) this.rehash(bits - 1);
      return seg;
    }
    return null;
  }

  find(pfn: number): VmemSeg | null {
    let seg = this.buckets[this.index(pfn)]!;
    while (seg && seg.base !== pfn) seg = seg.hnext!;
    return seg;
  }

  /** Multiplicative hashing of both 32-bit halves of the pfn: the top `bits` bits of the product. */
  private index(pfn: number): number {
    const mixed = (pfn >>> 0) ^ Math.imul(Math.floor(pfn / 2 ** 32), 0x85ebca6b);
    return Math.imul(mixed, 0x9e3779b1) >>> this.shift;
  }

  private rehash(bits: number): void {
    const old = this.buckets;
    this.buckets = new Array<VmemSeg | null>(2 ** bits).fill(null);
    this.shift = 32 - bits;
    for (let head of old) {
      while (head) {
        const seg = head;
        head = seg.hnext;
        const b = this.index(seg.base);
        seg.hnext = this.buckets[b]!;
        this.buckets[b] = seg;
      }
    }
  }
}

/** roundupPow2 without a pow() call for the sizes the DMA API asks for. */
const alignOf = (size: number): number => (size <= 1 ? 1 : size <= 2 ** 30 ? 1 << (32 - Math.clz32(size - 1)) : roundupPow2(size));

/** floor(log2 n), exact for 1 <= n <= 2^53. */
export function floorLog2(n: number): number {
  return n < 2 ** 32 ? 31 - Math.clz32(n) : 63 - Math.clz32(Math.floor(n / 2 ** 32));
}

const lowestBit = (word: number): number => 31 - Math.clz32(word & -word);

/** The lowest pfn of `seg` where `size` pfns aligned to `align` end at or below `limit`; -1 if none. */
function fitIn(seg: VmemSeg, size: number, align: number, limit: number): number {
  const pfn = align === 1 ? seg.base : Math.ceil(seg.base / align) * align;
  return pfn + size - 1 <= Math.min(seg.base + seg.size - 1, limit) ? pfn : -1;
}

export class VmemIovaDomain implements IovaDomain {
  readonly startPfn: number;
  /** The address list's head and tail: never free, so coalescing stops at it. */
  private readonly arena = new VmemSeg();
  private readonly freelists: (VmemSeg | null)[] = new Array<VmemSeg | null>(VMEM_FREELISTS).fill(null);
  /** Freelists 0..31 and 32..52, a bit each. */
  private freemapLo = 0;
  private freemapHi = 0;
  private readonly hash = new SegHash();
  /** Recycled segments, chained through fnext: the steady state allocates none. */
  private spare: VmemSeg | null = null;
  private segments = 0;
  private reservedSegs = 0;
  private readonly qcache: IovaMagazineCaches;
  private readonly counters = new IovaFastCounters();

  constructor(
    params: IovaDomainParams,
    readonly qcacheMax = VMEM_QCACHE_MAX,
  ) {
    this.startPfn = params.startPfn;
    this.arena.kind = SENTINEL;
    const all = this.newSeg(params.startPfn, IOVA_MAX_PFN - params.startPfn + 1);
    this.linkAfter(all, this.arena);
    this.listFree(all);
    this.qcache = new IovaMagazineCaches(params, qcacheMax, (pfn) => this.free(pfn));
  }

  alloc(size: number, limitPfn: number, sizeAligned: boolean): number {
    return this.xalloc(size, limitPfn, sizeAligned ? alignOf(size) : 1);
  }

  /** The hash gives the segment; `size` is not needed. */
  free(pfn: number, _size?: number): void {
    const seg = this.hash.remove(pfn);
    if (!seg) return;
    if (seg.pinned) {
      seg.pinned = false;
      seg.kind = RESERVED;
      this.reservedSegs++;
      return;
    }
    seg.kind = FREE;
    this.coalesce(seg);
  }

  /** Carves the free parts of [pfnLo, pfnHi] out as reserved segments; allocated ones turn reserved when freed. */
  reserve(pfnLo: number, pfnHi: number): boolean {
    if (pfnLo > pfnHi || pfnLo < 0 || pfnHi > IOVA_MAX_PFN) return false;
    const lo = Math.max(pfnLo, this.startPfn);
    if (lo > pfnHi) return true; // below the arena: never handed out anyway
    this.qcache.flush(); // a cached range under the reservation must not be handed out again
    for (let seg = this.arena.next; seg !== this.arena && seg.base <= pfnHi; ) {
      const next = seg.next; // carving leaves what lies above pfnHi between seg and next
      const end = seg.base + seg.size - 1;
      if (end >= lo && seg.kind === FREE) {
        const base = Math.max(lo, seg.base);
        this.carve(seg, base, Math.min(pfnHi, end) - base + 1, RESERVED);
      } else if (end >= lo && seg.kind === ALLOC) {
        seg.pinned = true;
      }
      seg = next;
    }
    return true;
  }

  allocFast(size: number, limitPfn: number, flushRcache: boolean): number {
    if (size <= this.qcacheMax) {
      const pfn = this.qcache.get(size - 1, limitPfn + 1 - size);
      if (pfn >= 0) return this.counters.hit(pfn);
    }
    const align = alignOf(size);
    let pfn = this.xalloc(size, limitPfn, align);
    if (pfn < 0 && flushRcache) {
      this.qcache.flush();
      pfn = this.xalloc(size, limitPfn, align);
    }
    return this.counters.miss(pfn);
  }

  freeFast(pfn: number, size: number): void {
    if (size <= this.qcacheMax) this.qcache.put(size - 1, pfn);
    else this.free(pfn);
  }

  stats(): IovaStats {
    return { ...this.counters, ranges: this.hash.size + this.reservedSegs };
  }

  /** vmem_seg_t ~64 B for every segment, free or not; a pointer per hash bucket; 1 KiB magazines. */
  footprintBytes(): number {
    return (
      VMEM_ARENA_BYTES +
      this.segments * VMEM_SEG_BYTES +
      this.hash.bucketCount * VMEM_HASH_BUCKET_BYTES +
      this.qcache.magazines() * IOVA_MAG_BYTES
    );
  }

  /** Segments in the arena, free, allocated and reserved (for tests). */
  segmentCount(): number {
    return this.segments;
  }

  /** For tests: every invariant in the header holds. */
  validate(): void {
    const fail = (why: string): never => {
      throw new Error(`vmem: ${why}`);
    };
    let expected = this.startPfn;
    let segs = 0;
    let free = 0;
    let allocated = 0;
    let reserved = 0;
    for (let s = this.arena.next; s !== this.arena; s = s.next) {
      if (s.next.prev !== s) fail(`broken address link after ${s.base}`);
      if (s.base !== expected || s.size < 1) fail(`segment [${s.base}, +${s.size}] does not start at ${expected}`);
      expected = s.base + s.size;
      segs++;
      if (s.kind === FREE) {
        free++;
        if (s.next.kind === FREE) fail(`free neighbours at ${s.base} and ${s.next.base}`);
        if (s.flist !== floorLog2(s.size)) fail(`free segment of ${s.size} on list ${s.flist}`);
      } else if (s.kind === ALLOC) {
        allocated++;
        if (this.hash.find(s.base) !== s) fail(`allocated segment ${s.base} not in the hash`);
      } else if (s.kind === RESERVED) {
        reserved++;
      } else {
        fail(`segment ${s.base} of kind ${s.kind}`);
      }
    }
    if (expected !== IOVA_MAX_PFN + 1) fail(`segments end at ${expected - 1}`);
    if (segs !== this.segments) fail(`${segs} segments, counted ${this.segments}`);
    let listed = 0;
    for (let k = 0; k < VMEM_FREELISTS; k++) {
      if ((this.freelists[k] !== null) !== this.listed(k)) fail(`freemap bit ${k} disagrees with its list`);
      let prev: VmemSeg | null = null;
      for (let s = this.freelists[k]!; s; s = s.fnext!) {
        if (s.fprev !== prev || s.kind !== FREE || s.flist !== k) fail(`freelist ${k} holds a bad entry at ${s.base}`);
        prev = s;
        listed++;
      }
    }
    if (this.freemapHi >>> (VMEM_FREELISTS - 32) !== 0) fail('freemap bits beyond the last list');
    if (listed !== free) fail(`${free} free segments, ${listed} on freelists`);
    if (this.hash.size !== allocated) fail(`${allocated} allocated segments, ${this.hash.size} hashed`);
    if (reserved !== this.reservedSegs) fail(`${reserved} reserved segments, counted ${this.reservedSegs}`);
    const cached = new Set<number>();
    this.qcache.forEach((pfn, cls) => {
      const s = this.hash.find(pfn);
      if (!s || s.size !== cls + 1 || pfn % roundupPow2(cls + 1) !== 0) fail(`quantum cache ${cls} holds ${pfn}`);
      if (cached.has(pfn)) fail(`${pfn} cached twice`);
      cached.add(pfn);
    });
  }

  /**
   * The arena proper. The heads of the non-empty lists from the one `size`
   * falls in upwards, smallest list first; then, if no head fits, every
   * member of those lists (the constrained search).
   */
  private xalloc(size: number, limitPfn: number, align: number): number {
    const limit = Math.min(limitPfn, IOVA_MAX_PFN);
    if (size < 1 || size > IOVA_MAX_PFN || limit < this.startPfn) return -1;
    const first = floorLog2(size);
    for (let k = this.nextList(first); k >= 0; k = this.nextList(k + 1)) {
      const seg = this.freelists[k]!;
      const pfn = fitIn(seg, size, align, limit);
      if (pfn >= 0) return this.carve(seg, pfn, size, ALLOC);
    }
    for (let k = this.nextList(first); k >= 0; k = this.nextList(k + 1)) {
      for (let seg = this.freelists[k]!.fnext; seg; seg = seg.fnext) {
        const pfn = fitIn(seg, size, align, limit);
        if (pfn >= 0) return this.carve(seg, pfn, size, ALLOC);
      }
    }
    return -1;
  }

  /** Turns [pfn, pfn + size - 1] of free `seg` into a segment of `kind`; what is left either side stays free. */
  private carve(seg: VmemSeg, pfn: number, size: number, kind: number): number {
    this.unlistFree(seg);
    if (pfn > seg.base) {
      const left = this.newSeg(seg.base, pfn - seg.base);
      this.linkAfter(left, seg.prev);
      this.listFree(left);
      seg.size -= left.size;
      seg.base = pfn;
    }
    if (seg.size > size) {
      const right = this.newSeg(pfn + size, seg.size - size);
      this.linkAfter(right, seg);
      this.listFree(right);
      seg.size = size;
    }
    seg.kind = kind;
    if (kind === ALLOC) this.hash.insert(seg);
    else this.reservedSegs++;
    return pfn;
  }

  /** Merges a segment just freed with free neighbours and lists the result. */
  private coalesce(seg: VmemSeg): void {
    const prev = seg.prev;
    if (prev.kind === FREE) {
      this.unlistFree(prev);
      seg.base = prev.base;
      seg.size += prev.size;
      this.unlink(prev);
    }
    const next = seg.next;
    if (next.kind === FREE) {
      this.unlistFree(next);
      seg.size += next.size;
      this.unlink(next);
    }
    this.listFree(seg);
  }

  /** The lowest non-empty freelist at or above k, or -1. */
  private nextList(k: number): number {
    if (k < 32) {
      const word = this.freemapLo & (-1 << k);
      if (word !== 0) return lowestBit(word);
      k = 32;
    }
    if (k >= VMEM_FREELISTS) return -1;
    const word = this.freemapHi & (-1 << (k - 32));
    return word !== 0 ? 32 + lowestBit(word) : -1;
  }

  private listed(k: number): boolean {
    return k < 32 ? (this.freemapLo & (1 << k)) !== 0 : (this.freemapHi & (1 << (k - 32))) !== 0;
  }

  /** Pushes a free segment on the head of its list: the most recently freed is reused first. */
  private listFree(seg: VmemSeg): void {
    const k = floorLog2(seg.size);
    const head = this.freelists[k]!;
    seg.flist = k;
    seg.fprev = null;
    seg.fnext = head;
    if (head) head.fprev = seg;
    else if (k < 32) this.freemapLo |= 1 << k;
    else this.freemapHi |= 1 << (k - 32);
    this.freelists[k] = seg;
  }

  private unlistFree(seg: VmemSeg): void {
    const k = seg.flist;
    if (seg.fprev) seg.fprev.fnext = seg.fnext;
    else this.freelists[k] = seg.fnext;
    if (seg.fnext) seg.fnext.fprev = seg.fprev;
    seg.fprev = seg.fnext = null;
    seg.flist = -1;
    if (this.freelists[k]) return;
    if (k < 32) this.freemapLo &= ~(1 << k);
    else this.freemapHi &= ~(1 << (k - 32));
  }

  private newSeg(base: number, size: number): VmemSeg {
    const seg = this.spare ?? new VmemSeg();
    if (seg === this.spare) this.spare = seg.fnext;
    seg.base = base;
    seg.size = size;
    seg.kind = FREE;
    seg.pinned = false;
    seg.fprev = seg.fnext = seg.hnext = null;
    this.segments++;
    return seg;
  }

  private linkAfter(seg: VmemSeg, at: VmemSeg): void {
    seg.prev = at;
    seg.next = at.next;
    at.next.prev = seg;
    at.next = seg;
  }

  /** Takes a segment off the address list and recycles it. */
  private unlink(seg: VmemSeg): void {
    seg.prev.next = seg.next;
    seg.next.prev = seg.prev;
    seg.prev = seg.next = seg;
    seg.fnext = this.spare;
    this.spare = seg;
    this.segments--;
  }
}
