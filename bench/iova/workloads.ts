// The IOVA benchmark's workloads (../shared/reference/iova.md §5): operation
// streams of allocations and frees, each deterministic from a seed and
// generated into typed arrays before anything is timed. `ivory bench iova`
// replays them against each allocator (bench/iova/runner.ts); a second
// consumer can replay the very same streams through the DMA API and the
// virtio-iommu.
//
// The API, for any consumer:
//
//   const w = resolveWorkload('mixed-48');          // or WORKLOADS[i], or nic({ cpus: 8 }), mapBench({...})
//   const s = w.generate(seed, ops);                // an OpStream: nothing but typed arrays
//   reserve every w.reserved[j] ({lo, hi}, inclusive pfns); the domain's lowest pfn is w.startPfn
//   const pfn = new Float64Array(s.slots).fill(-1);  // what each slot holds now
//   for i in 0 .. s.length-1, on simulated CPU s.cpu[i]:
//     OP_ALLOC: device w.devices[s.dev[i]] maps s.pages[i] pages of the buffer at guest-physical pfn
//               s.phys[i]; the IOVA (in pfns) goes to pfn[s.slot[i]], -1 when the allocation failed.
//               The allocator call is allocFast(pages, s.limit[i], true, phys) — or, for a device
//               with `pci32` still set and a limit above 4 GiB, first allocFast(pages, 0xfffff, false,
//               phys) and, if that fails, clear the device's pci32 for good and call with the full
//               limit: exactly dma-iommu's iommu_dma_alloc_iova (reference §2.1).
//     OP_FREE:  unmaps slot s.slot[i] (s.pages[i] is the size it was mapped with): freeFast(pfn, pages),
//               skipped when the allocation failed; the slot is then empty.
//   Ops [0, s.measureFrom) build the starting state and are not timed; [s.measureFrom, s.length)
//   is the measured phase, `ops` operations long (to the end of its last step).
//
// Units: pfns of a 4 KiB granule; every limit is inclusive (a 32-bit mask is
// pfn 0xfffff). A slot is one live range's place: an alloc into a slot
// always follows the free of what it held, and a free carries the same
// `pages` as the alloc it undoes. Each slot owns one simulated buffer,
// phys = PHYS_BASE_PFN + slot * (the workload's largest request rounded up
// to a power of two), so two live ranges never share physical pages and an
// identity mapping is size-aligned.
import { Xoshiro128 } from '../../abi/prng.ts';

export const OP_ALLOC = 0;
export const OP_FREE = 1;

/** Guest buffers start at 1 GiB. */
export const PHYS_BASE_PFN = 0x40000;
/** The IOMMU's input range: 48 bits (x86 4-level tables, virtio-iommu's usual aperture). */
export const APERTURE_BITS = 48;
const GRANULE_SHIFT = 12;
export const PFN_32BIT_LIMIT = 0xfffff;

/** A pfn range, both ends included. */
export interface PfnRange {
  readonly lo: number;
  readonly hi: number;
}

/** A device that maps: its DMA mask and whether dma-iommu tries below 4 GiB first (PCI's SAC trick). */
export interface DeviceSpec {
  readonly name: string;
  /** The DMA mask's width (dma_bits). */
  readonly dmaBits: number;
  /** Inclusive limit pfn: the mask clipped to the aperture, shifted down by the granule. */
  readonly limitPfn: number;
  /** pci_32bit_workaround: starts true for a PCI device whose mask exceeds 32 bits, cleared on the first failed 32-bit try. */
  readonly pci32: boolean;
}

export interface OpStream {
  readonly workload: string;
  readonly seed: number;
  /** All ops, build-up included. */
  readonly length: number;
  /** The first op of the measured phase. */
  readonly measureFrom: number;
  /** Where the live set is at its built-up size (the end of build-up; the peak for `fill`): memory per live range is read here. */
  readonly builtUpAt: number;
  /** OP_ALLOC or OP_FREE per op. */
  readonly kind: Uint8Array;
  /** The slot an op fills or empties; slots are 0 .. slots-1. */
  readonly slot: Uint32Array;
  /** Pages per op: the request's size, and for a free the size the slot was allocated with. */
  readonly pages: Uint32Array;
  /** The simulated CPU each op runs on, 0 .. the workload's cpus-1. */
  readonly cpu: Uint8Array;
  /** The device each op is for: an index into the workload's devices. */
  readonly dev: Uint8Array;
  /** devices[dev].limitPfn, per op, for the replay loop. */
  readonly limit: Float64Array;
  /** The guest-physical pfn of the slot's buffer (the identity strategy maps IOVA = this). */
  readonly phys: Float64Array;
  readonly slots: number;
}

