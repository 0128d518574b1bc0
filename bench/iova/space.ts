// The workload's own view of the IOVA space: every live range it holds and
// every reserved range, without anything the allocator keeps to itself
// (cached ranges, rounding). From it the benchmark judges a failed
// allocation ("was there a free, size-aligned block of the request's rounded
// size under its limit?") and the fragmentation index.
//
// Pfns below 2^20 (the 32-bit space) are a bitmap, updated per op, so the
// full 32-bit space and small domains answer in microseconds however many
// ranges are live. Ranges above it are packed into one number each
// (lo * 2048 + length - 1, exact while lo < 2^42 and length <= 2048: every
// live range of every workload) in an unsorted array, sorted on demand with
// the typed array's native sort; anything else goes to a small side list.

/** Pfns the bitmap covers: the whole 32-bit space. */
export const BITMAP_PFNS = 2 ** 20;
/** Packing radix for ranges above the bitmap: lo * PACK + (hi - lo). */
const PACK = 2048;

function roundupPow2(n: number): number {
  return n <= 1 ? 1 : 2 ** (32 - Math.clz32(n - 1));
}

/** The largest power of two <= n (n >= 1), exact for any safe integer. */
function pow2Floor(n: number): number {
  let p = 2 ** Math.floor(Math.log2(n));
  while (p > n) p /= 2;
  while (p * 2 <= n) p *= 2;
  return p;
}

/** The largest 2^k block starting at a multiple of 2^k inside [a, b]. */
export function largestAlignedIn(a: number, b: number): number {
  if (b < a) return 0;
  for (let size = pow2Floor(b - a + 1); size >= 1; size /= 2) {
    const m = Math.ceil(a / size) * size;
    if (m + size - 1 <= b) return size;
  }
  return 0;
}

export interface FreeSummary {
  /** Free pfns in [startPfn, limit]. */
  readonly total: number;
  /** The largest free 2^k block at a multiple of 2^k in [startPfn, limit]. */
  readonly largestAligned: number;
  /** Free pfns inside free, aligned blocks of `order` pages (the order free() was asked about; 1 by default). */
  readonly usable: number;
}

/** 1 - largest free aligned block / total free; 0 when nothing is free. */
export function fragmentationIndex(f: FreeSummary): number {
  return f.total === 0 ? 0 : 1 - f.largestAligned / f.total;
}

/**
 * The unusable free space index (Gorman's, as Linux's extfrag/unusable_index
 * has it per order): the share of free pfns that are in no free, aligned
 * block of the `order` free() was asked about. 0 when nothing is free.
 */
export function unusableIndex(f: FreeSummary): number {
  return f.total === 0 ? 0 : 1 - f.usable / f.total;
}

/** Pfns of [a, b] inside aligned blocks of `block` pfns that lie wholly in it. */
function alignedPfnsIn(a: number, b: number, block: number): number {
  const first = Math.ceil(a / block);
  const end = Math.floor((b + 1) / block);
  return end > first ? (end - first) * block : 0;
}

/** Live ranges above the bitmap as a caller keeps them: `n` packed keys (packRange) in any order, and the ones that do not pack. */
export interface HighRanges {
  readonly keys: Float64Array;
  readonly n: number;
  readonly odd: readonly (readonly [number, number])[];
}

/** Whether [lo, hi] (lo >= BITMAP_PFNS) packs into one key. */
export const packable = (lo: number, hi: number): boolean => lo < 2 ** 42 && hi - lo < PACK;
export const packRange = (lo: number, hi: number): number => lo * PACK + (hi - lo);

export class SpaceView {
  private readonly bits = new Uint32Array(BITMAP_PFNS / 32);
  /** Packed live ranges (or their parts) at or above BITMAP_PFNS, in no order; `packed` counts them. */
  private keys = new Float64Array(1024);
  private packed = 0;
  /** lo -> index in `keys`. */
  private readonly index = new Map<number, number>();
  /** Ranges above the bitmap that do not pack (and reserved ones): lo -> hi. */
  private readonly odd = new Map<number, number>();
  private readonly reservedHigh: { lo: number; hi: number }[] = [];
  /** Allocations that overlapped a live or reserved range the view could see, or broke the limit or the alignment. */
  invalid = 0;

  /**
   * With `highSource`, the view keeps no live ranges above the bitmap itself:
   * it asks for them when it needs them (the runner derives them from its
   * slots, cheaper than tracking a million ranges per op).
   */
  constructor(
    readonly startPfn: number,
    reserved: readonly { lo: number; hi: number }[],
    private readonly highSource?: () => HighRanges,
  ) {
    for (const r of reserved) {
      if (r.hi >= BITMAP_PFNS) this.odd.set(Math.max(r.lo, BITMAP_PFNS), r.hi);
      if (r.lo >= BITMAP_PFNS) continue;
      this.mark(r.lo, Math.min(r.hi, BITMAP_PFNS - 1), true);
    }
    for (const r of reserved) {
      if (r.hi >= BITMAP_PFNS) this.reservedHigh.push({ lo: Math.max(r.lo, BITMAP_PFNS), hi: r.hi });
    }
  }

  /** Records a range the allocator handed out, checking it first. */
  add(pfn: number, pages: number, limit: number): void {
    const hi = pfn + pages - 1;
    const bad = pfn < this.startPfn || hi > limit || pfn % roundupPow2(pages) !== 0 || this.overlaps(pfn, hi);
    if (!this.mark(pfn, hi, true) || bad) this.invalid++;
  }

