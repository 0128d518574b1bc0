// A binary buddy allocator of IOVA space (strategy `buddy`): free blocks of
// 2^order pfns, naturally aligned, on one free list per order 0..52; a
// request takes a block of its size rounded up to a power of two, split down
// from the smallest order that fits; a freed block merges with its buddy
// while the buddy is free. Natural alignment is exactly Linux's size
// alignment, so every range is size-aligned, asked for or not; the cost is
// internal fragmentation: 3 pages take a 4-page block, 129 take 256.
//
// Placement is top-down, as Linux's allocator: the highest block that ends
// at or below the limit, whichever order it comes from. Each free list is a
// red-black tree of its blocks by address (dma/iova/rbtree.ts, ending in an
// anchor above every pfn), so "the highest free block of order j under the
// limit" is one O(log n) descent, where a sorted array would pay O(n) per
// insert. The search asks each order from the request's up to log2 of the
// limit (no larger block fits under it) and takes the highest answer; it
// stops at once if that is the topmost aligned block under the limit. An
// order's answer is kept until its list changes, since most lists do not
// change from one allocation to the next.
//
// The space [startPfn, IOVA_MAX_PFN] is not a power of two, nor aligned, so
// it starts as the maximal aligned blocks that tile it (at most two per
// order). reserve() carves a range out of the free blocks it overlaps: a
// block inside the range leaves the free lists for good, a block across its
// edge is split and the halves carved in turn. Reserve ranges before
// allocating in them: a live block is not carved, and returns to the free
// lists whole when freed.
//
// Invariants:
//   - the free blocks, live blocks and carved-out reserved blocks tile
//     [startPfn, IOVA_MAX_PFN] exactly; the free blocks of list j are of
//     order j, aligned to 2^j, and disjoint from every other free block;
//   - no block is free together with its buddy (they would have merged);
//   - a live block's order is that of its size rounded up to a power of two,
//     which free() is given, as free_pages() is given an order: nothing is
//     stored per live block.
//
// Cost, n free blocks in one order: alloc asks up to log2(limit) orders (21
// under a 32-bit limit, 37 under 48 bits), each O(1) if its list is unchanged
// since the last allocation under the same limit and O(log n) otherwise, then
// splits the block found, O(order) inserts of O(log n); free is O(order)
// buddy lookups and merges, each O(log n).
import type { IovaStats } from '../../abi/report.ts';
import { IOVA_MAX_PFN, IovaFastCounters, type IovaDomain, type IovaDomainParams } from '../iova.ts';
import { IovaRbTree, type IovaNode } from './rbtree.ts';

/** The largest block: 2^52 pfns, a 64-bit space of 4 KiB pages. */
export const BUDDY_MAX_ORDER = 52;
/** A free list's anchor: above every pfn, so the search for a block above the limit never comes back empty. */
const ANCHOR_PFN = 2 ** 53;
/** BLOCK_PFNS[j] = 2^j. */
const BLOCK_PFNS = Float64Array.from({ length: BUDDY_MAX_ORDER + 1 }, (_, j) => 2 ** j);
/** In a C kernel a free block is a tree node, as big as struct iova, and each order has a tree root. */
const BLOCK_BYTES = 64;
const FREE_AREA_BYTES = 8;

export class BuddyIovaDomain implements IovaDomain {
  readonly startPfn: number;
  /** freeArea[j]: the free blocks of order j, by address, anchor last. */
  private readonly freeArea: IovaRbTree[] = [];
  private readonly anchors: IovaNode[] = [];
  /**
   * Per order, the last answer to "the highest free block starting at or
   * below floorLimit[j]": its node, and its last pfn in floorEnd[j] (-1 for
   * none). It stays right until that order's list changes, and most lists do
   * not change from one allocation to the next. floorLimit[j] = -1: nothing kept.
   */
  private readonly floorLimit = new Float64Array(BUDDY_MAX_ORDER + 1).fill(-1);
  private readonly floorEnd = new Float64Array(BUDDY_MAX_ORDER + 1);
  private readonly floorNode: (IovaNode | null)[] = new Array<IovaNode | null>(BUDDY_MAX_ORDER + 1).fill(null);
  private live = 0;
  private reservedRanges = 0;
  // Pfn totals, for validate(): free + live + reserved = the whole space.
  private livePfns = 0;
  private reservedPfns = 0;
  private readonly counters = new IovaFastCounters();

  constructor(params: IovaDomainParams) {
    this.startPfn = params.startPfn;
    for (let order = 0; order <= BUDDY_MAX_ORDER; order++) {
      const tree = new IovaRbTree();
      const anchor = tree.newNode(ANCHOR_PFN, ANCHOR_PFN);
      tree.insert(anchor);
      this.freeArea.push(tree);
      this.anchors.push(anchor);
    }
    this.seed();
  }