export interface Workload {
  /** The name `--workload` takes, with `:key=value` parameters for parameterised ones (nic, map-bench, ...). */
  readonly name: string;
  readonly description: string;
  /** Where the workload comes from (reference section). */
  readonly source: string;
  /** iova_domain.start_pfn: IOVA 0 is never handed out. */
  readonly startPfn: number;
  /** Reserved before the first op, in this order. */
  readonly reserved: readonly PfnRange[];
  readonly devices: readonly DeviceSpec[];
  /** Simulated CPUs the stream uses. */
  readonly cpus: number;
  /** The limit fragmentation is measured under (the main device's). */
  readonly limitPfn: number;
  /** Measured ops when `--ops` is not given. */
  readonly defaultOps: number;
  /** The largest request in pages: the unusable-free-space index is taken at this size. */
  readonly maxPages: number;
  generate(seed: number, ops: number): OpStream;
}

// ---------------------------------------------------------------- devices

/** A device with a `dmaBits` mask behind the 48-bit aperture. */
export function device(name: string, dmaBits: number, pci: boolean): DeviceSpec {
  const bits = Math.min(dmaBits, APERTURE_BITS);
  return { name, dmaBits, limitPfn: 2 ** (bits - GRANULE_SHIFT) - 1, pci32: pci && dmaBits > 32 };
}

const DEV32 = device('dev32', 32, false);
const DEV48 = device('dev48', 48, false);
/** A 64-bit PCI device: its mask is clipped to the aperture and dma-iommu tries below 4 GiB first. */
const PCI64 = device('pci64', 64, true);

/** Windows from reference §2.3, in pfns. */
export const X86_MSI_WINDOW: PfnRange = { lo: 0xfee00, hi: 0xfeeff }; // 0xfee00000-0xfeefffff
export const SW_MSI_WINDOW: PfnRange = { lo: 0x8000, hi: 0x80ff }; // 0x8000000 + 1 MiB
export const AMD_HT_WINDOW: PfnRange = { lo: 0xfd00000, hi: 0xfffffff }; // 0xfd00000000-0xffffffffff

// ---------------------------------------------------------------- building a stream

/** Appends ops to growable typed arrays; knows each slot's size, device and buffer. */
class StreamBuilder {
  n = 0;
  measureFrom = 0;
  builtUpAt = -1;
  private kind: Uint8Array;
  private slot: Uint32Array;
  private pages: Uint32Array;
  private cpu: Uint8Array;
  private dev: Uint8Array;
  private slotPages: Uint32Array;
  private slotDev: Uint8Array;
  private maxSlot = -1;

  constructor(
    private readonly devices: readonly DeviceSpec[],
    /** The largest request the workload makes: slot buffers are spaced by it rounded up to a power of two. */
    private readonly maxPages: number,
    capacity: number,
    slots: number,
  ) {
    capacity = Math.max(16, capacity);
    this.kind = new Uint8Array(capacity);
    this.slot = new Uint32Array(capacity);
    this.pages = new Uint32Array(capacity);
    this.cpu = new Uint8Array(capacity);
    this.dev = new Uint8Array(capacity);
    this.slotPages = new Uint32Array(Math.max(1, slots));
    this.slotDev = new Uint8Array(Math.max(1, slots));
  }

  alloc(slot: number, pages: number, cpu: number, dev = 0): void {
    if (slot >= this.slotPages.length) this.growSlots(slot + 1);
    this.slotPages[slot] = pages;
    this.slotDev[slot] = dev;
    if (slot > this.maxSlot) this.maxSlot = slot;
    this.push(OP_ALLOC, slot, pages, cpu, dev);
  }

  free(slot: number, cpu: number): void {
    this.push(OP_FREE, slot, this.slotPages[slot]!, cpu, this.slotDev[slot]!);
  }

  /** Marks the end of build-up: what follows is measured. */
  startMeasuring(): void {
    this.measureFrom = this.n;
  }

  /** Ops in the measured phase so far. */
  get measured(): number {
    return this.n - this.measureFrom;
  }

