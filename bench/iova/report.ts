// What `ivory bench iova` prints and writes: the rows --json prints, the
// text table, and with --out the SVG plots and the index.html showing them.
import type { E2eRow } from './e2e.ts';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CellResult } from './runner.ts';
import type { LatencySummary, MachineTail } from './stats.ts';
import { escapeXml, formatNs, lineChart, type Series } from './svg.ts';

/** Where and when the figures were taken; in every row. */
export interface Machine {
  /** CPU model x count, Node version. */
  readonly machine: string;
  readonly node: string;
  /** ms for 1e8 iterations of a fixed integer loop (lower = faster CPU right now), the better of before and after. */
  readonly calibration_ms: number | null;
  /** Fixed computations timed as an operation is (stats.ts machineTail): the tail this machine gives work that never varies. */
  readonly machine_tail: readonly MachineTail[];
  readonly date: string;
}

export const MACHINE_TAIL_TITLE = "machine's own tail now (fixed work timed as an op is; a p99.9 near these is the machine's, not the strategy's)";

/** "p50 → p99 / p99.9" of each fixed computation. */
export function formatMachineTail(tail: readonly MachineTail[]): string {
  return tail.map((t) => `${formatNs(t.p50)} → ${formatNs(t.p99)} / ${formatNs(t.p999)}`).join('; ');
}

export interface ScalingPoint {
  readonly cpus: number;
  readonly pair_ns_mean: number;
}

export interface SweepPoint {
  readonly live: number;
  readonly pair_ns_mean: number;
}

/** One strategy x workload: what --json prints, one per element of its array. */
/** A row's end-to-end figures (--e2e): the stream through the DMA API and the virtio-iommu. */
export type EndToEnd = E2eRow & { readonly allocator_share: number | null };

export type Row =
  | (CellResult & Machine & { readonly cpu_scaling?: readonly ScalingPoint[]; readonly live_sweep?: readonly SweepPoint[]; readonly e2e?: EndToEnd; readonly error?: undefined })
  | ErrorRow;

/** A cell whose strategy threw: no figures, the message instead. */
export interface ErrorRow extends Machine {
  readonly strategy: string;
  readonly workload: string;
  readonly error: string;
}

export const isOk = (r: Row): r is Exclude<Row, ErrorRow> => r.error === undefined;

// ---------------------------------------------------------------- text

export function textTable(head: readonly string[], body: readonly (readonly string[])[], leftCols = 1): string {
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i < leftCols ? c.padEnd(width[i]!) : c.padStart(width[i]!))).join('  ');
  return [line(head), ...body.map(line)].join('\n');
}

/** Compact ns for the table: 23.4, 812, 12.3k, 4.1M. */
export function ns(v: number): string {
  if (!Number.isFinite(v)) return '-';
  if (v < 100) return v.toFixed(1);
  if (v < 1e4) return Math.round(v).toString();
  if (v < 1e7) return `${+(v / 1e3).toPrecision(3)}k`;
  return `${+(v / 1e6).toPrecision(3)}M`;
}

const lat = (s: LatencySummary) => [ns(s.mean), ns(s.p50), ns(s.p99), ns(s.p999), ns(s.max)];

/** The table the benchmark prints: one block per workload, one line per strategy. */
export function formatTable(rows: readonly Row[]): string {
  const head = ['workload', 'strategy', 'pair ns', 'alloc mean', 'p50', 'p99', 'p99.9', 'max', 'free mean', 'p50', 'p99', 'p99.9', 'max', 'fail', 'free-fail', 'frag', 'unusable', 'B/live', 'ops'];
  const body: string[][] = [];
  let last = '';
  for (const r of rows) {
    const w = r.workload === last ? '' : r.workload;
    last = r.workload;
    if (!isOk(r)) {
      body.push([w, r.strategy, `error: ${r.error}`]);
      continue;
    }
    body.push([
      w,
      r.strategy,
      ns(r.pair_ns_mean),
      ...lat(r.alloc_ns),
      ...lat(r.free_ns),
      String(r.failures),
      String(r.failed_allocs),
      r.fragmentation.toFixed(3),
      r.unusable_free.toFixed(3),
      r.bytes_per_live_range === null ? '-' : r.bytes_per_live_range.toFixed(0),
      `${r.ops}${r.truncated ? '*' : ''}`,
    ]);
  }
  return textTable(head, body, 2);
}

export function formatScaling(rows: readonly Row[]): string | undefined {
  const ok = rows.filter(isOk).filter((r) => r.cpu_scaling?.length);
  if (ok.length === 0) return undefined;
  const cpus = ok[0]!.cpu_scaling!.map((p) => p.cpus);
  return textTable(
    ['strategy', ...cpus.map((c) => `${c} CPU${c > 1 ? 's' : ''}`)],
    ok.map((r) => [r.strategy, ...r.cpu_scaling!.map((p) => ns(p.pair_ns_mean))]),
  );
}

