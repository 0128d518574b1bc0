// kmalloc: small physically-contiguous allocations from power-of-two size
// classes carved out of pages; larger requests take whole pages. Memory comes
// back zeroed (kzalloc), since drivers hand it to devices.
import type { PhysMem } from './mem.ts';
import { PAGE_SIZE, type PageAllocator } from './page-alloc.ts';

const MIN_CLASS = 32;

export class Kmalloc {
  private freeLists = new Map<number, number[]>();
  /** Allocation size (class size, or page-multiple for large ones) by address, so kfree needs no size. */
  private sizes = new Map<number, number>();

  constructor(
    private readonly pages: PageAllocator,
    private readonly mem: PhysMem,
  ) {}

  /** Zeroed memory of at least `size` bytes, naturally aligned to its class; -1 when out of memory. */
  kzalloc(size: number): number {
    if (size > PAGE_SIZE / 2) {
      const bytes = Math.ceil(size / PAGE_SIZE) * PAGE_SIZE;
      const gpa = this.pages.alloc(bytes / PAGE_SIZE);
      if (gpa < 0) return -1;
      this.sizes.set(gpa, bytes);
      this.mem.fill(gpa, bytes);
      return gpa;
    }
    let cls = MIN_CLASS;
    while (cls < size) cls *= 2;
    let list = this.freeLists.get(cls);
    if (!list) this.freeLists.set(cls, (list = []));
    if (list.length === 0) {
      const page = this.pages.alloc(1);
      if (page < 0) return -1;
      for (let a = page + PAGE_SIZE - cls; a >= page; a -= cls) list.push(a);
    }
    const gpa = list.pop()!;
    this.sizes.set(gpa, cls);
    this.mem.fill(gpa, cls);
    return gpa;
  }

  kfree(gpa: number): void {
    const size = this.sizes.get(gpa);
    if (size === undefined) throw new RangeError(`kfree of unknown address 0x${gpa.toString(16)}`);
    this.sizes.delete(gpa);
    if (size >= PAGE_SIZE) this.pages.freePagesAt(gpa, size / PAGE_SIZE);
    else this.freeLists.get(size)!.push(gpa);
  }
}