  finish(workload: string, seed: number): OpStream {
    const n = this.n;
    const stride = roundupPow2(this.maxPages);
    const limit = new Float64Array(n);
    const phys = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      limit[i] = this.devices[this.dev[i]!]!.limitPfn;
      phys[i] = PHYS_BASE_PFN + this.slot[i]! * stride;
    }
    return {
      workload,
      seed,
      length: n,
      measureFrom: this.measureFrom,
      builtUpAt: this.builtUpAt >= 0 ? this.builtUpAt : this.measureFrom,
      kind: this.kind.slice(0, n),
      slot: this.slot.slice(0, n),
      pages: this.pages.slice(0, n),
      cpu: this.cpu.slice(0, n),
      dev: this.dev.slice(0, n),
      limit,
      phys,
      slots: this.maxSlot + 1,
    };
  }

  private push(kind: number, slot: number, pages: number, cpu: number, dev: number): void {
    if (this.n === this.kind.length) this.grow();
    const i = this.n++;
    this.kind[i] = kind;
    this.slot[i] = slot;
    this.pages[i] = pages;
    this.cpu[i] = cpu;
    this.dev[i] = dev;
  }

  private grow(): void {
    const cap = this.kind.length * 2;
    const g = <T extends Uint8Array | Uint32Array>(a: T): T => {
      const b = new (a.constructor as new (n: number) => T)(cap);
      b.set(a);
      return b;
    };
    this.kind = g(this.kind);
    this.slot = g(this.slot);
    this.pages = g(this.pages);
    this.cpu = g(this.cpu);
    this.dev = g(this.dev);
  }

  private growSlots(min: number): void {
    const cap = Math.max(min, this.slotPages.length * 2);
    const p = new Uint32Array(cap);
    p.set(this.slotPages);
    this.slotPages = p;
    const d = new Uint8Array(cap);
    d.set(this.slotDev);
    this.slotDev = d;
  }
}

/** Seeded draws on the project's xoshiro128**. */
class Rng {
  private readonly x: Xoshiro128;
  constructor(seed: number) {
    this.x = new Xoshiro128(seed);
  }
  /** An integer in [0, n), n <= 2^32. */
  below(n: number): number {
    return Math.floor((this.x.next() / 4294967296) * n);
  }
  chance(p: number): boolean {
    return this.x.next() / 4294967296 < p;
  }
}

function roundupPow2(n: number): number {
  return n <= 1 ? 1 : 2 ** (32 - Math.clz32(n - 1));
}

interface Base {
  name: string;
  description: string;
  source: string;
  startPfn?: number;
  reserved?: readonly PfnRange[];
  devices: readonly DeviceSpec[];
  cpus: number;
  limitPfn?: number;
  defaultOps: number;
  maxPages: number;
  /** Ops of build-up, for the builder's first capacity. */
  setupOps: number;
  slots: number;
  /** Emits build-up, calls b.startMeasuring(), then emits steps until b.measured >= ops. */
  body(b: StreamBuilder, rng: Rng, ops: number): void;
}

function workload(w: Base): Workload {
  return {
    name: w.name,
    description: w.description,
    source: w.source,
    startPfn: w.startPfn ?? 1,
    reserved: w.reserved ?? [],
    devices: w.devices,
    cpus: w.cpus,
    limitPfn: w.limitPfn ?? w.devices[0]!.limitPfn,
    defaultOps: w.defaultOps,
    maxPages: w.maxPages,
    generate(seed: number, ops: number): OpStream {
      if (!Number.isSafeInteger(ops) || ops < 1) throw new RangeError(`ops: expected a positive integer, got ${ops}`);
      const b = new StreamBuilder(w.devices, w.maxPages, w.setupOps + ops + 64, w.slots);
      w.body(b, new Rng(seed), ops);
      return b.finish(w.name, seed);
    },
  };
}

// ---------------------------------------------------------------- the simple shapes

const RING_LIVE = 256;

/** ring: 256 live single pages; each step frees the oldest and allocates one. */
function ring(name: string, dev: DeviceSpec, reserved: readonly PfnRange[], description: string, source: string): Workload {
  return workload({
    name,
    description,
    source,
    reserved,
    devices: [dev],
    cpus: 1,
    defaultOps: 400_000,
    maxPages: 1,
    setupOps: RING_LIVE,
    slots: RING_LIVE,
    body(b, _rng, ops) {
      for (let s = 0; s < RING_LIVE; s++) b.alloc(s, 1, 0);
      b.startMeasuring();
      for (let k = 0; b.measured < ops; k++) {
        const s = k % RING_LIVE;
        b.free(s, 0);
        b.alloc(s, 1, 0);
      }
    },
  });
}

