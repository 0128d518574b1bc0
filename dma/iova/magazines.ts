// Per-CPU magazines over a depot (Bonwick & Adams 2001), the layer Linux's
// iova rcache and vmem's quantum caches both put in front of an allocator:
// a fixed set of size classes, each with a loaded and a previous magazine
// per CPU and a shared depot of full magazines. The allocator owns the ranges;
// this layer only remembers first pfns of ranges the allocator still counts
// as allocated, and gives them back through `release` when told to flush or
// when the depot has held more than one magazine per CPU for a while.
//
// Invariants: a magazine holds at most IOVA_MAG_SIZE pfns, all of one class;
// every depot magazine is full; a pfn sits in at most one magazine.
// get and put are O(1), except that get scans one magazine (up to
// IOVA_MAG_SIZE entries) for a pfn under the limit.
import type { Cpus } from '../../kernel/smp.ts';
import type { IovaDomainParams } from '../iova.ts';

/** Pfns a magazine holds: with the count, a magazine fills 1 KiB. */
export const IOVA_MAG_SIZE = 127;
export const IOVA_MAG_BYTES = 1024;
/** How often the depot gives a magazine back while it holds more than one per CPU. */
export const IOVA_DEPOT_DELAY_NS = 100e6;

export class IovaMagazine {
  size = 0;
  readonly pfns = new Float64Array(IOVA_MAG_SIZE);

  /** The most recently put pfn at or below `maxPfn`, swap-removed; -1 when none is. */
  pop(maxPfn: number): number {
    const pfns = this.pfns;
    for (let i = this.size - 1; i >= 0; i--) {
      const pfn = pfns[i]!;
      if (pfn <= maxPfn) {
        const last = this.size - 1;
        pfns[i] = pfns[last]!;
        this.size = last;
        return pfn;
      }
    }
    return -1;
  }
}

/**
 * Per-CPU magazines live in two flat arrays indexed by `cpu * nrClasses + cls`
 * (the loaded and the previous magazine of that CPU and class), so the hot
 * path is one index computation and one array load; each class has a depot.
 */
export class IovaMagazineCaches {
  private readonly cpus: Cpus;
  private readonly nrClasses: number;
  private readonly loaded: IovaMagazine[] = [];
  private readonly prev: IovaMagazine[] = [];
  private readonly depots: IovaMagazine[][] = [];
  private readonly trimPending: boolean[] = [];
  /** Emptied magazines, reused before new ones are made. */
  private readonly spare: IovaMagazine[] = [];

  /** `release(pfn, cls)` hands a cached range back to the allocator proper. */
  constructor(
    private readonly params: IovaDomainParams,
    nrClasses: number,
    private readonly release: (pfn: number, cls: number) => void,
  ) {
    this.cpus = params.cpus;
    this.nrClasses = nrClasses;
    for (let cls = 0; cls < nrClasses; cls++) {
      this.depots.push([]);
      this.trimPending.push(false);
    }
    for (let cpu = 0; cpu < params.cpus.count; cpu++) {
      for (let cls = 0; cls < nrClasses; cls++) {
        this.loaded.push(new IovaMagazine());
        this.prev.push(new IovaMagazine());
      }
    }
  }

  /** A cached pfn of class `cls` at or below `maxPfn` from this CPU's magazines or the depot; -1 on a miss. */
  get(cls: number, maxPfn: number): number {
    const i = this.cpus.current * this.nrClasses + cls;
    const m = this.loaded[i]!;
    const n = m.size;
    if (n === 0) return this.getSlow(i, cls, maxPfn);
    // The most recent pfn usually fits: take it without scanning.
    const pfn = m.pfns[n - 1]!;
    if (pfn <= maxPfn) {
      m.size = n - 1;
      return pfn;
    }
    return m.pop(maxPfn);
  }

