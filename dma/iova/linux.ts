// Linux's IOVA allocator (drivers/iommu/iova.c, mainline): a red-black tree of
// allocated and reserved ranges searched top-down from the limit, next-fit
// from cached nodes, with the 32-bit fast-fail and the retry pass above the
// hint (strategy `linux`); and with per-CPU magazines over a depot (the rcache)
// in front of it (strategy `linux-rcache`, what dma-iommu uses).
//
// Invariants: the tree holds every live, cached and reserved range, disjoint,
// plus the anchor above them all; each hint is a node in the tree; a magazine
// holds ranges of exactly its class's size that the tree still holds.
import { IovaMagazineCaches, IOVA_MAG_BYTES } from './magazines.ts';
export { IOVA_MAG_SIZE, IOVA_DEPOT_DELAY_NS } from './magazines.ts';
import type { IovaStats } from '../../abi/report.ts';
import { IOVA_MAX_PFN, roundupPow2, type IovaDomain, type IovaDomainParams } from '../iova.ts';
import { IovaRbTree, type IovaNode } from './rbtree.ts';

/** IOVA_ANCHOR: a node above every pfn, so a cached node always has somewhere to start from. */
const IOVA_ANCHOR = IOVA_MAX_PFN + 1;
/** Size classes 1, 2, 4 ... 32 pfns are cached; larger ranges always use the tree. */
export const IOVA_RANGE_CACHE_MAX_SIZE = 6;
const IOVA_NODE_BYTES = 64;

export class LinuxIovaDomain implements IovaDomain {
  readonly startPfn: number;
  /** dma_32bit_pfn: the first pfn at or above 4 GiB. */
  readonly dma32bitPfn: number;
  private readonly tree = new IovaRbTree();
  private cachedNode: IovaNode;
  private cached32Node: IovaNode;
  /** The size of the last failed allocation: smaller ones may still fit below 4 GiB, larger ones fail at once. */
  private max32AllocSize: number;
  private readonly rcaches: IovaMagazineCaches;
  // The counters IovaStats reports, as plain fields: one load and store each on the hot path.
  private allocs = 0;
  private failures = 0;
  private rcacheHits = 0;
  private rcacheMisses = 0;

  constructor(
    params: IovaDomainParams,
    private readonly rcache = true,
  ) {
    this.startPfn = params.startPfn;
    this.dma32bitPfn = 2 ** (32 - params.granuleShift);
    const anchor = this.tree.newNode(IOVA_ANCHOR, IOVA_ANCHOR);
    this.tree.insert(anchor);
    this.cachedNode = this.cached32Node = anchor;
    this.max32AllocSize = this.dma32bitPfn;
    this.rcaches = new IovaMagazineCaches(params, IOVA_RANGE_CACHE_MAX_SIZE, (pfn) => this.free(pfn));
  }

  alloc(size: number, limitPfn: number, sizeAligned: boolean): number {
    const node = this.allocAndInsert(size, limitPfn, sizeAligned);
    return node ? node.pfnLo : -1;
  }

  /** Linux finds the range by its pfn alone. */
  free(pfn: number, _size?: number): void {
    const node = this.tree.find(pfn);
    if (node) this.remove(node);
  }

  /** reserve_iova: merges into the ranges it overlaps and inserts what is left above them. */
  reserve(pfnLo: number, pfnHi: number): boolean {
    if (pfnLo > pfnHi || pfnLo < 0 || pfnHi > IOVA_MAX_PFN) return false;
    let overlap = false;
    for (let n = this.tree.first(); n; n = this.tree.next(n)) {
      if (n.pfnLo <= pfnHi && pfnLo <= n.pfnHi) {
        if (pfnLo < n.pfnLo) n.pfnLo = pfnLo;
        if (pfnHi <= n.pfnHi) return true;
        pfnLo = n.pfnHi + 1;
        overlap = true;
      } else if (overlap) {
        break;
      }
    }
    this.tree.insert(this.tree.newNode(pfnLo, pfnHi));
    return true;
  }