const MIXED_LIVE = 4096;

/** mixed: 4096 live ranges of 1, 2, 4 ... 64 pages; each step frees a random one and allocates a new random size. */
function mixed(name: string, dev: DeviceSpec): Workload {
  return workload({
    name,
    description: `${MIXED_LIVE} live ranges of 1, 2, 4 ... 64 pages (uniform over the 7 sizes); each step frees a random live range and allocates a new one`,
    source: '§5.3 (fragmentation), the issue\'s simple shape',
    devices: [dev],
    cpus: 1,
    defaultOps: 40_000,
    maxPages: 64,
    setupOps: MIXED_LIVE,
    slots: MIXED_LIVE,
    body(b, rng, ops) {
      for (let s = 0; s < MIXED_LIVE; s++) b.alloc(s, 1 << rng.below(7), 0);
      b.startMeasuring();
      while (b.measured < ops) {
        const s = rng.below(MIXED_LIVE);
        b.free(s, 0);
        b.alloc(s, 1 << rng.below(7), 0);
      }
    },
  });
}

/** fill: allocate ops/2 single pages, then free them all in the same order. */
function fill(name: string, dev: DeviceSpec): Workload {
  return workload({
    name,
    description: 'allocate single pages (2^20 by default: ops/2), then free them all in allocation order; under the 32-bit limit the last one finds the space full (it holds 2^20 - 1 pages above pfn 0)',
    source: 'the issue\'s simple shape',
    devices: [dev],
    cpus: 1,
    defaultOps: 2 ** 21,
    maxPages: 1,
    setupOps: 0,
    slots: 0,
    body(b, _rng, ops) {
      const n = Math.max(1, Math.floor(ops / 2));
      b.startMeasuring();
      for (let s = 0; s < n; s++) b.alloc(s, 1, 0);
      b.builtUpAt = b.n;
      for (let s = 0; s < n; s++) b.free(s, 0);
    },
  });
}

// ---------------------------------------------------------------- the realistic ones

export interface NicParams {
  /** Simulated CPUs; one TX queue per CPU. */
  readonly cpus: number;
  /** Descriptors per queue: live single-page mappings per queue. */
  readonly ring: number;
  /** Packets per transmit burst and per completion. */
  readonly batch: number;
}

export const NIC_DEFAULTS: NicParams = { cpus: 4, ring: 256, batch: 32 };

/**
 * NIC transmit rings in steady state: queue q maps on CPU q (xmit) and its
 * completions unmap on CPU q+1 (the IRQ's CPU), so every range is freed on
 * another CPU than the one that allocated it (with one CPU, the same one).
 */
export function nic(p: Partial<NicParams> = {}): Workload {
  const { cpus, ring: size, batch } = { ...NIC_DEFAULTS, ...p };
  checkParam('nic', 'cpus', cpus, 1, 255);
  checkParam('nic', 'ring', size, 1, 1 << 20);
  checkParam('nic', 'batch', batch, 1, size);
  const queues = cpus;
  const params = paramSuffix(p, NIC_DEFAULTS);
  return workload({
    name: `nic${params}`,
    description: `${queues} TX queue(s) of ${size} single-page buffers, one per CPU; each turn a queue's completion unmaps its ${batch} oldest on CPU q+1, then xmit maps ${batch} on CPU q; a 64-bit PCI device (32-bit try first)`,
    source: '§5.1',
    devices: [PCI64],
    cpus,
    defaultOps: 400_000,
    maxPages: 1,
    setupOps: queues * size,
    slots: queues * size,
    body(b, _rng, ops) {
      const head = new Uint32Array(queues); // the oldest position still mapped, per queue
      for (let q = 0; q < queues; q++) for (let k = 0; k < size; k++) b.alloc(q * size + k, 1, q % cpus);
      b.startMeasuring();
      for (let turn = 0; b.measured < ops; turn++) {
        const q = turn % queues;
        const xmitCpu = q % cpus;
        const irqCpu = (q + 1) % cpus;
        const h = head[q]!;
        for (let k = 0; k < batch; k++) b.free(q * size + ((h + k) % size), irqCpu);
        for (let k = 0; k < batch; k++) b.alloc(q * size + ((h + k) % size), 1, xmitCpu);
        head[q] = (h + batch) % size;
      }
    },
  });
}

