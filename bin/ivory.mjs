#!/usr/bin/env node
// The ivory command: runs the CLI bundle (`ivory bench ...`: the benchmark
// bundle), building them first on a fresh checkout.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const argv = process.argv.slice(2);
if (!['cli', 'guest', 'bench'].every((b) => existsSync(`${root}/dist/${b}.mjs`))) {
  const { buildAll } = await import(`${root}/build.mjs`);
  await buildAll({ quiet: true });
}
if (argv[0] === 'bench') {
  const { main } = await import(`${root}/dist/bench.mjs`);
  process.exitCode = await main(argv.slice(1));
} else {
  const { main } = await import(`${root}/dist/cli.mjs`);
  process.exitCode = await main(argv, `${root}/dist/guest.mjs`);
}
