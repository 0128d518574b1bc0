#!/usr/bin/env node
// The ivory command: runs the CLI bundle, building it first on a fresh checkout.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
if (!existsSync(`${root}/dist/cli.mjs`) || !existsSync(`${root}/dist/guest.mjs`)) {
  const { buildAll } = await import(`${root}/build.mjs`);
  await buildAll({ quiet: true });
}
const { main } = await import(`${root}/dist/cli.mjs`);
process.exitCode = await main(process.argv.slice(2), `${root}/dist/guest.mjs`);
