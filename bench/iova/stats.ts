// Latency summaries for the IOVA benchmark. Percentiles are nearest-rank:
// the p-th percentile of n sorted samples is sample ceil(p/100 * n) (1-based),
// so every figure reported is a latency that was actually measured.

/** ns figures of one kind of operation. */
export interface LatencySummary {
  /** Samples (operations timed). */
  readonly count: number;
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly p9999: number;
  readonly max: number;
}

export const EMPTY_SUMMARY: LatencySummary = { count: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, p9999: 0, max: 0 };

/** Nearest-rank percentile of ascending `sorted` (length n > 0). */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return 0;
  // The tiny shave keeps float error (99.9 / 100 * 1000 = 999.0000000000001) from moving an exact rank up.
  const rank = Math.ceil((p / 100) * n * (1 - 1e-12));
  return sorted[Math.min(n, Math.max(1, rank)) - 1]!;
}

/** Summarises the first `n` samples of `samples`; sorts that part in place. */
export function summarize(samples: Float64Array, n = samples.length): LatencySummary {
  if (n === 0) return EMPTY_SUMMARY;
  const s = samples.subarray(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += s[i]!;
  return { count: n, mean: sum / n, p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99), p999: percentile(s, 99.9), p9999: percentile(s, 99.99), max: s[n - 1]! };
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Each field the median of that field over the repetitions. */
export function medianSummary(runs: readonly LatencySummary[]): LatencySummary {
  if (runs.length === 0) return EMPTY_SUMMARY;
  const f = (k: keyof LatencySummary) => median(runs.map((r) => r[k]));
  return { count: runs[0]!.count, mean: f('mean'), p50: f('p50'), p90: f('p90'), p99: f('p99'), p999: f('p999'), p9999: f('p9999'), max: f('max') };
}

/**
 * The cost of timing one operation: the 1st percentile of `t1 - t0` for two
 * performance.now() calls with nothing between them, in ns. The runner
 * subtracts it from every per-op sample (clamping at 0). The timer's cost
 * itself varies (about 65 to 180 ns here); subtracting its low end rather
 * than its median leaves every figure an upper bound on the operation's own
 * cost, high by at most the timer's jitter, where the median would read 0
 * for the fastest operations.
 */
export function timerOverheadNs(samples = 100_000): number {
  const d = new Float64Array(samples);
  for (let r = 0; r < 2; r++) {
    for (let i = 0; i < samples; i++) {
      const t0 = performance.now();
      const t1 = performance.now();
      d[i] = (t1 - t0) * 1e6;
    }
  }
  return percentile(d.sort(), 1);
}

/**
 * What the machine alone does to a latency tail: a computation whose cost
 * never varies, timed as the runner times an operation, net of the same
 * timer overhead. Whatever its p99.9 is above its p50 comes from preemption,
 * timer ticks and the host (on a VM, steal), not from the code timed: an
 * operation of the same median cannot have a better tail here.
 */
export interface MachineTail {
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
}

/** The fixed computations' sizes, about: where the tree strategies' operations lie. */
export const MACHINE_TAIL_NS: readonly number[] = [250, 500, 1000];

let tailSink = 0;

/** `iterations` steps of an integer recurrence: constant time a step, and nothing the compiler can fold away. */
function fixedWork(iterations: number): void {
  let x = tailSink;
  for (let i = 0; i < iterations; i++) x = (Math.imul(x, 1664525) + 1013904223) | 0;
  tailSink = x;
}

export function machineTail(targetNs: number, overheadNs: number, samples = 100_000): MachineTail {
  const CAL = 1_000_000;
  fixedWork(CAL); // compiled before it is measured
  const t0 = performance.now();
  fixedWork(CAL);
  const perStep = Math.max(1e-3, ((performance.now() - t0) * 1e6) / CAL);
  const steps = Math.max(1, Math.round(targetNs / perStep));
  const d = new Float64Array(samples);
  for (let i = 0; i < samples; i++) {
    const a = performance.now();
    fixedWork(steps);
    const b = performance.now();
    d[i] = Math.max(0, (b - a) * 1e6 - overheadNs);
  }
  const s = summarize(d);
  return { p50: s.p50, p99: s.p99, p999: s.p999 };
}