export interface StorageParams {
  readonly cpus: number;
  /** Requests in flight per CPU (NVMe queue per CPU): live ranges = cpus x depth. */
  readonly depth: number;
}

export const STORAGE_DEFAULTS: StorageParams = { cpus: 4, depth: 32 };

/** A scatter-gather request's size in pages, 1 .. 1024 (4 KiB .. 4 MiB): log-uniform class, half of them not a power of two. */
function sgPages(rng: Rng): number {
  const k = rng.below(11);
  if (k === 0 || rng.chance(0.5)) return 1 << k;
  const half = 1 << (k - 1);
  return half + 1 + rng.below(half);
}

export function storageSg(p: Partial<StorageParams> = {}): Workload {
  const { cpus, depth } = { ...STORAGE_DEFAULTS, ...p };
  checkParam('storage-sg', 'cpus', cpus, 1, 255);
  checkParam('storage-sg', 'depth', depth, 1, 1 << 16);
  const live = cpus * depth;
  return workload({
    name: `storage-sg${paramSuffix(p, STORAGE_DEFAULTS)}`,
    description: `scatter-gather lists of 4 KiB .. 4 MiB (log-uniform over 11 size classes, half of them not powers of two), one IOVA range each; ${depth} in flight per CPU on ${cpus} CPUs (iodepth ${live}); each step completes a random CPU's oldest request and submits a new one there; a 64-bit PCI device`,
    source: '§5.2 (NVMe mdts=10, the 128 KiB rcache threshold)',
    devices: [PCI64],
    cpus,
    defaultOps: 100_000,
    maxPages: 1024,
    setupOps: live,
    slots: live,
    body(b, rng, ops) {
      const head = new Uint32Array(cpus);
      for (let c = 0; c < cpus; c++) for (let k = 0; k < depth; k++) b.alloc(c * depth + k, sgPages(rng), c);
      b.startMeasuring();
      while (b.measured < ops) {
        const c = rng.below(cpus);
        const s = c * depth + head[c]!;
        head[c] = (head[c]! + 1) % depth;
        b.free(s, c);
        b.alloc(s, sgPages(rng), c);
      }
    },
  });
}

export interface LongShortParams {
  /** Live single-page ranges after build-up. */
  readonly live: number;
}

export const LONG_SHORT_DEFAULTS: LongShortParams = { live: 300_000 };

export function longShort(p: Partial<LongShortParams> = {}): Workload {
  const { live } = { ...LONG_SHORT_DEFAULTS, ...p };
  checkParam('long-short', 'live', live, 1, 1 << 24);
  return workload({
    name: `long-short${paramSuffix(p, LONG_SHORT_DEFAULTS)}`,
    description: `build ${live} live single pages, then each step frees a random live one and allocates a page (Peng Zhang's recipe, which takes 1,000 such steps; by default 10,000 here); 48-bit limit`,
    source: '§5.3, §1.6 P6 [AugRB]',
    devices: [DEV48],
    cpus: 1,
    defaultOps: 20_000,
    maxPages: 1,
    setupOps: live,
    slots: live,
    body(b, rng, ops) {
      for (let s = 0; s < live; s++) b.alloc(s, 1, 0);
      b.startMeasuring();
      while (b.measured < ops) {
        const s = rng.below(live);
        b.free(s, 0);
        b.alloc(s, 1, 0);
      }
    },
  });
}

const DMA32_CHUNK = 64;

/**
 * dma32-full: a 32-bit device fills the whole 32-bit space (64-page chunks
 * and 32+16+8+4+2+1 pages for [1, 63]); then a 64-bit PCI device builds a
 * ring (its first 32-bit try fails and dma-iommu stops trying). Steps, half
 * and half: the 32-bit device frees a random chunk, allocates 64 pages
 * again (the one hole) and tries one page more, which finds the space full;
 * or the PCI device frees its oldest page and maps one.
 */
