// Dynamic identity mapping (Peleg et al., USENIX ATC'15) as an IOVA allocator
// (strategy `identity`): allocFast returns the guest-physical pfn the range
// maps, so IOVA = physical address and nothing is searched. It cannot always:
//   - two live ranges may not overlap, and sub-page buffers share pages, so a
//     second mapping of a page already mapped (or any overlap) must go elsewhere;
//   - the range must lie within [startPfn, limit]: a device whose DMA mask is
//     below the RAM it maps, or pfn 0 below startPfn, gets another IOVA;
//   - reserved windows (the MSI doorbell, PCI holes) may cover RAM pfns;
//   - allocFast is size-aligned, so the physical pfn is usable only when it is
//     a multiple of the size rounded up to a power of two.
// Then the range comes from a fallback, Linux's tree without its rcache
// (dma/iova/linux.ts), top-down from the limit; alloc() always uses it.
//
// The fallback tree cannot see identity ranges (its API inserts only what it
// allocates, and reserve_iova is an O(n) walk) and cannot answer "is this
// range free?", so this domain keeps interval trees of its own: the identity
// ranges, a mirror of the live fallback ranges, and the reservations. An
// identity range is accepted only if it overlaps none of the three.
// A fallback range that overlaps an identity range is kept allocated in the
// tree while the tree is asked again, and given back afterwards. Guest RAM
// sits low and the fallback grows down from the limit, so that is rare.
//
// Invariants: `identity` and `fallbackLive` hold the live ranges, identity
// and fallback, and nothing else; no two live ranges overlap; the fallback
// tree holds every fallback range and every reservation; `reserved` holds
// the reservations, merged.
//
// Complexity: an identity hit is O(log n): three overlap queries and an
// insert. A fallback costs the tree's walk, an O(log n) overlap check and
// insert, and one more tree allocation per identity range in its way.
// free O(log n).
import type { IovaStats } from '../../abi/report.ts';
import { IOVA_MAX_PFN, IovaFastCounters, roundupPow2, type IovaDomain, type IovaDomainParams } from '../iova.ts';
import { LinuxIovaDomain } from './linux.ts';
import { IovaRbTree } from './rbtree.ts';

/** An identity range is a node of the one tree a C version would keep. */
const IDENTITY_NODE_BYTES = 64;

/** Whether any range in `tree` overlaps [lo, hi]. */
function overlaps(tree: IovaRbTree, lo: number, hi: number): boolean {
  const n = tree.ceilByEnd(lo);
  return n !== null && n.pfnLo <= hi;
}

export class IdentityIovaDomain implements IovaDomain {
  readonly startPfn: number;
  private readonly fallbackTree: LinuxIovaDomain;
  private readonly identity = new IovaRbTree();
  private readonly fallbackLive = new IovaRbTree();
  private readonly reserved = new IovaRbTree();
  /** Fallback ranges that hit an identity range, held while the tree is asked again. */
  private readonly parked: number[] = [];
  private readonly counters = new IovaFastCounters();

  constructor(params: IovaDomainParams) {
    this.startPfn = params.startPfn;
    this.fallbackTree = new LinuxIovaDomain(params, false);
  }

  alloc(size: number, limitPfn: number, sizeAligned: boolean): number {
    return this.fallback(size, limitPfn, sizeAligned);
  }

  free(pfn: number, _size?: number): void {
    const id = this.identity.find(pfn);
    if (id && id.pfnLo === pfn) {
      this.identity.erase(id);
      return;
    }
    const node = this.fallbackLive.find(pfn);
    if (!node || node.pfnLo !== pfn) return;
    const last = node.pfnHi;
    this.fallbackLive.erase(node);
    this.fallbackTree.free(pfn);
    // The tree merges a reservation made over a live range into its node, and free drops the lot.
    for (let r = this.reserved.ceilByEnd(pfn); r && r.pfnLo <= last; r = this.reserved.next(r)) this.fallbackTree.reserve(r.pfnLo, r.pfnHi);
  }

  reserve(pfnLo: number, pfnHi: number): boolean {
    if (!this.fallbackTree.reserve(pfnLo, pfnHi)) return false;
    // Merge with every reservation it overlaps or touches, so the tree stays disjoint.
    for (let n = this.reserved.ceilByEnd(pfnLo - 1); n && n.pfnLo <= pfnHi + 1; ) {
      const next = this.reserved.next(n);
      pfnLo = Math.min(pfnLo, n.pfnLo);
      pfnHi = Math.max(pfnHi, n.pfnHi);
      this.reserved.erase(n);
      n = next;
    }
    this.reserved.insert(this.reserved.newNode(pfnLo, pfnHi));
    return true;
  }

  /** No caches: flushRcache has nothing to give back. */
  allocFast(size: number, limitPfn: number, _flushRcache: boolean, physPfn?: number): number {
    if (physPfn !== undefined && this.identityFree(physPfn, size, limitPfn)) {
      this.identity.insert(this.identity.newNode(physPfn, physPfn + size - 1));
      return this.counters.hit(physPfn);
    }
    return this.counters.miss(this.fallback(size, limitPfn, true));
  }

  freeFast(pfn: number, size: number): void {
    this.free(pfn, size);
  }

  stats(): IovaStats {
    return { ...this.counters, ranges: this.fallbackTree.stats().ranges + this.identity.size };
  }

  /** The fallback tree plus a node per identity range; the JS-side mirrors stand for that one C tree. */
  footprintBytes(): number {
    return this.fallbackTree.footprintBytes() + this.identity.size * IDENTITY_NODE_BYTES;
  }

  /** Live identity ranges (for tests). */
  identityRanges(): number {
    return this.identity.size;
  }

  /** For tests: the trees' invariants hold and no identity range overlaps a fallback range. */
  validate(): void {
    this.fallbackTree.validate();
    this.identity.validate();
    this.fallbackLive.validate();
    this.reserved.validate();
    for (let n = this.identity.first(); n; n = this.identity.next(n)) {
      if (overlaps(this.fallbackLive, n.pfnLo, n.pfnHi)) throw new Error(`identity: [${n.pfnLo}, ${n.pfnHi}] overlaps a fallback range`);
    }
  }

  /** [physPfn, physPfn + size - 1] is size-aligned, within [startPfn, limit], and overlaps nothing. */
  private identityFree(physPfn: number, size: number, limitPfn: number): boolean {
    const last = physPfn + size - 1;
    return (
      physPfn >= this.startPfn &&
      last <= Math.min(limitPfn, IOVA_MAX_PFN) &&
      physPfn % roundupPow2(size) === 0 &&
      !overlaps(this.reserved, physPfn, last) &&
      !overlaps(this.identity, physPfn, last) &&
      !overlaps(this.fallbackLive, physPfn, last)
    );
  }

  /** Top-down from the fallback tree, skipping what an identity range holds. */
  private fallback(size: number, limitPfn: number, sizeAligned: boolean): number {
    let pfn = this.fallbackTree.alloc(size, limitPfn, sizeAligned);
    while (pfn >= 0 && overlaps(this.identity, pfn, pfn + size - 1)) {
      this.parked.push(pfn);
      pfn = this.fallbackTree.alloc(size, limitPfn, sizeAligned);
    }
    if (this.parked.length > 0) this.givebackParked();
    if (pfn >= 0) this.fallbackLive.insert(this.fallbackLive.newNode(pfn, pfn + size - 1));
    return pfn;
  }

  private givebackParked(): void {
    for (const p of this.parked) this.fallbackTree.free(p);
    this.parked.length = 0;
  }
}
