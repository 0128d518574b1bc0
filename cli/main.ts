// The ivory command line: `ivory run [scenario] [--json] [--trace FILE]`.
// A bad argument or scenario field prints one line and exits non-zero.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UsageError } from './errors.ts';
import { runReplay } from './replay.ts';
import { formatReport } from './report.ts';
import { runScenario } from './run.ts';
import { loadScenario } from './scenario.ts';
import { toChromeTrace } from './trace.ts';

const USAGE = `usage: ivory run [scenario.yaml] [--json] [--trace FILE] [--console]
       ivory replay <requests.json | qemu-trace.log> [--profile NAME] [--json]
       ivory bench iova [--strategy a,b] [--workload x,y] [--ops N] [--seed S] [--json] [--out DIR]
       ivory bench ring|viommu [--json] [--ops N]
  run        boot a machine from a scenario file (default: scenarios/default.yaml) and print its report
  replay     send raw virtio-iommu requests to the device model and print each status
  bench      run a benchmark from the benchmark bundle (docs/benchmarks.md, docs/iova-bench.md)
  --json     print the report as JSON (version ${1})
  --trace    also write guest and host trace events as Chrome Trace JSON (open in Perfetto)
  --console  also print the guest's console (dmesg at its log level)`;

interface RunArgs {
  scenario: string;
  json: boolean;
  trace: string | undefined;
  console: boolean;
}

export function parseRunArgs(args: readonly string[], defaultScenario: string): RunArgs {
  const out: RunArgs = { scenario: defaultScenario, json: false, trace: undefined, console: false };
  let positional = 0;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--json') out.json = true;
    else if (a === '--console') out.console = true;
    else if (a === '--trace') {
      const file = args[++i];
      if (!file || file.startsWith('--')) throw new UsageError('--trace', 'needs a file name');
      out.trace = file;
    } else if (a.startsWith('-')) throw new UsageError(a, 'unknown option (see ivory help)');
    else if (positional++ === 0) out.scenario = a;
    else throw new UsageError(a, 'unexpected argument: run takes one scenario file');
  }
  return out;
}

/** Returns the exit code. `guestImage` is the path of the guest image to boot. */
export async function main(argv: readonly string[], guestImage: string): Promise<number> {
  const [cmd, ...rest] = argv;
  const root = fileURLToPath(new URL('..', import.meta.url));
  try {
    switch (cmd) {
      case undefined:
      case 'help':
      case '--help':
        console.log(USAGE);
        return cmd === undefined ? 2 : 0;
      case 'run': {
        const args = parseRunArgs(rest, `${root}/scenarios/default.yaml`);
        const { report, trace } = await runScenario(loadScenario(args.scenario), guestImage);
        if (args.trace) writeFileSync(args.trace, JSON.stringify(toChromeTrace(trace)));
        if (args.console) for (const line of report.host.console) console.log(line);
        console.log(args.json ? JSON.stringify(report, null, 2) : formatReport(report));
        return report.exitStatus === 0 ? 0 : 1;
      }
      case 'replay':
        return runReplay(rest);
      default:
        throw new UsageError(cmd, 'unknown command (commands: run, replay, help)');
    }
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`ivory: ${e.message}`);
      return 2;
    }
    throw e;
  }
}