function dma32Full(): Workload {
  const chunks = (PFN_32BIT_LIMIT + 1 - DMA32_CHUNK) / DMA32_CHUNK; // [64, 0xfffff]
  const tail = [32, 16, 8, 4, 2, 1]; // [1, 63]
  const extra = chunks + tail.length;
  const ringBase = extra + 1;
  return workload({
    name: 'dma32-full',
    description: `a 32-bit device fills the 32-bit space (${chunks} chunks of 64 pages and 63 pages below them), a 64-bit PCI device (32-bit try first, as dma-iommu) keeps 256 single pages; each step: either the 32-bit device frees a random chunk, allocates 64 pages again and tries one page more (space full), or the PCI device frees its oldest page and maps one`,
    source: '§5.4, §1.6 P1',
    devices: [DEV32, PCI64],
    cpus: 1,
    limitPfn: PFN_32BIT_LIMIT,
    defaultOps: 6_000,
    maxPages: DMA32_CHUNK,
    setupOps: chunks + tail.length + RING_LIVE,
    slots: ringBase + RING_LIVE,
    body(b, rng, ops) {
      for (let s = 0; s < chunks; s++) b.alloc(s, DMA32_CHUNK, 0, 0);
      tail.forEach((pages, i) => b.alloc(chunks + i, pages, 0, 0));
      for (let k = 0; k < RING_LIVE; k++) b.alloc(ringBase + k, 1, 0, 1);
      b.startMeasuring();
      let head = 0;
      while (b.measured < ops) {
        if (rng.chance(0.5)) {
          const s = rng.below(chunks);
          b.free(s, 0);
          b.alloc(s, DMA32_CHUNK, 0, 0);
          b.alloc(extra, 1, 0, 0);
          b.free(extra, 0);
        } else {
          const s = ringBase + head;
          head = (head + 1) % RING_LIVE;
          b.free(s, 0);
          b.alloc(s, 1, 0, 1);
        }
      }
    },
  });
}

export interface NearFullParams {
  /** The device's mask: the domain is 2^(bits-12) pages. */
  readonly bits: number;
  /** Occupancy the stream swings between, in percent of the space. */
  readonly low: number;
  readonly high: number;
}

export const NEAR_FULL_DEFAULTS: NearFullParams = { bits: 28, low: 90, high: 99 };

/** Space 90-99% full: occupancy (as the workload counts it) sweeps up to `high` and back down to `low`. */
export function nearFull(p: Partial<NearFullParams> = {}): Workload {
  const { bits, low, high } = { ...NEAR_FULL_DEFAULTS, ...p };
  checkParam('near-full', 'bits', bits, 16, 48);
  checkParam('near-full', 'low', low, 1, 99);
  checkParam('near-full', 'high', high, low, 100);
  const dev = device(`dev${bits}`, bits, false);
  const capacity = dev.limitPfn; // pfns 1 .. limit
  return workload({
    name: `near-full${paramSuffix(p, NEAR_FULL_DEFAULTS)}`,
    description: `a ${bits}-bit domain (${capacity} pages) filled to ${low}% with ranges of 1, 2, 4, 8, 16 pages; then occupancy sweeps up to ${high}% (3 allocs to 1 random free) and back down to ${low}% (3 frees to 1 alloc), again and again`,
    source: '§5.5',
    devices: [dev],
    cpus: 1,
    defaultOps: 40_000,
    maxPages: 16,
    setupOps: Math.ceil((capacity * low) / 100 / 3),
    slots: Math.ceil(capacity / 3),
    body(b, rng, ops) {
      const lowPages = (capacity * low) / 100;
      const highPages = (capacity * high) / 100;
      const live: number[] = []; // slots in use
      const spare: number[] = []; // slots free for reuse
      const pagesOf: number[] = [];
      let next = 0;
      let used = 0;
      const alloc = () => {
        const s = spare.length > 0 ? spare.pop()! : next++;
        const pages = 1 << rng.below(5);
        pagesOf[s] = pages;
        used += pages;
        live.push(s);
        b.alloc(s, pages, 0);
      };
      const free = () => {
        const i = rng.below(live.length);
        const s = live[i]!;
        live[i] = live[live.length - 1]!;
        live.pop();
        used -= pagesOf[s]!;
        spare.push(s);
        b.free(s, 0);
      };
      while (used < lowPages) alloc();
      b.startMeasuring();
      let rising = true;
      while (b.measured < ops) {
        if (rising && used >= highPages) rising = false;
        else if (!rising && used <= lowPages) rising = true;
        if (live.length === 0 || rng.chance(rising ? 0.75 : 0.25)) alloc();
        else free();
      }
    },
  });
}

const HOLES_LIVE = 2048;

