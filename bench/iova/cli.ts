// `ivory bench iova [--strategy a,b] [--workload x,y] [--ops N] [--seed S]
// [--reps N] [--latency-reps N] [--pass-ms MS] [--json] [--out DIR] [--e2e]`: every strategy of
// dma/iova/index.ts on every workload of bench/iova/workloads.ts; with --e2e
// also through the DMA API and the virtio-iommu (bench/iova/e2e.ts).
//
// Run from the bundle (dist/bench.mjs), each cell runs in a worker thread of
// its own, one at a time: a fresh heap and fresh JIT feedback per strategy,
// so one strategy's garbage or call sites do not weigh on the next. From
// source (tests, tsx) cells run in this thread.
import { Worker } from 'node:worker_threads';
import { cpus as osCpus } from 'node:os';
import { IOVA_STRATEGIES } from '../../dma/iova/index.ts';
import { formatMachineTail, formatScaling, formatSweep, formatTable, MACHINE_TAIL_TITLE, writeOut, type ErrorRow, type Machine, type Row, type ScalingPoint, type SweepPoint } from './report.ts';
import { runE2eCell } from './e2e.ts';
import { DEFAULT_PASS_MS, runCell, timerOverhead, type CellResult, type CellSpec } from './runner.ts';
import { MACHINE_TAIL_NS, machineTail } from './stats.ts';
import { resolveWorkload, WORKLOADS, type Workload } from './workloads.ts';

export const USAGE = 'usage: ivory bench iova [--strategy a,b] [--workload x,y] [--ops N] [--seed S] [--reps N] [--latency-reps N] [--pass-ms MS] [--json] [--out DIR] [--e2e]';
/** Measured ops of an end-to-end cell unless --ops says otherwise: each is a MAP or UNMAP round trip. */
const E2E_OPS = 5_000;

/** CPU counts the nic workload runs at for the scaling figure. */
export const SCALING_CPUS = [1, 2, 4, 8, 16];
/** Live-range counts the long-short workload runs at for throughput against live ranges. */
export const SWEEP_LIVE = [256, 1024, 4096, 16384, 65536, 262144];
/** Measured ops of each scaling cell unless --ops says otherwise (nic's default would take long at 16 queues). */
const SCALING_OPS = 100_000;

export interface IovaArgs {
  readonly strategies: readonly string[];
  readonly workloads: readonly Workload[];
  readonly ops: number | undefined;
  readonly seed: number;
  readonly reps: number;
  readonly latencyReps: number;
  readonly passMs: number;
  readonly json: boolean;
  readonly out: string | undefined;
  readonly e2e: boolean;
}

/** A bad argument: printed as one line, exit code 2. */
export class ArgError extends Error {
  constructor(arg: string, problem: string) {
    super(`${arg}: ${problem}`);
  }
}

