// Runs one strategy on one workload's operation stream and measures it
// (bench/iova/workloads.ts has the streams, docs/iova-bench.md the metrics).
//
// Each cell is several passes over the same pre-generated stream, every pass
// on a fresh domain with the workload's reserved ranges:
//   - warm-up: the build-up and a short stretch of the measured phase, untimed
//     and timed, so the JIT has compiled what is measured;
//   - throughput: `reps` passes with no per-op timer, the measured phase timed
//     as a whole; pair_ns_mean is the median pass's time per allocation;
//   - latency: `timedReps` passes timing every op with performance.now(),
//     the timer's own cost subtracted; each percentile is the median over passes;
//   - checked: one pass, untimed, against the workload's view of the space:
//     failed allocations and whether a free aligned block of their size
//     existed, the fragmentation index over time, memory per live range.
// The op loops read typed arrays only and call the domain directly: no
// objects or closures per op.
import type { IovaDomain } from '../../dma/iova.ts';
import { IOVA_STRATEGIES } from '../../dma/iova/index.ts';
import { Cpus } from '../../kernel/smp.ts';
import type { Timer } from '../../kernel/timer.ts';
import { BITMAP_PFNS, fragmentationIndex, packable, packRange, SpaceView, unusableIndex, type HighRanges } from './space.ts';
import { EMPTY_SUMMARY, median, medianSummary, summarize, timerOverheadNs, type LatencySummary } from './stats.ts';
import { OP_ALLOC, PFN_32BIT_LIMIT, resolveWorkload, type OpStream, type Workload } from './workloads.ts';

/** Virtual time per operation, for the allocators' timers (the rcache depot's 100 ms trim). */
export const VIRTUAL_NS_PER_OP = 1000;
/** Ops between chances for timers to run (and the most one runOn covers). */
const CHUNK_OPS = 1024;
/** Fragmentation samples over the measured phase. */
const FRAG_SAMPLES = 10;
const WARMUP_OPS = 200_000;
/** A warm-up pass stops its measured stretch after this long. */
const WARMUP_MS = 300;

export interface CellSpec {
  readonly strategy: string;
  /** A workload name as resolveWorkload takes it. */
  readonly workload: string;
  /** Measured ops; the workload's default when absent. */
  readonly ops?: number;
  readonly seed: number;
  /** Throughput passes (no per-op timers); the median is kept. */
  readonly reps: number;
  /** Per-op latency passes; 0 for a throughput-only cell (scaling, sweeps). */
  readonly timedReps: number;
  /** Once the throughput passes (and, apart, the latency passes) have taken this long, no more start: slow cells run fewer. */
  readonly budgetMs?: number;
  /**
   * The first throughput pass stops after this long (build-up included) and
   * every later pass stops at the same op: a pathological strategy costs
   * minutes, not hours. The row then says `truncated`.
   */
  readonly passMs?: number;
}

export const DEFAULT_PASS_MS = 3000;

/** The default budget per kind of pass: a cell stops repeating after about this long. */
export const DEFAULT_BUDGET_MS = 1000;

export interface FragSample {
  /** Op index in the stream. */
  readonly op: number;
  /** Live ranges then (successful allocations not yet freed). */
  readonly live: number;
  /** The fragmentation index then. */
  readonly value: number;
  /** The unusable free space index then, at the workload's largest request. */
  readonly unusable: number;
}

/** One strategy on one workload: the figures `--json` prints (documented in docs/iova-bench.md). */
export interface CellResult {
  readonly strategy: string;
  readonly workload: string;
  readonly seed: number;
  /** Operations in the measured phase (as run: fewer than the stream's when truncated). */
  readonly ops: number;
  /** Allocations among them. */
  readonly allocs: number;
  /** The passes hit the time cap and stopped before the stream's end. */
  readonly truncated: boolean;
  readonly cpus: number;
  readonly alloc_ns: LatencySummary;
  readonly free_ns: LatencySummary;
  /** Measured-phase time / allocations in it, no per-op timers: the median over `reps` passes. */
  readonly pair_ns_mean: number;
  readonly pair_ns_runs: readonly number[];
  /** Latency passes run (each latency figure is the median over them). */
  readonly latency_runs: number;
  /** Allocations (whole stream, build-up included) that found no space. */
  readonly failures: number;
  /** Of those, the ones for which the workload saw a free, aligned block of the rounded size under the limit. */
  readonly failed_allocs: number;
  /** Allocations that broke the limit, the alignment, a reserved range or a live range below 4 GiB. */
  readonly invalid_allocs: number;
  /** Mean of the fragmentation samples over the measured phase. */
  readonly fragmentation: number;
  readonly fragmentation_max: number;
  /** The index for the empty domain (reserved ranges only): what `fragmentation` reads with nothing allocated. */
  readonly fragmentation_empty: number;
  /** Mean over the same samples of the unusable free space index at the workload's largest request size. */
  readonly unusable_free: number;
  readonly fragmentation_series: readonly FragSample[];
  /** Live ranges at the end of build-up (the peak, for fill). */
  readonly live_ranges: number;
  readonly footprint_bytes: number;
  readonly bytes_per_live_range: number | null;
  /** The per-op timer cost subtracted from each latency sample, ns. */
  readonly timer_overhead_ns: number;
  /** Wall time of the whole cell, ms. */
  readonly wall_ms: number;
}