  remove(pfn: number, pages: number): void {
    this.mark(pfn, pfn + pages - 1, false);
  }

  /** The workload's view: a free block of roundupPow2(pages), aligned to that size, exists in [startPfn, limit]. */
  fits(pages: number, limit: number): boolean {
    return this.free(limit).largestAligned >= roundupPow2(pages);
  }

  /** Free space in [startPfn, limit]; `usable` counts what lies in aligned blocks of roundupPow2(pages). */
  free(limit: number, pages = 1): FreeSummary {
    const block = roundupPow2(pages);
    let total = 0;
    let largest = 0;
    let usable = 0;
    // A free extent still open at the bitmap's top joins the first one above it.
    let openLo = -1;
    const extent = (a: number, b: number) => {
      total += b - a + 1;
      usable += alignedPfnsIn(a, b, block);
      const l = largestAlignedIn(a, b);
      if (l > largest) largest = l;
    };
    const top = Math.min(limit, BITMAP_PFNS - 1);
    const bits = this.bits;
    let runLo = -1;
    for (let p = this.startPfn; p <= top; ) {
      const w = bits[p >>> 5]!;
      if ((p & 31) === 0 && p + 31 <= top && (w === 0 || w === -1 >>> 0)) {
        if (w === 0) {
          if (runLo < 0) runLo = p;
        } else if (runLo >= 0) {
          extent(runLo, p - 1);
          runLo = -1;
        }
        p += 32;
        continue;
      }
      if ((w >>> (p & 31)) & 1) {
        if (runLo >= 0) {
          extent(runLo, p - 1);
          runLo = -1;
        }
      } else if (runLo < 0) runLo = p;
      p++;
    }
    if (runLo >= 0) {
      if (limit >= BITMAP_PFNS) openLo = runLo;
      else extent(runLo, top);
    }
    if (limit >= BITMAP_PFNS) {
      const src = this.highSource?.();
      const sorted = src ? src.keys.slice(0, src.n).sort() : this.keys.slice(0, this.packed).sort();
      const odd = [...this.odd, ...(src?.odd ?? [])].sort((a, b) => a[0] - b[0]);
      let lo = openLo >= 0 ? openLo : Math.max(BITMAP_PFNS, this.startPfn); // where the free extent being walked starts
      let i = 0;
      let j = 0;
      while (i < sorted.length || j < odd.length) {
        let rlo: number;
        let rhi: number;
        const k = i < sorted.length ? sorted[i]! : Infinity;
        const klo = Math.floor(k / PACK);
        if (j < odd.length && odd[j]![0] < klo) {
          [rlo, rhi] = odd[j++]!;
        } else {
          rlo = klo;
          rhi = klo + (k - klo * PACK);
          i++;
        }
        if (rlo > limit) break;
        if (rlo > lo) extent(lo, rlo - 1);
        lo = Math.max(lo, rhi + 1);
      }
      if (lo <= limit) extent(lo, limit);
    }
    return { total, largestAligned: largest, usable };
  }

  private overlaps(lo: number, hi: number): boolean {
    const top = Math.min(hi, BITMAP_PFNS - 1);
    for (let p = lo; p <= top; p++) if ((this.bits[p >>> 5]! >>> (p & 31)) & 1) return true;
    if (hi >= BITMAP_PFNS) {
      const l = Math.max(lo, BITMAP_PFNS);
      for (const r of this.reservedHigh) if (r.lo <= hi && l <= r.hi) return true;
    }
    return false;
  }

  /** Sets or clears [lo, hi]; false when a range above the bitmap already started at lo. */
  private mark(lo: number, hi: number, set: boolean): boolean {
    const top = Math.min(hi, BITMAP_PFNS - 1);
    const bits = this.bits;
    for (let p = lo; p <= top; ) {
      if ((p & 31) === 0 && p + 31 <= top) {
        bits[p >>> 5] = set ? -1 >>> 0 : 0;
        p += 32;
        continue;
      }
      if (set) bits[p >>> 5]! |= 1 << (p & 31);
      else bits[p >>> 5]! &= ~(1 << (p & 31));
      p++;
    }
    if (hi >= BITMAP_PFNS) {
      const l = Math.max(lo, BITMAP_PFNS);
      if (set) return this.addHigh(l, hi);
      this.removeHigh(l);
    }
    return true;
  }

  private addHigh(lo: number, hi: number): boolean {
    if (this.highSource) return true;
    if (this.odd.has(lo)) return false;
    if (!packable(lo, hi) || this.index.has(lo)) {
      const fresh = !this.index.has(lo);
      this.odd.set(lo, hi);
      return fresh;
    }
    if (this.packed === this.keys.length) {
      const k = new Float64Array(this.keys.length * 2);
      k.set(this.keys);
      this.keys = k;
    }
    this.index.set(lo, this.packed);
    this.keys[this.packed++] = packRange(lo, hi);
    return true;
  }

  private removeHigh(lo: number): void {
    if (this.highSource) return;
    const i = this.index.get(lo);
    if (i === undefined) {
      this.odd.delete(lo);
      return;
    }
    this.index.delete(lo);
    const last = this.keys[--this.packed]!;
    if (i !== this.packed) {
      this.keys[i] = last;
      this.index.set(Math.floor(last / PACK), i);
    }
  }
}
