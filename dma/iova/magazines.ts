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
import { PerCpu } from '../../kernel/smp.ts';
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
    for (let i = this.size - 1; i >= 0; i--) {
      const pfn = this.pfns[i]!;
      if (pfn <= maxPfn) {
        this.pfns[i] = this.pfns[--this.size]!;
        return pfn;
      }
    }
    return -1;
  }
}

interface CpuMagazines {
  loaded: IovaMagazine;
  prev: IovaMagazine;
}

/** One size class: its per-CPU magazines and its depot. */
class MagazineClass {
  readonly cpu: PerCpu<CpuMagazines>;
  readonly depot: IovaMagazine[] = [];
  trimPending = false;

  constructor(params: IovaDomainParams) {
    this.cpu = new PerCpu(params.cpus, () => ({ loaded: new IovaMagazine(), prev: new IovaMagazine() }));
  }
}

export class IovaMagazineCaches {
  private readonly classes: MagazineClass[];
  /** Emptied magazines, reused before new ones are made. */
  private readonly spare: IovaMagazine[] = [];

  /** `release(pfn, cls)` hands a cached range back to the allocator proper. */
  constructor(
    private readonly params: IovaDomainParams,
    nrClasses: number,
    private readonly release: (pfn: number, cls: number) => void,
  ) {
    this.classes = Array.from({ length: nrClasses }, () => new MagazineClass(params));
  }

  /** A cached pfn of class `cls` at or below `maxPfn` from this CPU's magazines or the depot; -1 on a miss. */
  get(cls: number, maxPfn: number): number {
    const c = this.classes[cls]!;
    const mags = c.cpu.this_cpu;
    if (mags.loaded.size === 0) {
      if (mags.prev.size > 0) {
        [mags.loaded, mags.prev] = [mags.prev, mags.loaded];
      } else if (c.depot.length > 0) {
        this.spare.push(mags.loaded);
        mags.loaded = c.depot.pop()!;
      } else {
        return -1;
      }
    }
    return mags.loaded.pop(maxPfn);
  }

  /** Caches `pfn` in class `cls` on this CPU; a full loaded magazine goes to prev or, both full, to the depot. */
  put(cls: number, pfn: number): void {
    const c = this.classes[cls]!;
    const mags = c.cpu.this_cpu;
    if (mags.loaded.size === IOVA_MAG_SIZE) {
      if (mags.prev.size < IOVA_MAG_SIZE) {
        [mags.loaded, mags.prev] = [mags.prev, mags.loaded];
      } else {
        c.depot.push(mags.loaded);
        mags.loaded = this.spare.pop() ?? new IovaMagazine();
        this.scheduleTrim(cls);
      }
    }
    mags.loaded.pfns[mags.loaded.size++] = pfn;
  }

  /** Gives every cached pfn back to the allocator: each CPU's magazines, CPU by CPU, then the depots. */
  flush(): void {
    for (let cpu = 0; cpu < this.params.cpus.count; cpu++) {
      this.classes.forEach((c, cls) => {
        const mags = c.cpu.on(cpu);
        this.empty(mags.loaded, cls);
        this.empty(mags.prev, cls);
      });
    }
    this.classes.forEach((c, cls) => {
      while (c.depot.length > 0) this.retire(c.depot.pop()!, cls);
    });
  }

  /** Magazines in existence: two per class per CPU, the depots, the spares (for footprints). */
  magazines(): number {
    let n = this.spare.length;
    for (const c of this.classes) n += c.depot.length + 2 * this.params.cpus.count;
    return n;
  }

  /** Calls `fn` for every cached pfn (for validation). */
  forEach(fn: (pfn: number, cls: number) => void): void {
    this.classes.forEach((c, cls) => {
      const mags = [...c.cpu.all().flatMap((m) => [m.loaded, m.prev]), ...c.depot];
      for (const m of mags) for (let i = 0; i < m.size; i++) fn(m.pfns[i]!, cls);
    });
  }

  /** The depot trims itself towards one magazine per CPU, one magazine every IOVA_DEPOT_DELAY_NS. */
  private scheduleTrim(cls: number): void {
    const c = this.classes[cls]!;
    if (c.trimPending) return;
    c.trimPending = true;
    this.params.timers.add(IOVA_DEPOT_DELAY_NS, () => {
      c.trimPending = false;
      if (c.depot.length <= this.params.cpus.count) return;
      this.retire(c.depot.pop()!, cls);
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
