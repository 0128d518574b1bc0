// `ivory bench iova` end to end, in this thread and tiny: the JSON rows, the
// table, the --out files, and one line with exit code 2 for a bad argument.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { iovaMain, parseIovaArgs, Progress } from '../../bench/iova/cli.ts';
import { runCell } from '../../bench/iova/runner.ts';
import { MACHINE_TAIL_NS } from '../../bench/iova/stats.ts';
import { lineChart } from '../../bench/iova/svg.ts';

async function run(argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await iovaMain(argv, { stdout: (s) => out.push(s), stderr: (s) => err.push(s) });
  return { code, out: out.join('\n'), err };
}

/** Well-formed enough: every tag closes in order, attributes are quoted, text has no bare < or &. */
function checkXml(text: string): string[] {
  const names: string[] = [];
  const stack: string[] = [];
  const body = text.replace(/^<\?xml[^>]*\?>/, '').replace(/<!DOCTYPE[^>]*>/i, '');
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  for (let m = tag.exec(body); m; m = tag.exec(body)) {
    const text = body.slice(last, m.index);
    if (/[<>]/.test(text) || /&(?!(amp|lt|gt|quot|#\d+);)/.test(text)) throw new Error(`bad text before offset ${m.index}: ${JSON.stringify(text.slice(0, 40))}`);
    last = tag.lastIndex;
    const [, close, name, , selfClose] = m;
    if (close) {
      if (stack.pop() !== name) throw new Error(`</${name}> does not close the open element`);
    } else if (!selfClose) stack.push(name!);
    names.push(name!);
  }
  if (/[<>]/.test(body.slice(last))) throw new Error('unparsed markup at the end');
  if (stack.length) throw new Error(`unclosed: ${stack.join(', ')}`);
  return names;
}

describe('ivory bench iova', () => {
  it('--json prints one row per strategy x workload with the documented fields', async () => {
    const r = await run(['--strategy', 'linux,linux-rcache', '--workload', 'ring-48,mixed-32,near-full', '--ops', '2000', '--reps', '1', '--latency-reps', '1', '--json']);
    expect(r.err).toEqual([]);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.out);
    expect(Array.isArray(rows)).toBe(true);
    expect(rows.map((x: { strategy: string; workload: string }) => `${x.workload}/${x.strategy}`)).toEqual([
      'ring-48/linux',
      'ring-48/linux-rcache',
      'mixed-32/linux',
      'mixed-32/linux-rcache',
      'near-full/linux',
      'near-full/linux-rcache',
    ]);
    for (const row of rows) {
      expect(row).toMatchObject({ ops: expect.any(Number), pair_ns_mean: expect.any(Number), failed_allocs: expect.any(Number), fragmentation: expect.any(Number), machine: expect.any(String) });
      expect(row.ops).toBeGreaterThanOrEqual(2000);
      for (const k of ['alloc_ns', 'free_ns']) {
        expect(Object.keys(row[k])).toEqual(expect.arrayContaining(['mean', 'p50', 'p99', 'p999', 'max']));
        expect(row[k].p50).toBeLessThanOrEqual(row[k].p99);
        expect(row[k].p99).toBeLessThanOrEqual(row[k].max);
      }
      expect(row.bytes_per_live_range).toBeGreaterThan(0);
      expect(row.invalid_allocs).toBe(0);
      expect(row.fragmentation_series.length).toBeGreaterThan(2);
      // The machine's own tail: one fixed computation per size, its percentiles in order.
      expect(row.machine_tail).toHaveLength(MACHINE_TAIL_NS.length);
      for (const t of row.machine_tail) {
        expect(t.p50).toBeGreaterThan(0);
        expect(t.p50).toBeLessThanOrEqual(t.p99);
        expect(t.p99).toBeLessThanOrEqual(t.p999);
      }
    }
    const ring = rows[0];
    expect(ring.failures).toBe(0);
    expect(ring.live_ranges).toBe(256);
    // linux's rbtree: one 64-byte node per range (and the anchor).
    expect(ring.bytes_per_live_range).toBeCloseTo(64 * (256 + 1) / 256, 5);
    expect(rows[4].fragmentation).toBeGreaterThan(0.9); // near-full
  }, 30_000);

  it('dma32-full: the 32-bit device\'s extra page finds the space full, failures with no free block to be had', async () => {
    const r = await run(['--strategy', 'linux', '--workload', 'dma32-full', '--ops', '200', '--reps', '1', '--latency-reps', '1', '--json']);
    const [row] = JSON.parse(r.out);
    expect(row.failures).toBeGreaterThan(10);
    expect(row.failed_allocs).toBe(0);
    expect(row.invalid_allocs).toBe(0);
    expect(row.live_ranges).toBe((0x100000 - 64) / 64 + 6 + 256);
  }, 30_000);

  it('prints the table, the CPU scaling of nic, and writes SVG plots and index.html with --out', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ivory-iova-'));
    const r = await run(['--strategy', 'linux-rcache', '--workload', 'nic,long-short:live=2000,fill-32', '--ops', '2000', '--reps', '1', '--latency-reps', '1', '--out', dir]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/workload\s+strategy\s+pair ns\s+alloc mean/);
    expect(r.out).toMatch(/^machine's own tail now .*: (\S+ [nµm]?s → \S+ [nµm]?s \/ \S+ [nµm]?s(; |$)){3}/m);
    expect(r.out).toMatch(/nic\s+linux-rcache/);
    expect(r.out).toMatch(/1 CPU\s+2 CPUs\s+4 CPUs\s+8 CPUs\s+16 CPUs/);
    expect(r.err).toEqual([expect.stringMatching(/wrote \d+ files/)]);
    const files = readdirSync(dir).sort();
    expect(files).toEqual(expect.arrayContaining(['index.html', 'latency-nic.svg', 'fragmentation-fill-32.svg', 'cpu-scaling.svg']));
    for (const f of files.filter((x) => x.endsWith('.svg'))) {
      const names = checkXml(readFileSync(join(dir, f), 'utf8'));
      expect(names[0], f).toBe('svg');
      expect(names, f).toEqual(expect.arrayContaining(['polyline', 'text', 'line']));
    }
    const page = readFileSync(join(dir, 'index.html'), 'utf8');
    expect(checkXml(page)).toEqual(expect.arrayContaining(['table', 'img']));
    expect(page).toContain("machine's own tail now");
    for (const f of files.filter((x) => x.endsWith('.svg'))) expect(page).toContain(`src="${f}"`);
  }, 30_000);

  it.each([
    [['--strategy', 'linux,nope'], 'bench iova: --strategy: unknown strategy "nope" (strategies: '],
    [['--workload', 'ring-64'], 'bench iova: --workload: unknown workload "ring-64" (workloads: ring-32, '],
    [['--workload', 'map-bench:delay=x'], 'bench iova: --workload: map-bench: expected key=value with a whole number, got "delay=x"'],
    [['--ops', '-5'], 'bench iova: --ops: expected an integer from 2 to 1000000000, got "-5"'],
    [['--ops', '1e3'], 'bench iova: --ops: expected an integer from 2 to 1000000000, got "1e3"'],
    [['--seed'], 'bench iova: --seed: needs a value'],
    [['--out'], 'bench iova: --out: needs a directory'],
    [['--frobnicate'], 'bench iova: --frobnicate: unknown option'],
    [['extra'], 'bench iova: extra: unexpected argument'],
  ])('a bad argument %j gets one line and exit code 2', async (argv, line) => {
    const r = await run(argv);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toHaveLength(1);
    expect(r.err[0]!.startsWith(line), r.err[0]).toBe(true);
  });

  it('parses the defaults: every registered strategy and workload', () => {
    const a = parseIovaArgs([], ['x', 'y']);
    expect(a.strategies).toEqual(['x', 'y']);
    expect(a.workloads.length).toBe(15);
    expect(a).toMatchObject({ ops: undefined, seed: 1, json: false, out: undefined });
  });

  it('draws no progress bar unless stderr is a terminal', () => {
    const written: string[] = [];
    const stream = { isTTY: false, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
    new Progress(10, stream).update(5, 'x', true);
    expect(written).toEqual([]);
    const tty = { isTTY: true, columns: 80, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
    const p = new Progress(10, tty);
    p.update(5, 'linux ring-48', true);
    p.clear();
    expect(written[0]).toMatch(/^\r\x1b\[K\[#{14}\.{14}\] {2}50% 0m00s linux ring-48$/);
  });

  it('a pass that runs past --pass-ms stops, and every later pass stops at the same op', () => {
    const r = runCell({ strategy: 'linux', workload: 'mixed-48', ops: 400_000, seed: 1, reps: 2, timedReps: 1, passMs: 40 });
    expect(r.truncated).toBe(true);
    expect(r.ops).toBeLessThan(400_000);
    expect(r.ops).toBeGreaterThan(0);
    expect(r.alloc_ns.count + r.free_ns.count).toBe(r.ops);
    expect(r.fragmentation_series.at(-1)!.op).toBe(4096 + r.ops);
    const whole = runCell({ strategy: 'linux-rcache', workload: 'ring-48', ops: 2000, seed: 1, reps: 1, timedReps: 1 });
    expect(whole).toMatchObject({ truncated: false, ops: 2000, allocs: 1000 });
  }, 30_000);

  it('escapes text in SVG', () => {
    const svg = lineChart({ title: 'a < b & c', x: { label: 'x' }, y: { label: 'y', log: true }, series: [{ name: '"q"', points: [[1, 10], [2, 100]] }] });
    expect(checkXml(svg)).toContain('polyline');
    expect(svg).toContain('a &lt; b &amp; c');
  });
});
