// The physical page allocator: a sorted list of free page runs, allocating
// from the highest fitting address under a limit, as Linux's zonelists prefer
// ZONE_NORMAL (above 4 GiB) over DMA32: memory a device cannot reach is what
// a driver gets unless it asks for less. Free runs coalesce.
// Invariants: runs are sorted, disjoint and never adjacent (adjacent runs merge).

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;

interface Run {
  pfn: number;
  count: number;
}

export class PageAllocator {
  private free: Run[] = [];
  private freePages = 0;
  readonly totalPages: number;

  constructor(ranges: readonly { gpa: number; size: number }[]) {
    for (const r of ranges) {
      const first = Math.ceil(r.gpa / PAGE_SIZE);
      const end = Math.floor((r.gpa + r.size) / PAGE_SIZE);
      if (end > first) this.release(first, end - first);
    }
    this.totalPages = this.freePages;
  }

  get available(): number {
    return this.freePages;
  }

  /**
   * Allocates `count` contiguous pages whose last byte is at or below `maxAddr`,
   * aligned to `alignPages`, as high as they fit. Returns the guest-physical
   * address, or -1.
   */
  alloc(count: number, maxAddr = Number.MAX_SAFE_INTEGER, alignPages = 1): number {
    const limitPfn = Math.floor((maxAddr + 1) / PAGE_SIZE);
    for (let i = this.free.length - 1; i >= 0; i--) {
      const run = this.free[i]!;
      const end = Math.min(run.pfn + run.count, limitPfn);
      const start = Math.floor((end - count) / alignPages) * alignPages;
      if (start < run.pfn) continue;
      this.take(i, start, count);
      return start * PAGE_SIZE;
    }
    return -1;
  }

  freePagesAt(gpa: number, count: number): void {
    if (gpa % PAGE_SIZE !== 0) throw new RangeError(`free of unaligned page 0x${gpa.toString(16)}`);
    this.release(gpa / PAGE_SIZE, count);
  }

  /** Removes [gpa, gpa + size) from the free pool (firmware tables, init program). */
  reserve(gpa: number, size: number): void {
    const first = Math.floor(gpa / PAGE_SIZE);
    const end = Math.ceil((gpa + size) / PAGE_SIZE);
    for (let i = 0; i < this.free.length; i++) {
      const run = this.free[i]!;
      const s = Math.max(first, run.pfn);
      const e = Math.min(end, run.pfn + run.count);
      if (s < e) {
        this.take(i, s, e - s);
        i = -1; // the list changed; rescan
      }
    }
  }

  private take(i: number, pfn: number, count: number): void {
    const run = this.free[i]!;
    const tail = run.pfn + run.count - (pfn + count);
    const pieces: Run[] = [];
    if (pfn > run.pfn) pieces.push({ pfn: run.pfn, count: pfn - run.pfn });
    if (tail > 0) pieces.push({ pfn: pfn + count, count: tail });
    this.free.splice(i, 1, ...pieces);
    this.freePages -= count;
  }

  private release(pfn: number, count: number): void {
    let i = 0;
    while (i < this.free.length && this.free[i]!.pfn < pfn) i++;
    const prev = this.free[i - 1];
    const next = this.free[i];
    if ((prev && prev.pfn + prev.count > pfn) || (next && pfn + count > next.pfn)) {
      throw new RangeError(`double free of pages at pfn 0x${pfn.toString(16)}`);
    }
    this.freePages += count;
    if (prev && prev.pfn + prev.count === pfn) {
      prev.count += count;
      if (next && prev.pfn + prev.count === next.pfn) {
        prev.count += next.count;
        this.free.splice(i, 1);
      }
    } else if (next && pfn + count === next.pfn) {
      next.pfn = pfn;
      next.count += count;
    } else {
      this.free.splice(i, 0, { pfn, count });
    }
  }
}