export type Phase = (what: string, fraction: number) => void;

// ---------------------------------------------------------------- the domain and its world

interface VTimer extends Timer {
  readonly cpu: number;
}

/** Timers on a virtual clock that advances VIRTUAL_NS_PER_OP per operation. */
class VirtualTimers {
  now = 0;
  next = Infinity;
  private pending: VTimer[] = [];

  constructor(private readonly cpus: Cpus) {}

  add(delayNs: number, fn: () => void): Timer {
    const t: VTimer = { deadline: this.now + delayNs, fn, cancelled: false, cpu: this.cpus.current };
    let i = this.pending.length;
    while (i > 0 && this.pending[i - 1]!.deadline > t.deadline) i--;
    this.pending.splice(i, 0, t);
    this.next = this.pending[0]!.deadline;
    return t;
  }

  runDue(): void {
    while (this.pending.length > 0 && this.pending[0]!.deadline <= this.now) {
      const t = this.pending.shift()!;
      if (!t.cancelled) this.cpus.runOn(t.cpu, t.fn);
    }
    this.next = this.pending.length > 0 ? this.pending[0]!.deadline : Infinity;
  }
}

/** Everything one pass mutates. */
interface PassState {
  readonly d: IovaDomain;
  readonly cpus: Cpus;
  readonly timers: VirtualTimers;
  /** The pfn each slot holds, -1 for none. */
  readonly pfns: Float64Array;
  /** Per device: dma-iommu still tries below 4 GiB first. */
  readonly pci32: Uint8Array;
}

export function strategyNames(): string[] {
  return Object.keys(IOVA_STRATEGIES);
}

/** A fresh domain of `strategy` with the workload's reserved ranges, and the state a pass starts from. */
function newPass(strategy: string, w: Workload, s: OpStream): PassState {
  const create = IOVA_STRATEGIES[strategy];
  if (!create) throw new RangeError(`unknown strategy "${strategy}"`);
  const cpus = new Cpus(w.cpus);
  const timers = new VirtualTimers(cpus);
  const d = create({ granuleShift: 12, startPfn: w.startPfn, cpus, timers });
  for (const r of w.reserved) if (!d.reserve(r.lo, r.hi)) throw new Error(`${strategy}: reserve [${r.lo}, ${r.hi}] refused`);
  return { d, cpus, timers, pfns: new Float64Array(s.slots).fill(-1), pci32: Uint8Array.from(w.devices, (x) => (x.pci32 ? 1 : 0)) };
}

/**
 * Where the stream is cut into runs of one CPU: at every CPU change, every
 * `chunkOps` ops and at each of `cuts`. Returns the start of each run and
 * the stream's length last.
 */
export function chunkStarts(s: OpStream, cuts: readonly number[], chunkOps = CHUNK_OPS): Uint32Array {
  const sorted = [...new Set(cuts)].sort((a, b) => a - b);
  let k = 0;
  const out: number[] = [0];
  let start = 0;
  const cpu = s.cpu;
  for (let i = 1; i < s.length; i++) {
    while (k < sorted.length && sorted[k]! < i) k++;
    if (cpu[i] !== cpu[i - 1] || i - start >= chunkOps || sorted[k] === i) {
      out.push(i);
      start = i;
    }
  }
  if (s.length > 0) out.push(s.length);
  return Uint32Array.from(out);
}

// ---------------------------------------------------------------- the op loops