/** Reserved holes everywhere a real platform has them; a 40-bit device with mixed sizes and a 32-bit device's ring. */
function holes(): Workload {
  const dev40 = device('dev40', 40, false);
  const ringBase = HOLES_LIVE;
  return workload({
    name: 'holes',
    description: `reserved: the software MSI window, the x86 MSI window, the AMD HyperTransport window (the top of a 40-bit space) and IOVA 0 (start pfn 1); a 40-bit device keeps ${HOLES_LIVE} ranges of 1 .. 64 pages (random free order) and a 32-bit device a ring of 256 single pages, steps half and half`,
    source: '§5.6, §2.3',
    reserved: [SW_MSI_WINDOW, X86_MSI_WINDOW, AMD_HT_WINDOW],
    devices: [dev40, DEV32],
    cpus: 1,
    defaultOps: 200_000,
    maxPages: 64,
    setupOps: HOLES_LIVE + RING_LIVE,
    slots: HOLES_LIVE + RING_LIVE,
    body(b, rng, ops) {
      for (let s = 0; s < HOLES_LIVE; s++) b.alloc(s, 1 << rng.below(7), 0, 0);
      for (let k = 0; k < RING_LIVE; k++) b.alloc(ringBase + k, 1, 0, 1);
      b.startMeasuring();
      let head = 0;
      while (b.measured < ops) {
        if (rng.chance(0.5)) {
          const s = rng.below(HOLES_LIVE);
          b.free(s, 0);
          b.alloc(s, 1 << rng.below(7), 0, 0);
        } else {
          const s = ringBase + head;
          head = (head + 1) % RING_LIVE;
          b.free(s, 0);
          b.alloc(s, 1, 0, 1);
        }
      }
    },
  });
}

/** The knobs of the kernel's tools/dma/dma_map_benchmark, defaults as the tool's. */
export interface MapBenchParams {
  /** -t: threads, each on its own simulated CPU. */
  readonly threads: number;
  /** -g: pages per mapping. */
  readonly granule: number;
  /** -b: the DMA mask's width. */
  readonly bits: number;
  /** -x (dma_trans_ns) as ops: how many other operations run between a map and its unmap. */
  readonly delay: number;
}

export const MAP_BENCH_DEFAULTS: MapBenchParams = { threads: 1, granule: 1, bits: 32, delay: 0 };
/** Maps a thread issues in one turn before the next thread runs. */
const MAP_BENCH_SLICE = 32;

export function mapBench(p: Partial<MapBenchParams> = {}): Workload {
  const { threads, granule, bits, delay } = { ...MAP_BENCH_DEFAULTS, ...p };
  checkParam('map-bench', 'threads', threads, 1, 255);
  checkParam('map-bench', 'granule', granule, 1, 1024);
  checkParam('map-bench', 'bits', bits, 20, 64);
  checkParam('map-bench', 'delay', delay, 0, 1 << 20);
  const dev = device(`dev${bits}`, bits, true);
  return workload({
    name: `map-bench${paramSuffix(p, MAP_BENCH_DEFAULTS)}`,
    description: `dma_map_benchmark: ${threads} thread(s) (one simulated CPU each, ${MAP_BENCH_SLICE} maps per turn), each mapping ${granule} page(s) with a ${bits}-bit mask (a PCI device) and unmapping it ${delay} other operation(s) later on the same CPU`,
    source: '§5.8 [K-mapbench]',
    devices: [dev],
    cpus: threads,
    defaultOps: 400_000,
    maxPages: granule,
    setupOps: 0,
    slots: delay + 2,
    body(b, _rng, ops) {
      // Pending unmaps in due order: slot, CPU, and the op index they are due at.
      const cap = delay + 2;
      const qSlot = new Uint32Array(cap);
      const qCpu = new Uint8Array(cap);
      const qDue = new Float64Array(cap);
      let qHead = 0;
      let qLen = 0;
      const spare: number[] = [];
      let next = 0;
      let thread = 0;
      let inTurn = 0;
      b.startMeasuring();
      b.builtUpAt = Math.min(delay + 1, ops); // the first unmap: the live set is at its largest
      while (b.measured < ops || qLen > 0) {
        const pos = b.measured;
        if (qLen > 0 && (qDue[qHead]! <= pos || pos >= ops)) {
          b.free(qSlot[qHead]!, qCpu[qHead]!);
          spare.push(qSlot[qHead]!);
          qHead = (qHead + 1) % cap;
          qLen--;
          continue;
        }
        const s = spare.length > 0 ? spare.pop()! : next++;
        b.alloc(s, granule, thread);
        const t = (qHead + qLen) % cap;
        qSlot[t] = s;
        qCpu[t] = thread;
        qDue[t] = pos + 1 + delay;
        qLen++;
        if (++inTurn === MAP_BENCH_SLICE) {
          inTurn = 0;
          thread = (thread + 1) % threads;
        }
      }
    },
  });
}