function integer(arg: string, v: string | undefined, min: number, max: number): number {
  if (v === undefined || v.startsWith('--')) throw new ArgError(arg, 'needs a value');
  const n = /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new ArgError(arg, `expected an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}

function list(arg: string, v: string | undefined): string[] {
  if (v === undefined || v.startsWith('--')) throw new ArgError(arg, 'needs a comma-separated list');
  const items = v.split(',').map((x) => x.trim());
  if (items.some((x) => x === '')) throw new ArgError(arg, `empty name in ${JSON.stringify(v)}`);
  return items;
}

export function parseIovaArgs(argv: readonly string[], strategies: readonly string[] = Object.keys(IOVA_STRATEGIES)): IovaArgs {
  let chosen: string[] = [...strategies];
  let workloads: Workload[] = [...WORKLOADS];
  let ops: number | undefined;
  let seed = 1;
  let reps = 5;
  let latencyReps = 3;
  let passMs = DEFAULT_PASS_MS;
  let json = false;
  let out: string | undefined;
  let e2e = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    switch (a) {
      case '--strategy': {
        chosen = list(a, argv[++i]);
        const bad = chosen.find((s) => !strategies.includes(s));
        if (bad !== undefined) throw new ArgError(a, `unknown strategy "${bad}" (strategies: ${strategies.join(', ')})`);
        break;
      }
      case '--workload':
        workloads = list(a, argv[++i]).map((name) => {
          try {
            return resolveWorkload(name);
          } catch (e) {
            throw new ArgError(a, (e as Error).message);
          }
        });
        break;
      case '--ops':
        ops = integer(a, argv[++i], 2, 1e9);
        break;
      case '--seed':
        seed = integer(a, argv[++i], 0, 2 ** 32 - 1);
        break;
      case '--reps':
        reps = integer(a, argv[++i], 1, 100);
        break;
      case '--latency-reps':
        latencyReps = integer(a, argv[++i], 1, 100);
        break;
      case '--pass-ms':
        passMs = integer(a, argv[++i], 1, 1e9);
        break;
      case '--json':
        json = true;
        break;
      case '--e2e':
        e2e = true;
        break;
      case '--out': {
        const d = argv[++i];
        if (d === undefined || d.startsWith('--')) throw new ArgError(a, 'needs a directory');
        out = d;
        break;
      }
      default:
        throw new ArgError(a, a.startsWith('-') ? `unknown option (${USAGE})` : 'unexpected argument');
    }
  }
  return { strategies: chosen, workloads, ops, seed, reps, latencyReps, passMs, json, out, e2e };
}

// ---------------------------------------------------------------- cells

/** What a cell reports back to the thread that runs the benchmark. */
export type CellMessage = { type: 'phase'; what: string; fraction: number } | { type: 'result'; result: CellResult } | { type: 'error'; message: string };

export const WORKER_TAG = 'ivory-bench-iova-cell';

/** The body of a cell's worker thread: `data` is what runCellIn put in workerData. */
export function cellWorker(data: { spec: CellSpec }, post: (m: CellMessage) => void): void {
  try {
    const result = runCell(data.spec, (what, fraction) => post({ type: 'phase', what, fraction }));
    post({ type: 'result', result });
  } catch (e) {
    post({ type: 'error', message: (e as Error).message ?? String(e) });
  }
}

type PhaseFn = (what: string, fraction: number) => void;

/** Runs a cell in a worker of `script` (the bench bundle), or in this thread when `script` is undefined. */
function runCellIn(script: string | undefined, spec: CellSpec, phase: PhaseFn): Promise<CellResult> {
  if (!script) {
    try {
      return Promise.resolve(runCell(spec, phase));
    } catch (e) {
      return Promise.reject(e);
    }
  }
  return new Promise((resolve, reject) => {
    const w = new Worker(script, { workerData: { [WORKER_TAG]: true, spec } });
    let settled = false;
    w.on('message', (m: CellMessage) => {
      if (m.type === 'phase') phase(m.what, m.fraction);
      else if (m.type === 'result') {
        settled = true;
        resolve(m.result);
      } else {
        settled = true;
        reject(new Error(m.message));
      }
    });
    w.on('error', (e) => {
      settled = true;
      reject(e);
    });
    w.on('exit', (code) => {
      if (!settled) reject(new Error(`worker exited with code ${code}`));
    });
  });
}

// ---------------------------------------------------------------- progress

/** A one-line progress bar on stderr, only when it is a terminal. */
export class Progress {
  private last = 0;
  private readonly start = Date.now();
  constructor(
    private readonly total: number,
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly enabled = stream.isTTY === true,
  ) {}

  update(done: number, label: string, force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    const width = 28;
    const frac = Math.min(1, done / this.total);
    const filled = Math.round(frac * width);
    const secs = Math.round((now - this.start) / 1000);
    const line = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${Math.floor(secs / 60)}m${String(secs % 60).padStart(2, '0')}s ${label}`;
    const cols = this.stream.columns ?? 100;
    this.stream.write(`\r\x1b[K${line.slice(0, cols - 1)}`);
  }

  clear(): void {
    if (this.enabled) this.stream.write('\r\x1b[K');
  }
}

// ---------------------------------------------------------------- the command

export interface IovaMainOptions {
  /** The bench bundle's path: cells then run in worker threads of it. */
  readonly workerScript?: string;
  /** Measures the CPU's speed now (bench/main.ts's calibrate); skipped when absent. */
  readonly calibrate?: () => number;
  readonly stdout?: (line: string) => void;
  readonly stderr?: (line: string) => void;
  readonly progressStream?: NodeJS.WriteStream;
}

