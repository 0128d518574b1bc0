// Builds the three artefacts with esbuild: the guest image (kernel/, drivers/,
// dma/ bundled into one module the launcher boots by path, as QEMU boots
// -kernel), the CLI bundle (cli/ with platform/), and the benchmarks
// (bench/, which take guest and host code alike; bundled because tsx's loader
// makes measured code about twice as slow). The first two never import each other.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('.', import.meta.url));

export async function buildAll({ quiet = false } = {}) {
  // buffer-layout is CommonJS and requires Node's `buffer`: give the ESM bundles a require().
  const banner = { js: "import { createRequire as __ivoryRequire } from 'node:module'; const require = __ivoryRequire(import.meta.url);" };
  const common = { bundle: true, platform: 'node', format: 'esm', target: 'node20', sourcemap: true, banner, absWorkingDir: root, logLevel: quiet ? 'warning' : 'info' };
  await Promise.all([
    build({ ...common, entryPoints: ['kernel/main.ts'], outfile: 'dist/guest.mjs' }),
    build({ ...common, entryPoints: ['cli/main.ts'], outfile: 'dist/cli.mjs', packages: 'external' }),
    build({ ...common, entryPoints: ['bench/main.ts'], outfile: 'dist/bench.mjs', packages: 'external' }),
  ]);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildAll({ quiet: process.argv.includes('--quiet') });