export function formatSweep(rows: readonly Row[]): string | undefined {
  const ok = rows.filter(isOk).filter((r) => r.live_sweep?.length);
  if (ok.length === 0) return undefined;
  const live = ok[0]!.live_sweep!.map((p) => p.live);
  return textTable(
    ['strategy', ...live.map((l) => `${l} live`)],
    ok.map((r) => [r.strategy, ...r.live_sweep!.map((p) => ns(p.pair_ns_mean))]),
  );
}

// ---------------------------------------------------------------- plots

const LADDER: readonly [keyof LatencySummary, string][] = [
  ['p50', 'p50'],
  ['p90', 'p90'],
  ['p99', 'p99'],
  ['p999', 'p99.9'],
  ['p9999', 'p99.99'],
  ['max', 'max'],
];

/** A file name for a workload: parameters and all. */
export function slug(workload: string): string {
  return workload.replace(/[^a-zA-Z0-9-]+/g, '_');
}

export interface Plot {
  readonly file: string;
  readonly title: string;
  readonly svg: string;
}

/** Every plot for these rows; colours by strategy, the same in every plot. */
export function plots(rows: readonly Row[]): Plot[] {
  const ok = rows.filter(isOk);
  const strategies = [...new Set(rows.map((r) => r.strategy))];
  const color = (s: string) => strategies.indexOf(s);
  const workloads = [...new Set(ok.map((r) => r.workload))];
  const out: Plot[] = [];
  for (const w of workloads) {
    const rs = ok.filter((r) => r.workload === w);
    const latency: Series[] = rs.flatMap((r) => [
      { name: `${r.strategy} alloc`, color: color(r.strategy), points: LADDER.map(([k], i) => [i, r.alloc_ns[k]] as const) },
      { name: `${r.strategy} free`, color: color(r.strategy), dashed: true, points: LADDER.map(([k], i) => [i, r.free_ns[k]] as const) },
    ]);
    if (rs.some((r) => r.alloc_ns.count > 0)) {
      const title = `${w}: latency per operation`;
      out.push({
        file: `latency-${slug(w)}.svg`,
        title,
        svg: lineChart({ title, x: { label: 'percentile', min: 0, max: LADDER.length - 1, ticks: LADDER.map(([, l], i) => [i, l] as const) }, y: { label: 'ns per operation (log)', log: true, format: formatNs }, series: latency }),
      });
    }
    const frag: Series[] = rs
      .filter((r) => r.fragmentation_series.length > 0)
      .flatMap((r) => {
        const first = r.fragmentation_series[0]!.op;
        const span = Math.max(1, r.fragmentation_series[r.fragmentation_series.length - 1]!.op - first);
        const x = (op: number) => (100 * (op - first)) / span;
        return [
          { name: `${r.strategy} index`, color: color(r.strategy), points: r.fragmentation_series.map((p) => [x(p.op), p.value] as const) },
          { name: `${r.strategy} unusable`, color: color(r.strategy), dashed: true, points: r.fragmentation_series.map((p) => [x(p.op), p.unusable] as const) },
        ];
      });
    if (frag.length > 0) {
      const title = `${w}: fragmentation over the measured phase`;
      out.push({ file: `fragmentation-${slug(w)}.svg`, title, svg: lineChart({ title, x: { label: '% of the measured phase', min: 0, max: 100 }, y: { label: 'index (solid); unusable free share (dashed)', min: 0, max: 1 }, series: frag }) });
    }
  }
  const sweep = ok.filter((r) => r.live_sweep?.length);
  if (sweep.length > 0) {
    const title = 'throughput against live ranges (long-short: random free + alloc of one page)';
    out.push({
      file: 'throughput-vs-live.svg',
      title,
      svg: lineChart({
        title,
        x: { label: 'live ranges (log)', log: true, format: (v) => (v >= 1e3 ? `${v / 1e3}k` : String(v)) },
        y: { label: 'million alloc+free pairs per second (log)', log: true },
        series: sweep.map((r) => ({ name: r.strategy, color: color(r.strategy), points: r.live_sweep!.map((p) => [p.live, 1e3 / p.pair_ns_mean] as const) })),
      }),
    });
  }
  const scaling = ok.filter((r) => r.cpu_scaling?.length);
  if (scaling.length > 0) {
    const title = 'nic: ns per pair against simulated CPUs (one JS thread)';
    const cpus = scaling[0]!.cpu_scaling!.map((p) => p.cpus);
    out.push({
      file: 'cpu-scaling.svg',
      title,
      svg: lineChart({
        title,
        x: { label: 'simulated CPUs (= TX queues)', log: true, ticks: cpus.map((c) => [c, String(c)] as const) },
        y: { label: 'ns per alloc+free pair (log)', log: true, format: formatNs },
        series: scaling.map((r) => ({ name: r.strategy, color: color(r.strategy), points: r.cpu_scaling!.map((p) => [p.cpus, p.pair_ns_mean] as const) })),
      }),
    });
  }
  return out;
}