  /** Natural alignment is size alignment, so `sizeAligned` changes nothing. */
  alloc(size: number, limitPfn: number, _sizeAligned: boolean): number {
    const order = sizeOrder(size);
    if (order > BUDDY_MAX_ORDER) return -1;
    const pfn = this.allocBlock(order, Math.min(limitPfn, IOVA_MAX_PFN));
    if (pfn >= 0) {
      this.live++;
      this.livePfns += BLOCK_PFNS[order]!;
    }
    return pfn;
  }

  free(pfn: number, size: number): void {
    const order = sizeOrder(size);
    this.live--;
    this.livePfns -= BLOCK_PFNS[order]!;
    this.freeBlock(pfn, order);
  }

  reserve(pfnLo: number, pfnHi: number): boolean {
    if (pfnLo > pfnHi || pfnLo < 0 || pfnHi > IOVA_MAX_PFN) return false;
    // The free blocks it overlaps: the one holding pfnLo, if any, then those starting up to pfnHi.
    for (let pfn = pfnLo; pfn <= pfnHi; ) {
      const block = this.lowestFreeEndingAtOrAbove(pfn);
      if (!block || block.pfnLo > pfnHi) break;
      const lo = block.pfnLo;
      const order = this.orderOfFree(block);
      this.removeFree(block, order);
      this.carve(lo, order, pfnLo, pfnHi);
      pfn = lo + 2 ** order;
    }
    this.reservedRanges++;
    return true;
  }

  /** No caches: every call is a miss that goes to the free lists. */
  allocFast(size: number, limitPfn: number, _flushRcache: boolean): number {
    return this.counters.miss(this.alloc(size, limitPfn, true));
  }

  freeFast(pfn: number, size: number): void {
    this.free(pfn, size);
  }

  stats(): IovaStats {
    return { ...this.counters, ranges: this.live + this.reservedRanges };
  }

  footprintBytes(): number {
    let blocks = 0;
    for (const tree of this.freeArea) blocks += tree.size - 1;
    return blocks * BLOCK_BYTES + this.freeArea.length * FREE_AREA_BYTES;
  }

  /** For tests: every free block as [pfn, order], by address. */
  freeBlocks(): [pfn: number, order: number][] {
    const out: [number, number][] = [];
    this.freeArea.forEach((tree, order) => {
      for (let n = tree.first(); n && n !== this.anchors[order]; n = tree.next(n)) out.push([n.pfnLo, order]);
    });
    return out.sort((a, b) => a[0] - b[0]);
  }

  /** For tests: the invariants in the header hold. */
  validate(): void {
    let freePfns = 0;
    this.freeArea.forEach((tree, order) => {
      tree.validate();
      const pfns = 2 ** order;
      for (let n = tree.first(); n && n !== this.anchors[order]; n = tree.next(n)) {
        const where = `order ${order} block at ${n.pfnLo}`;
        if (n.pfnLo % pfns !== 0 || n.pfnHi !== n.pfnLo + pfns - 1) throw new Error(`${where}: misaligned or wrong size`);
        if (n.pfnLo < this.startPfn || n.pfnHi > IOVA_MAX_PFN) throw new Error(`${where}: outside the space`);
        if (tree.find(buddyOf(n.pfnLo, order))) throw new Error(`${where}: its buddy is free too`);
        freePfns += pfns;
      }
    });
    let end = -1;
    for (const [pfn, order] of this.freeBlocks()) {
      if (pfn <= end) throw new Error(`free block at ${pfn} overlaps the one before`);
      end = pfn + 2 ** order - 1;
    }
    const space = IOVA_MAX_PFN - this.startPfn + 1;
    if (freePfns + this.livePfns + this.reservedPfns !== space) {
      throw new Error(`free ${freePfns} + live ${this.livePfns} + reserved ${this.reservedPfns} pfns != space ${space}`);
    }
  }

  /** The maximal aligned blocks tiling [startPfn, IOVA_MAX_PFN], bottom up. */
  private seed(): void {
    for (let pfn = this.startPfn; pfn <= IOVA_MAX_PFN; ) {
      let order = 0;
      while (order < BUDDY_MAX_ORDER && pfn % 2 ** (order + 1) === 0 && pfn + 2 ** (order + 1) - 1 <= IOVA_MAX_PFN) order++;
      this.insertFree(pfn, order);
      pfn += 2 ** order;
    }
  }

  /**
   * The highest block of 2^order pfns ending at or below `limitPfn`: for
   * each order j >= order, the top of the highest free j-block under the
   * limit, or of the part under the limit of a j-block across it.
   */
  private allocBlock(order: number, limitPfn: number): number {
    const pfns = BLOCK_PFNS[order]!;
    const ideal = Math.floor((limitPfn + 1) / pfns) * pfns - pfns; // the highest candidate there can be
    if (ideal < this.startPfn) return -1;
    // A 2^j block ends at or above 2^j - 1, so orders above the limit's log2 cannot hold one under it.
    const maxOrder = Math.min(BUDDY_MAX_ORDER, floorLog2(limitPfn + 1));
    let best = -1;
    let bestNode: IovaNode | null = null;
    let bestOrder = 0;
    for (let j = order; j <= maxOrder && best !== ideal; j++) {
      const end = this.floorBlockEnd(j, limitPfn);
      if (end < 0) continue;
      // The top of a block under the limit, or the ideal one inside a block across it.
      let pfn = end <= limitPfn ? end + 1 - pfns : ideal;
      let node = this.floorNode[j]!;
      if (pfn <= end - BLOCK_PFNS[j]!) {
        // Across the limit with too little of it below: the block under it is the highest that fits.
        const below = this.freeArea[j]!.prev(node);
        if (!below) continue;
        node = below;
        pfn = below.pfnHi + 1 - pfns;
      }
      if (pfn > best) {
        best = pfn;
        bestNode = node;
        bestOrder = j;
      }
    }
    if (!bestNode) return -1;
    this.splitTo(bestNode, bestOrder, best, order);
    return best;
  }

