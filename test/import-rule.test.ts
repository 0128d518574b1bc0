// The seam of design §1: the guest (kernel/, drivers/, dma/) and the host
// (platform/) never import each other; both may import abi/, which imports
// nothing outside itself but npm packages.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const GUEST = ['kernel', 'drivers', 'dma'];
const SCANNED = [...GUEST, 'platform', 'abi'];

/** Every module specifier a source names: static import/export-from, side-effect imports, import('...'). */
function specifiers(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const patterns = [
    /^\s*(?:import|export)\b[^;'"]*?\bfrom\s*['"]([^'"]+)['"]/gm,
    /^\s*import\s*['"]([^'"]+)['"]/gm,
    /\bimport\s*\(\s*['"`]([^'"`$]+)['"`]\s*\)/g,
  ];
  return patterns.flatMap((re) => [...code.matchAll(re)].map((m) => m[1]!));
}

/** The top-level folder a specifier lands in, 'npm' for a package, 'node' for a builtin. */
function target(file: string, spec: string): string {
  if (spec.startsWith('node:')) return 'node';
  if (!spec.startsWith('.') && !spec.startsWith('/')) return 'npm';
  const rel = relative(ROOT, resolve(dirname(file), spec));
  return rel.startsWith('..') ? 'outside' : rel.split(sep)[0]!;
}

/** Why `from` may not import `to`, or undefined when it may. */
function violation(from: string, to: string): string | undefined {
  if (from === 'abi') return to === 'abi' || to === 'npm' ? undefined : 'abi/ imports only abi/ and npm packages';
  if (GUEST.includes(from) && to === 'platform') return 'the guest never imports platform/';
  if (from === 'platform' && GUEST.includes(to)) return 'platform/ never imports the guest';
  return undefined;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sources(path);
    return /\.(ts|mts|js|mjs)$/.test(e.name) ? [path] : [];
  });
}

describe('the import rule', () => {
  it('finds every kind of import it is meant to check', () => {
    const src = [
      "import { a } from '../platform/a.ts';",
      'import type {',
      '  B,',
      "} from '../platform/b.ts';",
      "export { c } from '../platform/c.ts';",
      "export * from '../platform/d.ts';",
      "import '../platform/e.ts';",
      "const f = await import('../platform/f.ts');",
      "// import { g } from '../platform/g.ts';",
      "/* import { h } from '../platform/h.ts'; */",
      "const s = 'from ../platform/i.ts';",
    ].join('\n');
    expect(specifiers(src)).toEqual(['../platform/a.ts', '../platform/b.ts', '../platform/c.ts', '../platform/d.ts', '../platform/e.ts', '../platform/f.ts']);
    expect(violation('dma', 'platform')).toBeDefined();
    expect(violation('platform', 'kernel')).toBeDefined();
    expect(violation('abi', 'kernel')).toBeDefined();
    expect(violation('abi', 'node')).toBeDefined();
    expect(violation('drivers', 'abi')).toBeUndefined();
    expect(violation('platform', 'abi')).toBeUndefined();
  });

  it('holds for every source of kernel/, drivers/, dma/, platform/ and abi/', () => {
    const broken: string[] = [];
    let checked = 0;
    for (const folder of SCANNED) {
      for (const file of sources(join(ROOT, folder))) {
        for (const spec of specifiers(readFileSync(file, 'utf8'))) {
          checked++;
          const why = violation(folder, target(file, spec));
          if (why) broken.push(`${relative(ROOT, file)} imports '${spec}': ${why}`);
        }
      }
    }
    expect(broken).toEqual([]);
    expect(checked).toBeGreaterThan(50);
  });
});
