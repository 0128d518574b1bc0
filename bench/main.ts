// npm run bench -- <name> [--json] [--ops N]: runs one benchmark and prints
// a table, or JSON for machines. Figures go to docs/benchmarks.md (ring,
// viommu) and docs/iova-bench.md (iova). Built by build.mjs into
// dist/bench.mjs, which `npm run bench` and `ivory bench` run: bundled code
// runs about twice as fast as through tsx's loader.
import { realpathSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { cellWorker, iovaMain, WORKER_TAG, type CellMessage } from './iova/cli.ts';
import { runRing, type RingResult } from './ring.ts';
import { DISK_REQUEST_SIZES, runDisk, runDiskSweep, runPairs } from './viommu.ts';

const USAGE = 'usage: npm run bench -- ring|viommu [--json] [--ops N] | iova [--strategy a,b] [--workload x,y] [--ops N] [--seed S] [--json] [--out DIR]';

interface Args {
  name: string;
  json: boolean;
  ops: number | undefined;
}

function parseArgs(argv: readonly string[]): Args {
  const out: Args = { name: '', json: false, ops: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') out.json = true;
    else if (a === '--ops') {
      const n = Number(argv[++i]);
      if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--ops: expected a positive integer, got ${JSON.stringify(argv[i])}`);
      out.ops = n;
    } else if (!a.startsWith('-') && !out.name) out.name = a;
    else throw new Error(`${a}: unknown argument`);
  }
  if (!out.name) throw new Error(USAGE);
  return out;
}

function ringTable(rows: RingResult[]): string {
  const head = ['batch', 'ACCESS_PLATFORM', 'buffers/s (median)', 'ns/buffer (median)', 'buffers/s (best)', 'ns/buffer (best)', 'kicks/run'];
  const mps = (n: number) => (n / 1e6).toFixed(2) + ' M';
  const body = rows.map((r) => [String(r.batch), r.accessPlatform ? 'yes (DMA API)' : 'no', mps(r.buffersPerSec), r.nsPerBuffer.toFixed(1), mps(r.bestBuffersPerSec), r.bestNsPerBuffer.toFixed(1), String(r.kicks)]);
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(width[i]!)).join('  ');
  return [line(head), ...body.map(line)].join('\n');
}

/**
 * The speed of this CPU right now: ms for a fixed integer loop (best of 3).
 * Shared VMs drift by 2x; figures taken at different calibrations compare
 * only after scaling by it.
 */
function calibrate(): number {
  let best = Infinity;
  for (let r = 0; r < 3; r++) {
    const t0 = process.hrtime.bigint();
    let x = 0;
    for (let i = 0; i < 1e8; i++) x = (x + i * 7) | 0;
    if (x === 42) console.log(''); // keeps the loop alive
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return Math.round(best);
}

function table(head: string[], body: string[][]): string {
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(width[i]!)).join('  ');
  return [line(head), ...body.map(line)].join('\n');
}

async function viommu(args: Args, machine: string): Promise<void> {
  const pairs = args.ops ?? 200_000;
  const calibrationMs = calibrate();
  // Each batch size against the null device right after the real one: the same moment of this VM.
  const batched = [1, 64].flatMap((batch) => (['virtio-iommu', 'null'] as const).map((device) => ({ batch, device, ...runPairs(pairs, batch, device) })));
  // 64 KiB is the headline; larger requests show where the IOMMU's per-request round trips stop mattering.
  const disks = [];
  for (const requestBytes of DISK_REQUEST_SIZES) disks.push({ requestBytes, modes: await runDisk(8 * 2 ** 20, requestBytes) });
  const sweep = await runDiskSweep(8 * 2 ** 20);
  if (args.json) {
    console.log(JSON.stringify({ bench: 'viommu', machine, calibrationMs, pairs: batched, disk: disks, diskSweep: sweep }, null, 2));
    return;
  }
  console.log(`virtio-iommu (${machine}); CPU calibration ${calibrationMs} ms`);
  console.log(`\nMAP+UNMAP pairs of one 4 KiB page through the device's request queue (a guest ring, pre-encoded requests)`);
  console.log(`("null": a device that writes OK without reading the request, the cost of the ring, the queue and the event loop alone)`);
  console.log(`(${batched[0]!.runs} runs of ${batched[0]!.pairs} pairs each, a fresh ring each run: the median run and the fastest)`);
  const rate = (perSec: number) => (perSec / 1e6).toFixed(2) + ' M';
  console.log(
    table(
      ['pairs per kick', 'device', 'pairs/s (median)', 'ns/pair (median)', 'pairs/s (best)', 'ns/pair (best)'],
      batched.map((b) => [String(b.batch), b.device, rate(b.pairsPerSec), String(b.nsPerPair), rate(b.bestPairsPerSec), String(b.bestNsPerPair)]),
    ),
  );
  for (const { requestBytes, modes } of disks) {
    const base = modes[0]!;
    console.log(`\ndisk: write 8 MiB then read it back, ${requestBytes / 1024} KiB requests, 16 in flight`);
    console.log(
      table(
        ['mode', 'modelled MB/s', 'of no-IOMMU', 'simulator MB/s', 'of no-IOMMU', 'MAPs', 'UNMAPs'],
        modes.map((d) => [d.mode, d.virtualMBps.toFixed(1), percent(d.virtualMBps / base.virtualMBps), d.wallMBps.toFixed(1), percent(d.wallMBps / base.wallMBps), String(d.mapRequests), String(d.unmapRequests)]),
      ),
    );
  }
  console.log(`\ndisk by request size, modelled: IOMMU throughput as a share of no-IOMMU`);
  console.log(table(['request', 'no IOMMU MB/s', 'strict', 'lazy'], sweep.map((r) => [`${r.requestBytes / 1024} KiB`, r.noIommuMBps.toFixed(1), percent(r.strictShare), percent(r.lazyShare)])));
}

const percent = (share: number): string => (share * 100).toFixed(0) + '%';

/** Runs the benchmark `argv` names; returns the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  if (argv[0] === 'iova') {
    // From the bundle, each measurement runs in a worker thread of this very file.
    const self = fileURLToPath(import.meta.url);
    return iovaMain(argv.slice(1), { workerScript: self.endsWith('.mjs') ? self : undefined, calibrate });
  }
  let args: Args;
  try {
    args = parseArgs(argv);
  } catch (e) {
    console.error(`bench: ${(e as Error).message}`);
    return 2;
  }
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, Node ${process.version}`;
  switch (args.name) {
    case 'ring': {
      const buffers = args.ops ?? 2_000_000;
      const before = calibrate();
      const rows = [1, 64].flatMap((batch) => [false, true].map((accessPlatform) => runRing({ batch, queueSize: 256, accessPlatform }, buffers)));
      const calibrationMs = Math.min(before, calibrate());
      if (args.json) console.log(JSON.stringify({ bench: 'ring', machine, calibrationMs, buffers, rows }, null, 2));
      else {
        console.log(`split ring, trivial device, single thread; ${buffers} buffers per run, 7 runs after a warm-up (${machine})`);
        console.log(`CPU calibration: ${calibrationMs} ms for 1e8 loop iterations (lower is a faster CPU right now)\n${ringTable(rows)}`);
      }
      return 0;
    }
    case 'viommu':
      await viommu(args, machine);
      return 0;
    default:
      console.error(`bench: ${args.name}: unknown benchmark (benchmarks: ring, viommu, iova)`);
      return 2;
  }
}

if (!isMainThread && (workerData as Record<string, unknown> | null)?.[WORKER_TAG]) {
  cellWorker(workerData as Parameters<typeof cellWorker>[0], (m: CellMessage) => parentPort!.postMessage(m));
} else if (isMainThread && process.argv[1] !== undefined && fileURLToPath(import.meta.url) === realpathSync(process.argv[1])) {
  process.exitCode = await main(process.argv.slice(2));
}
