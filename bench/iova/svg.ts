// Hand-written SVG line charts for the IOVA benchmark's --out pages: linear
// or log axes, one line per series, a legend. No dependencies.

export interface Series {
  readonly name: string;
  /** [x, y]; points with a non-finite or (on a log axis) non-positive coordinate are left out. */
  readonly points: readonly (readonly [number, number])[];
  readonly dashed?: boolean;
  /** Index into the palette; series of one strategy share a colour. */
  readonly color?: number;
}

export interface Axis {
  readonly label: string;
  readonly log?: boolean;
  /** Fixed range; taken from the data otherwise. */
  readonly min?: number;
  readonly max?: number;
  /** Tick positions with their labels, instead of computed ones. */
  readonly ticks?: readonly (readonly [number, string])[];
  readonly format?: (v: number) => string;
}

export interface Chart {
  readonly title: string;
  readonly x: Axis;
  readonly y: Axis;
  readonly series: readonly Series[];
}

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** 1.2 µs, 340 ns, 5.6 ms. */
export function formatNs(ns: number): string {
  if (!Number.isFinite(ns)) return String(ns);
  if (ns >= 1e6) return `${+(ns / 1e6).toPrecision(3)} ms`;
  if (ns >= 1e3) return `${+(ns / 1e3).toPrecision(3)} µs`;
  return `${+ns.toPrecision(3)} ns`;
}

const W = 720;
const H = 420;
const M = { left: 78, right: 190, top: 40, bottom: 56 };
const fmt = (v: number) => (Math.round(v * 100) / 100).toString();

function scale(axis: Axis, values: number[], from: number, to: number): { map: (v: number) => number; ticks: [number, string][] } {
  const log = axis.log ?? false;
  const ok = values.filter((v) => Number.isFinite(v) && (!log || v > 0));
  let lo = axis.min ?? (ok.length ? Math.min(...ok) : 0);
  let hi = axis.max ?? (ok.length ? Math.max(...ok) : 1);
  if (log) {
    lo = Math.max(lo, Number.MIN_VALUE);
    lo = 10 ** Math.floor(Math.log10(lo));
    hi = 10 ** Math.ceil(Math.log10(Math.max(hi, lo * 10)));
    if (hi <= lo) hi = lo * 10;
  } else if (hi <= lo) {
    hi = lo + 1;
  }
  const t = (v: number) => (log ? Math.log10(v) : v);
  const map = (v: number) => from + ((t(v) - t(lo)) / (t(hi) - t(lo))) * (to - from);
  const label = axis.format ?? ((v: number) => (Math.abs(v) >= 1e6 ? v.toExponential(0) : Math.abs(v) < 1e-2 && v !== 0 ? String(+v.toPrecision(2)) : fmt(v)));
  let ticks: [number, string][];
  if (axis.ticks) ticks = axis.ticks.filter(([v]) => v >= lo && v <= hi).map(([v, l]) => [v, l]);
  else if (log) {
    ticks = [];
    for (let e = Math.round(Math.log10(lo)); e <= Math.round(Math.log10(hi)); e++) ticks.push([10 ** e, label(10 ** e)]);
  } else {
    const step = niceStep((hi - lo) / 5);
    ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push([v, label(+v.toPrecision(12))]);
  }
  return { map, ticks };
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

/** A complete SVG document. */
export function lineChart(c: Chart): string {
  const px = M.left;
  const pw = W - M.left - M.right;
  const py = M.top;
  const ph = H - M.top - M.bottom;
  const xs = scale(c.x, c.series.flatMap((s) => s.points.map((p) => p[0])), px, px + pw);
  const ys = scale(c.y, c.series.flatMap((s) => s.points.map((p) => p[1])), py + ph, py);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<title>${escapeXml(c.title)}</title>`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(c.title)}</text>`);
  out.push('<g stroke="#ddd" stroke-width="1">');
  for (const [v] of xs.ticks) out.push(`<line x1="${fmt(xs.map(v))}" y1="${py}" x2="${fmt(xs.map(v))}" y2="${py + ph}"/>`);
  for (const [v] of ys.ticks) out.push(`<line x1="${px}" y1="${fmt(ys.map(v))}" x2="${px + pw}" y2="${fmt(ys.map(v))}"/>`);
  out.push('</g>');
  out.push(`<rect x="${px}" y="${py}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push('<g fill="#333">');
  for (const [v, l] of xs.ticks) out.push(`<text x="${fmt(xs.map(v))}" y="${py + ph + 16}" text-anchor="middle">${escapeXml(l)}</text>`);
  for (const [v, l] of ys.ticks) out.push(`<text x="${px - 6}" y="${fmt(ys.map(v) + 4)}" text-anchor="end">${escapeXml(l)}</text>`);
  out.push(`<text x="${px + pw / 2}" y="${H - 14}" text-anchor="middle">${escapeXml(c.x.label)}</text>`);
  out.push(`<text x="16" y="${py + ph / 2}" text-anchor="middle" transform="rotate(-90 16 ${py + ph / 2})">${escapeXml(c.y.label)}</text>`);
  out.push('</g>');
  c.series.forEach((s, i) => {
    const color = PALETTE[(s.color ?? i) % PALETTE.length]!;
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!c.x.log || x > 0) && (!c.y.log || y > 0));
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    if (pts.length > 1) out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${pts.map(([x, y]) => `${fmt(xs.map(x))},${fmt(ys.map(y))}`).join(' ')}"/>`);
    for (const [x, y] of pts) out.push(`<circle cx="${fmt(xs.map(x))}" cy="${fmt(ys.map(y))}" r="3" fill="${color}"/>`);
    const ly = py + 8 + i * 18;
    out.push(`<line x1="${px + pw + 12}" y1="${ly}" x2="${px + pw + 36}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${px + pw + 42}" y="${ly + 4}">${escapeXml(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