/** Ops [lo, hi), untimed. The hot loop of the throughput figure. */
function runPlain(d: IovaDomain, s: OpStream, pfns: Float64Array, pci32: Uint8Array, lo: number, hi: number): void {
  const kind = s.kind;
  const slot = s.slot;
  const pages = s.pages;
  const limit = s.limit;
  const phys = s.phys;
  const dev = s.dev;
  for (let i = lo; i < hi; i++) {
    const sl = slot[i]!;
    if (kind[i] === OP_ALLOC) {
      const lim = limit[i]!;
      let p: number;
      if (lim > PFN_32BIT_LIMIT && pci32[dev[i]!] === 1) {
        p = d.allocFast(pages[i]!, PFN_32BIT_LIMIT, false, phys[i]);
        if (p < 0) {
          pci32[dev[i]!] = 0;
          p = d.allocFast(pages[i]!, lim, true, phys[i]);
        }
      } else {
        p = d.allocFast(pages[i]!, lim, true, phys[i]);
      }
      pfns[sl] = p;
    } else {
      const p = pfns[sl]!;
      if (p >= 0) {
        pfns[sl] = -1;
        d.freeFast(p, pages[i]!);
      }
    }
  }
}

/**
 * Ops [lo, hi) as runPlain, but looking at the clock before every op: the
 * scout pass, which finds where a slow strategy must stop. Returns the op
 * it stopped before (hi when it ran them all). Never timed.
 */
function runScout(d: IovaDomain, s: OpStream, pfns: Float64Array, pci32: Uint8Array, lo: number, hi: number, deadline: number): number {
  for (let i = lo; i < hi; i++) {
    if (performance.now() > deadline) return i;
    runPlain(d, s, pfns, pci32, i, i + 1);
  }
  return hi;
}

/** Where the timed loop writes: latency samples (raw ns, overhead not yet subtracted) and their counts. */
interface Samples {
  alloc: Float64Array;
  free: Float64Array;
  na: number;
  nf: number;
}

/** Ops [lo, hi), each timed. Skipped frees (of failed allocations) are not samples. */
function runTimed(d: IovaDomain, s: OpStream, pfns: Float64Array, pci32: Uint8Array, lo: number, hi: number, out: Samples): void {
  const kind = s.kind;
  const slot = s.slot;
  const pages = s.pages;
  const limit = s.limit;
  const phys = s.phys;
  const dev = s.dev;
  const al = out.alloc;
  const fr = out.free;
  let na = out.na;
  let nf = out.nf;
  for (let i = lo; i < hi; i++) {
    const sl = slot[i]!;
    if (kind[i] === OP_ALLOC) {
      const lim = limit[i]!;
      let p: number;
      const t0 = performance.now();
      if (lim > PFN_32BIT_LIMIT && pci32[dev[i]!] === 1) {
        p = d.allocFast(pages[i]!, PFN_32BIT_LIMIT, false, phys[i]);
        if (p < 0) {
          pci32[dev[i]!] = 0;
          p = d.allocFast(pages[i]!, lim, true, phys[i]);
        }
      } else {
        p = d.allocFast(pages[i]!, lim, true, phys[i]);
      }
      const t1 = performance.now();
      al[na++] = (t1 - t0) * 1e6;
      pfns[sl] = p;
    } else {
      const p = pfns[sl]!;
      if (p >= 0) {
        pfns[sl] = -1;
        const t0 = performance.now();
        d.freeFast(p, pages[i]!);
        const t1 = performance.now();
        fr[nf++] = (t1 - t0) * 1e6;
      }
    }
  }
  out.na = na;
  out.nf = nf;
}

/** What the checked pass counts. */
interface Checks {
  view: SpaceView;
  /** Pages each slot holds (as allocated), for the view's ranges above 4 GiB. */
  readonly slotPages: Float64Array;
  failures: number;
  failedAlthoughFree: number;
  live: number;
}