// ---------------------------------------------------------------- the page

export interface PageInfo {
  readonly machine: Machine;
  readonly timerOverheadNs: number;
  readonly workloads: readonly { readonly name: string; readonly description: string; readonly source: string }[];
}

const COLS: readonly [string, (r: Exclude<Row, ErrorRow>) => string][] = [
  ['pair ns', (r) => ns(r.pair_ns_mean)],
  ['alloc mean', (r) => ns(r.alloc_ns.mean)],
  ['alloc p50', (r) => ns(r.alloc_ns.p50)],
  ['alloc p99', (r) => ns(r.alloc_ns.p99)],
  ['alloc p99.9', (r) => ns(r.alloc_ns.p999)],
  ['alloc max', (r) => ns(r.alloc_ns.max)],
  ['free mean', (r) => ns(r.free_ns.mean)],
  ['free p50', (r) => ns(r.free_ns.p50)],
  ['free p99', (r) => ns(r.free_ns.p99)],
  ['free p99.9', (r) => ns(r.free_ns.p999)],
  ['free max', (r) => ns(r.free_ns.max)],
  ['failures', (r) => String(r.failures)],
  ['failed although free', (r) => String(r.failed_allocs)],
  ['fragmentation', (r) => r.fragmentation.toFixed(3)],
  ['unusable free', (r) => r.unusable_free.toFixed(3)],
  ['bytes / live range', (r) => (r.bytes_per_live_range === null ? '-' : r.bytes_per_live_range.toFixed(0))],
  ['ops', (r) => `${r.ops}${r.truncated ? ' (stopped at the time cap)' : ''}`],
];

export function html(rows: readonly Row[], figures: readonly Plot[], info: PageInfo): string {
  const e = escapeXml;
  const m = info.machine;
  const table = [
    '<table>',
    `<tr><th>workload</th><th>strategy</th>${COLS.map(([h]) => `<th>${e(h)}</th>`).join('')}</tr>`,
    ...rows.map((r) =>
      isOk(r)
        ? `<tr><td>${e(r.workload)}</td><td>${e(r.strategy)}</td>${COLS.map(([, f]) => `<td>${e(f(r))}</td>`).join('')}</tr>`
        : `<tr><td>${e(r.workload)}</td><td>${e(r.strategy)}</td><td colspan="${COLS.length}">error: ${e(r.error)}</td></tr>`,
    ),
    '</table>',
  ].join('\n');
  const used = new Set(rows.map((r) => r.workload));
  const wl = info.workloads.filter((w) => used.has(w.name)).map((w) => `<dt>${e(w.name)}</dt><dd>${e(w.description)} <i>(${e(w.source)})</i></dd>`);
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<title>ivory bench iova</title>
<style>
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
td:nth-child(-n+2), th:nth-child(-n+2) { text-align: left; }
figure { display: inline-block; margin: 1em; }
</style>
</head>
<body>
<h1>IOVA allocators: ivory bench iova</h1>
<p>${e(m.machine)}; ${e(m.date)}; CPU calibration ${m.calibration_ms ?? '-'} ms (1e8 loop iterations, lower is faster); per-op timer overhead ${info.timerOverheadNs.toFixed(1)} ns, subtracted from every latency sample.
${e(MACHINE_TAIL_TITLE)}, p50 → p99 / p99.9: ${e(formatMachineTail(m.machine_tail))}.
Times in ns; "pair ns" is the measured phase's time without per-op timers divided by its allocations (docs/iova-bench.md defines every column).</p>
${table}
<h2>Workloads</h2>
<dl>
${wl.join('\n')}
</dl>
<h2>Figures</h2>
${figures.map((f) => `<figure><img src="${e(f.file)}" alt="${e(f.title)}"/><figcaption>${e(f.title)}</figcaption></figure>`).join('\n')}
</body>
</html>
`;
}

/** Writes every plot and index.html into `dir`; returns the files written. */
export function writeOut(dir: string, rows: readonly Row[], info: PageInfo): string[] {
  mkdirSync(dir, { recursive: true });
  const figures = plots(rows);
  const files: string[] = [];
  for (const f of figures) {
    writeFileSync(join(dir, f.file), f.svg);
    files.push(join(dir, f.file));
  }
  writeFileSync(join(dir, 'index.html'), html(rows, figures, info));
  files.push(join(dir, 'index.html'));
  return files;
}