// ---------------------------------------------------------------- the registry

function checkParam(workload: string, key: string, v: number, min: number, max: number): void {
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new RangeError(`${workload}: ${key} must be an integer in ${min}..${max}, got ${v}`);
}

/** `:key=value` for each parameter that differs from its default, in the defaults' order. */
function paramSuffix<T extends object>(p: Partial<T>, defaults: T): string {
  return Object.keys(defaults)
    .filter((k) => p[k as keyof T] !== undefined && p[k as keyof T] !== defaults[k as keyof T])
    .map((k) => `:${k}=${p[k as keyof T]}`)
    .join('');
}

const SIMPLE_SOURCE = 'the issue\'s simple shape; §5.1 (ring)';

/** Every workload at its defaults, in the order the benchmark runs them. */
export const WORKLOADS: readonly Workload[] = [
  ring('ring-32', DEV32, [], '256 live single pages; each step frees the oldest and allocates one; 32-bit limit (pfn 0xfffff)', SIMPLE_SOURCE),
  ring('ring-48', DEV48, [], '256 live single pages; each step frees the oldest and allocates one; 48-bit limit (pfn 2^36-1)', SIMPLE_SOURCE),
  mixed('mixed-32', DEV32),
  mixed('mixed-48', DEV48),
  fill('fill-32', DEV32),
  fill('fill-48', DEV48),
  ring('reserved-32', DEV32, [X86_MSI_WINDOW, SW_MSI_WINDOW], 'as ring-32, with the x86 MSI window (0xfee00000-0xfeefffff) and the software MSI window (0x8000000 + 1 MiB) reserved first', '§5.6, §2.3'),
  ring('reserved-48', DEV48, [X86_MSI_WINDOW, SW_MSI_WINDOW], 'as ring-48, with the x86 MSI window (0xfee00000-0xfeefffff) and the software MSI window (0x8000000 + 1 MiB) reserved first', '§5.6, §2.3'),
  nic(),
  storageSg(),
  longShort(),
  dma32Full(),
  nearFull(),
  holes(),
  mapBench(),
];

const PARAMETERISED: Record<string, { defaults: object; make: (p: Record<string, number>) => Workload }> = {
  nic: { defaults: NIC_DEFAULTS, make: (p) => nic(p) },
  'storage-sg': { defaults: STORAGE_DEFAULTS, make: (p) => storageSg(p) },
  'long-short': { defaults: LONG_SHORT_DEFAULTS, make: (p) => longShort(p) },
  'near-full': { defaults: NEAR_FULL_DEFAULTS, make: (p) => nearFull(p) },
  'map-bench': { defaults: MAP_BENCH_DEFAULTS, make: (p) => mapBench(p) },
};

/**
 * A workload by name: one of WORKLOADS, or a parameterised one with
 * `:key=value` knobs, e.g. `map-bench:threads=4:granule=16:bits=48:delay=64`
 * or `nic:cpus=8`. Throws a RangeError naming the problem.
 */
export function resolveWorkload(spec: string): Workload {
  const [base, ...kvs] = spec.split(':');
  if (kvs.length === 0) {
    const w = WORKLOADS.find((x) => x.name === base);
    if (w) return w;
  }
  const p = PARAMETERISED[base!];
  if (!p) throw new RangeError(`unknown workload "${spec}" (workloads: ${WORKLOADS.map((w) => w.name).join(', ')})`);
  const params: Record<string, number> = {};
  for (const kv of kvs) {
    const m = /^([a-z]+)=(\d+)$/.exec(kv);
    if (!m) throw new RangeError(`${base}: expected key=value with a whole number, got "${kv}"`);
    if (!(m[1]! in p.defaults)) throw new RangeError(`${base}: unknown parameter "${m[1]}" (parameters: ${Object.keys(p.defaults).join(', ')})`);
    params[m[1]!] = Number(m[2]);
  }
  return p.make(params);
}