/** Ops [lo, hi), untimed, each checked against the workload's view. */
function runChecked(d: IovaDomain, s: OpStream, st: PassState, lo: number, hi: number, c: Checks): void {
  const { pfns, pci32 } = st;
  for (let i = lo; i < hi; i++) {
    const sl = s.slot[i]!;
    const pages = s.pages[i]!;
    if (s.kind[i] === OP_ALLOC) {
      const lim = s.limit[i]!;
      let p: number;
      if (lim > PFN_32BIT_LIMIT && pci32[s.dev[i]!] === 1) {
        p = d.allocFast(pages, PFN_32BIT_LIMIT, false, s.phys[i]);
        if (p < 0) {
          pci32[s.dev[i]!] = 0;
          p = d.allocFast(pages, lim, true, s.phys[i]);
        }
      } else {
        p = d.allocFast(pages, lim, true, s.phys[i]);
      }
      pfns[sl] = p;
      if (p < 0) {
        c.failures++;
        if (c.view.fits(pages, lim)) c.failedAlthoughFree++;
      } else {
        c.view.add(p, pages, lim);
        c.slotPages[sl] = pages;
        c.live++;
      }
    } else {
      const p = pfns[sl]!;
      if (p >= 0) {
        pfns[sl] = -1;
        d.freeFast(p, pages);
        c.view.remove(p, pages);
        c.live--;
      }
    }
  }
}

// ---------------------------------------------------------------- passes

type Mode = 'scout' | 'plain' | 'timed' | 'checked';

interface PassOptions {
  mode: Mode;
  /** Stop after this op (exclusive); the stream's length by default. */
  end?: number;
  samples?: Samples;
  checks?: Checks;
  /** Called at each chunk start, before its ops (checked mode: fragmentation samples, footprint). */
  atChunk?: (op: number, st: PassState) => void;
  /** After this many ms of the measured phase, the pass stops at the next chunk (warm-up). */
  measuredMs?: number;
  /** Called with the fresh state before the first op. */
  onStart?: (st: PassState) => void;
  /** After this many ms of the whole pass (build-up included), it stops at the next chunk. */
  capMs?: number;
}

/**
 * One pass over the stream on a fresh domain. Build-up runs untimed; in
 * plain mode the returned ms are the measured phase's wall time, timer
 * firings included (they are the allocator's own work).
 */
function pass(strategy: string, w: Workload, s: OpStream, chunks: Uint32Array, o: PassOptions): { ms: number; st: PassState; reached: number } {
  const st = newPass(strategy, w, s);
  o.onStart?.(st);
  const end = Math.min(o.end ?? s.length, s.length);
  const { d, cpus, timers, pfns, pci32 } = st;
  let lo = 0;
  let hi = 0;
  let timed = false;
  const plain = () => runPlain(d, s, pfns, pci32, lo, hi);
  const perOp = () => (timed ? runTimed(d, s, pfns, pci32, lo, hi, o.samples!) : runPlain(d, s, pfns, pci32, lo, hi));
  const checked = () => runChecked(d, s, st, lo, hi, o.checks!);
  let stoppedAt = 0;
  const start = performance.now();
  const scout = () => (stoppedAt = runScout(d, s, pfns, pci32, lo, hi, start + (o.capMs ?? Infinity)));
  const body = o.mode === 'plain' ? plain : o.mode === 'timed' ? perOp : o.mode === 'scout' ? scout : checked;
  let t0 = -1;
  const measuredMs = o.measuredMs ?? Infinity;
  const capMs = o.capMs ?? Infinity;
  // A pass that may have to stop runs in pieces that grow while they take under 1 ms and shrink
  // above 5 ms, so it stops close to its limit however slow the strategy is; others run whole runs.
  const limited = capMs !== Infinity || measuredMs !== Infinity;
  let step = limited ? 16 : CHUNK_OPS;
  let reached = 0;
  outer: for (let c = 0; c + 1 < chunks.length; c++) {
    const cLo = chunks[c]!;
    if (cLo >= end) break;
    const cHi = Math.min(chunks[c + 1]!, end);
    o.atChunk?.(cLo, st);
    for (lo = cLo; lo < cHi; lo = hi) {
      let p0 = 0;
      if (limited) {
        p0 = performance.now();
        if (lo > 0 && (p0 - start > capMs || (t0 >= 0 && p0 - t0 > measuredMs))) break outer;
      }
      hi = Math.min(cHi, lo + step);
      if (lo === s.measureFrom && t0 < 0) t0 = performance.now();
      timed = lo >= s.measureFrom;
      cpus.runOn(s.cpu[lo]!, body);
      if (o.mode === 'scout' && stoppedAt < hi) {
        reached = stoppedAt;
        break outer;
      }
      reached = hi;
      timers.now += (hi - lo) * VIRTUAL_NS_PER_OP;
      if (timers.next <= timers.now) timers.runDue();
      if (limited) {
        const dt = performance.now() - p0;
        if (dt > 5 && step > 1) step >>= 1;
        else if (dt < 1 && step < CHUNK_OPS) step <<= 1;
      }
    }
  }
  if (t0 < 0 && reached === s.measureFrom) t0 = performance.now(); // nothing measured
  const t1 = performance.now();
  o.atChunk?.(reached, st);
  return { ms: t0 < 0 ? 0 : t1 - t0, st, reached };
}