  /** Takes `block` (of `blockOrder`) off its list and splits it down to the `order`-block at `pfn`, freeing the other halves. */
  private splitTo(block: IovaNode, blockOrder: number, pfn: number, order: number): void {
    let lo = block.pfnLo;
    this.removeFree(block, blockOrder);
    for (let j = blockOrder - 1; j >= order; j--) {
      const half = BLOCK_PFNS[j]!;
      if (pfn >= lo + half) {
        this.insertFree(lo, j);
        lo += half;
      } else {
        this.insertFree(lo + half, j);
      }
    }
  }

  /** Gives a block back, merging it with its buddy for as long as the buddy is free. */
  private freeBlock(pfn: number, order: number): void {
    for (; order < BUDDY_MAX_ORDER; order++) {
      const buddy = this.freeArea[order]!.find(buddyOf(pfn, order));
      if (!buddy || buddy === this.anchors[order]) break;
      this.removeFree(buddy, order);
      pfn = Math.floor(pfn / BLOCK_PFNS[order + 1]!) * BLOCK_PFNS[order + 1]!;
    }
    this.insertFree(pfn, order);
  }

  /** Frees what lies outside [lo, hi] of the block at `pfn`, splitting blocks across an edge; what lies inside is reserved. */
  private carve(pfn: number, order: number, lo: number, hi: number): void {
    const last = pfn + 2 ** order - 1;
    if (last < lo || pfn > hi) {
      this.insertFree(pfn, order);
    } else if (lo <= pfn && last <= hi) {
      this.reservedPfns += 2 ** order;
    } else {
      this.carve(pfn, order - 1, lo, hi);
      this.carve(pfn + 2 ** (order - 1), order - 1, lo, hi);
    }
  }

  /** Across all orders, the free block holding `pfn` or else the lowest above it. */
  private lowestFreeEndingAtOrAbove(pfn: number): IovaNode | null {
    let best: IovaNode | null = null;
    for (let j = 0; j <= BUDDY_MAX_ORDER; j++) {
      const n = this.freeArea[j]!.ceilByEnd(pfn);
      if (n && n !== this.anchors[j] && (!best || n.pfnLo < best.pfnLo)) best = n;
    }
    return best;
  }

  /** A free block's order, from its span (exact: spans are powers of two). */
  private orderOfFree(block: IovaNode): number {
    return sizeOrder(block.pfnHi - block.pfnLo + 1);
  }

  private insertFree(pfn: number, order: number): void {
    const tree = this.freeArea[order]!;
    tree.insert(tree.newNode(pfn, pfn + BLOCK_PFNS[order]! - 1));
    this.floorLimit[order] = -1;
  }

  private removeFree(block: IovaNode, order: number): void {
    this.freeArea[order]!.erase(block);
    this.floorLimit[order] = -1;
  }

  /** The last pfn of the highest free block of `order` starting at or below `limitPfn` (it may run past it), or -1. */
  private floorBlockEnd(order: number, limitPfn: number): number {
    if (this.floorLimit[order] !== limitPfn) {
      const tree = this.freeArea[order]!;
      const above = tree.ceilByEnd(limitPfn + 1)!; // the lowest block not wholly under the limit: the anchor at worst
      const node = above.pfnLo <= limitPfn ? above : tree.prev(above);
      this.floorLimit[order] = limitPfn;
      this.floorNode[order] = node;
      this.floorEnd[order] = node ? node.pfnHi : -1;
    }
    return this.floorEnd[order]!;
  }
}

/** order_base_2: the order of the block that holds `size` pfns. */
function sizeOrder(size: number): number {
  return size <= 1 ? 0 : floorLog2(size - 1) + 1;
}

/** ilog2 of an integer 1 <= n < 2^53, from its high or low 32 bits (clz32 truncates n / 2^32). */
function floorLog2(n: number): number {
  return n < 2 ** 32 ? 31 - Math.clz32(n) : 63 - Math.clz32(n / 2 ** 32);
}

/** The other half of the (order + 1)-block that holds the order-block at `pfn` (pfn ^ 2^order, above 32 bits). */
function buddyOf(pfn: number, order: number): number {
  const pfns = BLOCK_PFNS[order]!;
  return (pfn / pfns) % 2 === 0 ? pfn + pfns : pfn - pfns;
}