export function machineName(): string {
  const c = osCpus();
  return `${c[0]?.model.trim() ?? 'unknown CPU'} x${c.length}, Node ${process.version}`;
}

/** The timer overhead the cells subtracted (the first that measured one), else this thread's. */
function timerOverheadOf(results: readonly (CellResult | Error)[]): number {
  const r = results.find((x): x is CellResult => !(x instanceof Error) && x.timer_overhead_ns > 0);
  return r ? r.timer_overhead_ns : timerOverhead();
}

/** `ivory bench iova ...`; returns the exit code. */
export async function iovaMain(argv: readonly string[], o: IovaMainOptions = {}): Promise<number> {
  const print = o.stdout ?? ((s: string) => console.log(s));
  const warn = o.stderr ?? ((s: string) => console.error(s));
  let args: IovaArgs;
  try {
    args = parseIovaArgs(argv);
  } catch (e) {
    if (e instanceof ArgError) {
      warn(`bench iova: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const calibrationBefore = o.calibrate?.();

  interface Planned {
    spec: CellSpec;
    kind: 'main' | 'scaling' | 'sweep';
    /** For extras: the row they belong to and their x value. */
    owner?: number;
    x?: number;
  }
  const planned: Planned[] = [];
  const base = { seed: args.seed, reps: args.reps, passMs: args.passMs };
  for (const w of args.workloads) {
    for (const strategy of args.strategies) {
      const owner = planned.length;
      planned.push({ kind: 'main', spec: { ...base, strategy, workload: w.name, ops: args.ops, timedReps: args.latencyReps } });
      const family = w.name.split(':')[0];
      if (family === 'nic') {
        for (const c of SCALING_CPUS) planned.push({ kind: 'scaling', owner, x: c, spec: { ...base, strategy, workload: `nic:cpus=${c}`, ops: args.ops ?? SCALING_OPS, timedReps: 0 } });
      }
      if (family === 'long-short') {
        for (const live of SWEEP_LIVE) planned.push({ kind: 'sweep', owner, x: live, spec: { ...base, strategy, workload: `long-short:live=${live}`, ops: args.ops, timedReps: 0 } });
      }
    }
  }

  const progress = new Progress(planned.length, o.progressStream ?? process.stderr);
  const results: (CellResult | Error)[] = [];
  for (let i = 0; i < planned.length; i++) {
    const p = planned[i]!;
    const label = `${i + 1}/${planned.length} ${p.spec.strategy} ${p.spec.workload}`;
    progress.update(i, label, true);
    try {
      results.push(await runCellIn(o.workerScript, p.spec, (what, f) => progress.update(i + f, `${label}: ${what}`)));
    } catch (e) {
      results.push(e instanceof Error ? e : new Error(String(e)));
    }
  }
  progress.update(planned.length, 'done', true);
  progress.clear();

  const calibrationAfter = o.calibrate?.();
  const calibration = calibrationBefore === undefined ? null : Math.min(calibrationBefore, calibrationAfter ?? Infinity);
  const overheadNs = timerOverheadOf(results);
  const machine: Machine = {
    machine: machineName(),
    node: process.version,
    calibration_ms: calibration,
    machine_tail: MACHINE_TAIL_NS.map((ns) => machineTail(ns, overheadNs)),
    date: new Date().toISOString(),
  };

  const rows: Row[] = [];
  const rowOf = new Map<number, number>();
  planned.forEach((p, i) => {
    if (p.kind !== 'main') return;
    const r = results[i]!;
    rowOf.set(i, rows.length);
    if (r instanceof Error) rows.push({ strategy: p.spec.strategy, workload: resolveWorkload(p.spec.workload).name, error: r.message, ...machine } satisfies ErrorRow);
    else rows.push({ ...r, ...machine });
  });
  const extras = new Map<number, { scaling: ScalingPoint[]; sweep: SweepPoint[] }>();
  planned.forEach((p, i) => {
    if (p.kind === 'main') return;
    const r = results[i]!;
    const e = extras.get(p.owner!) ?? { scaling: [], sweep: [] };
    extras.set(p.owner!, e);
    const v = r instanceof Error ? NaN : r.pair_ns_mean;
    if (p.kind === 'scaling') e.scaling.push({ cpus: p.x!, pair_ns_mean: v });
    else e.sweep.push({ live: p.x!, pair_ns_mean: v });
  });
  for (const [owner, e] of extras) {
    const idx = rowOf.get(owner)!;
    const row = rows[idx]!;
    if (row.error !== undefined) continue;
    rows[idx] = { ...row, ...(e.scaling.length ? { cpu_scaling: e.scaling } : {}), ...(e.sweep.length ? { live_sweep: e.sweep } : {}) };
  }

  if (args.e2e) await addEndToEnd(rows, args, progress);

  if (args.json) print(JSON.stringify(rows, null, 2));
  else {
    print(`IOVA allocators (${machine.machine}); ${machine.date}`);
    print(`CPU calibration: ${calibration ?? '-'} ms for 1e8 loop iterations (lower is faster right now); per-op timer overhead ${overheadNs.toFixed(1)} ns, subtracted from each latency sample`);
    print(`${MACHINE_TAIL_TITLE}: ${formatMachineTail(machine.machine_tail)}`);
    print('ns per operation; "pair ns" = measured time without per-op timers / allocations; fail = allocations that found no space, free-fail = of those, with a free aligned block of the size under the limit; frag = mean fragmentation index; unusable = mean unusable free space at the largest request; B/live = allocator bytes per live range; ops* = stopped at the time cap (--pass-ms)\n');
    print(formatTable(rows));
    const scaling = formatScaling(rows);
    if (scaling) print(`\nnic: ns per alloc+free pair with N simulated CPUs (one TX queue each; a single JS thread, so this is cache behaviour, not lock contention)\n${scaling}`);
    const sweep = formatSweep(rows);
    if (sweep) print(`\nlong-short: ns per alloc+free pair against live single-page ranges\n${sweep}`);
    if (args.e2e) print(`\nend to end: each op a dma_map_page or dma_unmap_page through iommu-dma, the virtio-iommu driver and the device model (lazy invalidation)\n${formatEndToEnd(rows)}`);
  }
  if (args.out) {
    const files = writeOut(args.out, rows, { machine, timerOverheadNs: overheadNs, workloads: args.workloads });
    warn(`bench iova: wrote ${files.length} files to ${args.out} (open ${args.out}/index.html)`);
  }
  return rows.some((r) => r.error !== undefined) ? 1 : 0;
}

/**
 * Runs each row's stream through the whole stack and puts the figures in the
 * row: the simulator's wall ns per op, the modelled virtual ns per op, and the
 * allocator's share of the wall time (its own ns per op from the row).
 */
async function addEndToEnd(rows: Row[], args: IovaArgs, progress: Progress): Promise<void> {
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!;
    if (row.error !== undefined) continue;
    progress.update(i, `end to end: ${row.strategy} ${row.workload}`, true);
    const e2e = await runE2eCell({ strategy: row.strategy, workload: row.workload, ops: args.ops ?? E2E_OPS, seed: args.seed, strict: false });
    const allocatorNsPerOp = row.pair_ns_mean / 2;
    rows[i] = { ...row, e2e: { ...e2e, allocator_share: e2e.wall_ns_per_op > 0 ? Math.min(1, allocatorNsPerOp / e2e.wall_ns_per_op) : null } };
  }
  progress.clear();
}

function formatEndToEnd(rows: readonly Row[]): string {
  const head = ['strategy', 'workload', 'ops', 'allocator ns/op', 'whole stack ns/op', 'allocator share', 'virtual ns/op', 'MAP', 'UNMAP', 'failed maps'];
  const body = rows.flatMap((r) => {
    if (r.error !== undefined || !r.e2e) return [];
    const e = r.e2e;
    const share = e.allocator_share === null ? '-' : `${(e.allocator_share * 100).toFixed(1)}%`;
    return [[r.strategy, r.workload, String(e.ops), (r.pair_ns_mean / 2).toFixed(0), String(e.wall_ns_per_op), share, String(e.virtual_ns_per_op), String(e.map_requests), String(e.unmap_requests), String(e.failed_maps)]];
  });
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(width[i]!) : c.padStart(width[i]!))).join('  ');
  return [line(head), ...body.map(line)].join('\n');
}