let overheadNs: number | undefined;
/** The per-op timer cost, measured once per thread. */
export function timerOverhead(): number {
  return (overheadNs ??= timerOverheadNs());
}

/** Runs one cell. `phase` hears how far it is (for the progress bar). */
export function runCell(spec: CellSpec, phase: Phase = () => {}): CellResult {
  const wallStart = performance.now();
  const w = resolveWorkload(spec.workload);
  if (!IOVA_STRATEGIES[spec.strategy]) throw new RangeError(`unknown strategy "${spec.strategy}"`);
  const ops = spec.ops ?? w.defaultOps;
  const s = w.generate(spec.seed, ops);
  const measured = s.length - s.measureFrom;
  const samplePoints: number[] = [];
  for (let k = 0; k <= FRAG_SAMPLES; k++) samplePoints.push(s.measureFrom + Math.round((k * measured) / FRAG_SAMPLES));
  const cuts = [s.measureFrom, s.builtUpAt, ...samplePoints];
  const chunks = chunkStarts(s, cuts);
  const steps = 1 + spec.reps + spec.timedReps + (spec.timedReps > 0 ? 1 : 0);
  let step = 0;
  const progress = (what: string) => phase(what, step++ / steps);
  const overhead = spec.timedReps > 0 ? timerOverhead() : 0;
  const cap = spec.passMs ?? DEFAULT_PASS_MS;

  // The scout: the whole stream, untimed, the clock read before every op; where it stops at the
  // cap every other pass stops too. It is also the first warm-up.
  progress('warm-up');
  const scout = pass(spec.strategy, w, s, chunks, { mode: 'scout', capMs: cap });
  if (scout.reached < s.measureFrom) throw new Error(`build-up (${s.measureFrom} ops) took more than ${cap} ms (--pass-ms)`);
  const end = scout.reached;
  let allocs = 0;
  for (let i = s.measureFrom; i < end; i++) if (s.kind[i] === OP_ALLOC) allocs++;
  // Warm-up of the measured loops: build-up and a stretch of the measured phase.
  const warmEnd = Math.min(end, s.measureFrom + WARMUP_OPS);
  pass(spec.strategy, w, s, chunks, { mode: 'plain', end: warmEnd, measuredMs: WARMUP_MS });
  if (spec.timedReps > 0) {
    const n = warmEnd - s.measureFrom;
    pass(spec.strategy, w, s, chunks, { mode: 'timed', end: warmEnd, measuredMs: WARMUP_MS, samples: { alloc: new Float64Array(n), free: new Float64Array(n), na: 0, nf: 0 } });
  }

  const budget = spec.budgetMs ?? DEFAULT_BUDGET_MS;
  const runs: number[] = [];
  const throughputStart = performance.now();
  for (let r = 0; r < spec.reps && (r === 0 || performance.now() - throughputStart < budget); r++) {
    progress(`throughput ${r + 1}/${spec.reps}`);
    const { ms } = pass(spec.strategy, w, s, chunks, { mode: 'plain', end });
    runs.push(allocs > 0 ? (ms * 1e6) / allocs : 0);
  }
  const truncated = end < s.length;

  const allocRuns: LatencySummary[] = [];
  const freeRuns: LatencySummary[] = [];
  if (spec.timedReps > 0) {
    const samples: Samples = { alloc: new Float64Array(measured), free: new Float64Array(measured), na: 0, nf: 0 };
    const latencyStart = performance.now();
    for (let r = 0; r < spec.timedReps && (r === 0 || performance.now() - latencyStart < budget); r++) {
      progress(`latency ${r + 1}/${spec.timedReps}`);
      samples.na = samples.nf = 0;
      pass(spec.strategy, w, s, chunks, { mode: 'timed', samples, end });
      for (const [arr, n] of [
        [samples.alloc, samples.na],
        [samples.free, samples.nf],
      ] as const) {
        for (let i = 0; i < n; i++) arr[i] = Math.max(0, arr[i]! - overhead);
      }
      allocRuns.push(summarize(samples.alloc, samples.na));
      freeRuns.push(summarize(samples.free, samples.nf));
    }
  }

  let checked: Omit<CellResult, 'strategy' | 'workload' | 'seed' | 'ops' | 'allocs' | 'truncated' | 'cpus' | 'alloc_ns' | 'free_ns' | 'pair_ns_mean' | 'pair_ns_runs' | 'latency_runs' | 'timer_overhead_ns' | 'wall_ms'> = {
    failures: 0,
    failed_allocs: 0,
    invalid_allocs: 0,
    fragmentation: 0,
    fragmentation_max: 0,
    fragmentation_empty: 0,
    unusable_free: 0,
    fragmentation_series: [],
    live_ranges: 0,
    footprint_bytes: 0,
    bytes_per_live_range: null,
  };
  if (spec.timedReps > 0) {
    progress('checks');
    checked = checkedPass(spec.strategy, w, s, chunks, samplePoints, end);
  }
  phase('done', 1);
  return {
    strategy: spec.strategy,
    workload: w.name,
    seed: spec.seed,
    ops: end - s.measureFrom,
    allocs,
    truncated,
    cpus: w.cpus,
    alloc_ns: spec.timedReps > 0 ? medianSummary(allocRuns) : EMPTY_SUMMARY,
    free_ns: spec.timedReps > 0 ? medianSummary(freeRuns) : EMPTY_SUMMARY,
    pair_ns_mean: median(runs),
    pair_ns_runs: runs,
    latency_runs: allocRuns.length,
    ...checked,
    timer_overhead_ns: overhead,
    wall_ms: performance.now() - wallStart,
  };
}

