// Builds the two artefacts with esbuild: the guest image (kernel/, drivers/,
// dma/ bundled into one module the launcher boots by path, as QEMU boots
// -kernel) and the CLI bundle (cli/ with platform/). Neither imports the other.
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
  ]);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildAll({ quiet: process.argv.includes('--quiet') });