  allocFast(size: number, limitPfn: number, flushRcache: boolean): number {
    if (!this.rcache) return this.allocUncached(size, limitPfn);
    if (size <= 1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)) {
      // Cached classes hold one size each: a range freed into one must have been allocated at that size.
      const cls = (32 - Math.clz32(size - 1)) & 31; // as 1 << (32 - clz): a size of 0 rounds to 1
      size = 1 << cls;
      const cached = this.rcaches.get(cls, limitPfn + 1 - size);
      if (cached >= 0) {
        this.rcacheHits++;
        this.allocs++;
        return cached;
      }
    }
    return this.allocMiss(size, limitPfn, flushRcache);
  }

  freeFast(pfn: number, size: number): void {
    // order_base_2(size); anything above the cached sizes (or no size at all) goes to the tree.
    const cls = size > 1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1) ? IOVA_RANGE_CACHE_MAX_SIZE : 32 - Math.clz32(size - 1);
    if (this.rcache && cls < IOVA_RANGE_CACHE_MAX_SIZE) this.rcaches.put(cls, pfn);
    else this.free(pfn);
  }

  stats(): IovaStats {
    return { allocs: this.allocs, failures: this.failures, rcacheHits: this.rcacheHits, rcacheMisses: this.rcacheMisses, ranges: this.tree.size - 1 };
  }

  /** struct iova in a SLAB_HWCACHE_ALIGN cache is 64 bytes; a magazine is 1 KiB. */
  footprintBytes(): number {
    return this.tree.size * IOVA_NODE_BYTES + (this.rcache ? this.rcaches.magazines() * IOVA_MAG_BYTES : 0);
  }

  /** For tests: the tree's invariants hold. */
  validate(): void {
    this.tree.validate();
  }

  /** alloc_iova_fast without the rcache: straight to the tree. */
  private allocUncached(size: number, limitPfn: number): number {
    this.rcacheMisses++;
    return this.counted(this.allocAndInsert(size, limitPfn, true));
  }

  /** alloc_iova_fast after an rcache miss (`size` already rounded): the tree, then once more after a flush. */
  private allocMiss(size: number, limitPfn: number, flushRcache: boolean): number {
    this.rcacheMisses++;
    let node = this.allocAndInsert(size, limitPfn, true);
    if (!node && flushRcache) {
      this.rcaches.flush();
      node = this.allocAndInsert(size, limitPfn, true);
    }
    return this.counted(node);
  }

  private counted(node: IovaNode | undefined): number {
    if (!node) {
      this.failures++;
      return -1;
    }
    this.allocs++;
    return node.pfnLo;
  }

  /**
   * __alloc_and_insert_iova_range: walks the gaps below the cached node
   * downwards and takes the first that fits; if none does, walks once more
   * over the gaps between the hint and the limit.
   */
  private allocAndInsert(size: number, limitPfn: number, sizeAligned: boolean): IovaNode | undefined {
    const align = sizeAligned ? roundupPow2(size) : 1;
    let highPfn = limitPfn + 1; // exclusive from here on, as iova.c
    const limitEnd = highPfn;
    let lowPfn = this.startPfn;
    const below4G = highPfn <= this.dma32bitPfn;
    if (below4G && size >= this.max32AllocSize) return undefined;

    let curr: IovaNode | null = below4G ? this.cached32Node : this.cachedNode;
    const retryPfn = curr.pfnHi;
    for (let firstPass = true; ; firstPass = false) {
      let prev: IovaNode;
      let newPfn: number;
      do {
        highPfn = Math.min(highPfn, curr.pfnLo);
        newPfn = alignDown(highPfn - size, align);
        prev = curr;
        curr = this.tree.prev(curr);
      } while (curr && newPfn <= curr.pfnHi && newPfn >= lowPfn);

      if (highPfn >= size && newPfn >= lowPfn) {
        const node = this.tree.newNode(newPfn, newPfn + size - 1);
        this.tree.insertBefore(node, prev);
        if (node.pfnHi < this.dma32bitPfn) this.cached32Node = node;
        else this.cachedNode = node;
        return node;
      }
      if (!firstPass || retryPfn >= limitEnd) break;
      // Space freed above the hint is only found by looking there again.
      highPfn = limitEnd;
      lowPfn = retryPfn + 1;
      curr = this.tree.ceilByEnd(limitEnd)!; // the anchor at worst
    }
    this.max32AllocSize = size;
    return undefined;
  }

  /** remove_iova: moves the hints up past a freed range at or above them, so the hole is found next. */
  private remove(node: IovaNode): void {
    const c32 = this.cached32Node;
    if (node === c32 || (node.pfnHi < this.dma32bitPfn && node.pfnLo >= c32.pfnLo)) this.cached32Node = this.tree.next(node)!;
    if (node.pfnLo < this.dma32bitPfn) this.max32AllocSize = this.dma32bitPfn;
    if (node.pfnLo >= this.cachedNode.pfnLo) this.cachedNode = this.tree.next(node)!;
    this.tree.erase(node);
  }
}

const alignDown = (pfn: number, align: number): number => (align === 1 ? pfn : Math.floor(pfn / align) * align);