function checkedPass(strategy: string, w: Workload, s: OpStream, chunks: Uint32Array, samplePoints: readonly number[], end: number) {
  const checks: Checks = { view: new SpaceView(w.startPfn, w.reserved), slotPages: new Float64Array(s.slots), failures: 0, failedAlthoughFree: 0, live: 0 };
  const keys = new Float64Array(s.slots);
  const onStart = (st: PassState) => {
    // Live ranges above 4 GiB come from the slots when the view needs them.
    const high = (): HighRanges => {
      const odd: [number, number][] = [];
      let n = 0;
      for (let sl = 0; sl < st.pfns.length; sl++) {
        const p = st.pfns[sl]!;
        if (p < 0) continue;
        const hi = p + checks.slotPages[sl]! - 1;
        if (hi < BITMAP_PFNS) continue;
        const lo = Math.max(p, BITMAP_PFNS);
        if (packable(lo, hi)) keys[n++] = packRange(lo, hi);
        else odd.push([lo, hi]);
      }
      return { keys, n, odd };
    };
    checks.view = new SpaceView(w.startPfn, w.reserved, high);
  };
  const fragmentationEmpty = fragmentationIndex(new SpaceView(w.startPfn, w.reserved).free(w.limitPfn));
  const series: FragSample[] = [];
  const wanted = new Set([...samplePoints.filter((p) => p <= end), end]);
  const peak = Math.min(s.builtUpAt, end);
  let footprint = 0;
  let liveAtPeak = 0;
  pass(strategy, w, s, chunks, {
    mode: 'checked',
    checks,
    onStart,
    end,
    atChunk: (op, st) => {
      if (op === peak) {
        footprint = st.d.footprintBytes();
        liveAtPeak = checks.live;
      }
      if (wanted.delete(op)) {
        const f = checks.view.free(w.limitPfn, w.maxPages);
        series.push({ op, live: checks.live, value: fragmentationIndex(f), unusable: unusableIndex(f) });
      }
    },
  });
  const values = series.map((x) => x.value);
  return {
    failures: checks.failures,
    failed_allocs: checks.failedAlthoughFree,
    invalid_allocs: checks.view.invalid,
    fragmentation: values.length ? values.reduce((a, b) => a + b, 0) / values.length : 0,
    fragmentation_max: values.length ? Math.max(...values) : 0,
    fragmentation_empty: fragmentationEmpty,
    unusable_free: series.length ? series.reduce((a, x) => a + x.unusable, 0) / series.length : 0,
    fragmentation_series: series,
    live_ranges: liveAtPeak,
    footprint_bytes: footprint,
    bytes_per_live_range: liveAtPeak > 0 ? footprint / liveAtPeak : null,
  };
}