  /** Caches `pfn` in class `cls` on this CPU; a full loaded magazine goes to prev or, both full, to the depot. */
  put(cls: number, pfn: number): void {
    const i = this.cpus.current * this.nrClasses + cls;
    const m = this.loaded[i]!;
    const n = m.size;
    if (n < IOVA_MAG_SIZE) {
      m.pfns[n] = pfn;
      m.size = n + 1;
    } else {
      this.putSlow(i, cls, pfn);
    }
  }

  /** Gives every cached pfn back to the allocator: each CPU's magazines, CPU by CPU, then the depots. */
  flush(): void {
    const nrClasses = this.nrClasses;
    for (let cpu = 0; cpu < this.params.cpus.count; cpu++) {
      for (let cls = 0; cls < nrClasses; cls++) {
        const i = cpu * nrClasses + cls;
        this.empty(this.loaded[i]!, cls);
        this.empty(this.prev[i]!, cls);
      }
    }
    for (let cls = 0; cls < nrClasses; cls++) {
      const depot = this.depots[cls]!;
      while (depot.length > 0) this.retire(depot.pop()!, cls);
    }
  }

  /** Magazines in existence: two per class per CPU, the depots, the spares (for footprints). */
  magazines(): number {
    let n = this.spare.length;
    for (const depot of this.depots) n += depot.length + 2 * this.params.cpus.count;
    return n;
  }

  /** Calls `fn` for every cached pfn (for validation). */
  forEach(fn: (pfn: number, cls: number) => void): void {
    const nrClasses = this.nrClasses;
    for (let cls = 0; cls < nrClasses; cls++) {
      const mags: IovaMagazine[] = [];
      for (let cpu = 0; cpu < this.params.cpus.count; cpu++) mags.push(this.loaded[cpu * nrClasses + cls]!, this.prev[cpu * nrClasses + cls]!);
      mags.push(...this.depots[cls]!);
      for (const m of mags) for (let i = 0; i < m.size; i++) fn(m.pfns[i]!, cls);
    }
  }

  /** get with the loaded magazine empty: the previous one if it holds any, else a full one from the depot. */
  private getSlow(i: number, cls: number, maxPfn: number): number {
    const p = this.prev[i]!;
    if (p.size > 0) {
      this.prev[i] = this.loaded[i]!;
      this.loaded[i] = p;
      return p.pop(maxPfn);
    }
    const depot = this.depots[cls]!;
    if (depot.length === 0) return -1;
    this.spare.push(this.loaded[i]!);
    const m = depot.pop()!;
    this.loaded[i] = m;
    return m.pop(maxPfn);
  }

  /** put with the loaded magazine full. */
  private putSlow(i: number, cls: number, pfn: number): void {
    const p = this.prev[i]!;
    let m: IovaMagazine;
    if (p.size < IOVA_MAG_SIZE) {
      this.prev[i] = this.loaded[i]!;
      m = p;
    } else {
      this.depots[cls]!.push(this.loaded[i]!);
      m = this.spare.pop() ?? new IovaMagazine();
      this.scheduleTrim(cls);
    }
    this.loaded[i] = m;
    m.pfns[m.size++] = pfn;
  }

  /** The depot trims itself towards one magazine per CPU, one magazine every IOVA_DEPOT_DELAY_NS. */
  private scheduleTrim(cls: number): void {
    if (this.trimPending[cls]) return;
    this.trimPending[cls] = true;
    this.params.timers.add(IOVA_DEPOT_DELAY_NS, () => {
      this.trimPending[cls] = false;
      const depot = this.depots[cls]!;
      if (depot.length <= this.params.cpus.count) return;
      this.retire(depot.pop()!, cls);
      this.scheduleTrim(cls);
    });
  }

  private retire(mag: IovaMagazine, cls: number): void {
    this.empty(mag, cls);
    this.spare.push(mag);
  }

  private empty(mag: IovaMagazine, cls: number): void {
    for (let i = 0; i < mag.size; i++) this.release(mag.pfns[i]!, cls);
    mag.size = 0;
  }
}
