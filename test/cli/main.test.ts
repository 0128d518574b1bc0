import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/main.ts';
import { GUEST_SOURCE, ROOT } from '../e2e/support.ts';

const dir = mkdtempSync(join(tmpdir(), 'ivory-cli-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((s: string) => void out.push(s));
  vi.spyOn(console, 'error').mockImplementation((s: string) => void err.push(s));
  return { out, err };
}

afterEach(() => vi.restoreAllMocks());

describe('ivory run', () => {
  it('prints the readable report and exits 0', async () => {
    const io = capture();
    expect(await main(['run'], GUEST_SOURCE)).toBe(0);
    const text = io.out.join('\n');
    expect(text).toMatch(/virtio-blk \(virtio ID 2\) via virtio-pci/);
    expect(text).toMatch(/virtio-rng \(virtio ID 4\) via virtio-mmio/);
    expect(text).toMatch(/every byte matches/);
    expect(io.err).toEqual([]);
  });

  it('--json prints the versioned report; --trace writes Chrome trace JSON', async () => {
    const io = capture();
    const trace = join(dir, 'trace.json');
    expect(await main(['run', '--json', '--trace', trace], GUEST_SOURCE)).toBe(0);
    const report = JSON.parse(io.out.join('\n'));
    expect(report.version).toBe(1);
    expect(report.guest.workload.disk.verified).toBe(true);
    const t = JSON.parse(readFileSync(trace, 'utf8'));
    const names = new Set(t.traceEvents.map((e: { name: string }) => e.name));
    expect(names.has('virtio_queue_notify')).toBe(true);
    expect(names.has('process_name')).toBe(true);
  });

  it.each([
    [['run', '--jsn'], 'ivory: --jsn: unknown option (see ivory help)'],
    [['run', 'a.yaml', 'b.yaml'], 'ivory: b.yaml: unexpected argument: run takes one scenario file'],
    [['run', '--trace'], 'ivory: --trace: needs a file name'],
    [['frobnicate'], 'ivory: frobnicate: unknown command (commands: run, replay, help)'],
  ])('a bad argument %j gets one line and a non-zero exit', async (argv, line) => {
    const io = capture();
    expect(await main(argv, GUEST_SOURCE)).toBe(2);
    expect(io.err).toEqual([line]);
    expect(io.out).toEqual([]);
  });

  it.each([
    ['bad-transport.yaml', 'devices:\n  - type: virtio-blk\n    transport: usb\n', 'devices[0].transport: expected one of pci, mmio, got "usb"'],
    ['bad-yaml.yaml', 'devices: [\n', 'not valid YAML'],
    ['too-many.yaml', `devices:\n${'  - type: virtio-rng\n    transport: mmio\n'.repeat(25)}`, 'devices: no free virtio-mmio slot'],
  ])('a bad scenario file (%s) gets one line naming the field', async (name, text, problem) => {
    const io = capture();
    const p = file(name, text);
    expect(await main(['run', p], GUEST_SOURCE)).toBe(2);
    expect(io.err).toHaveLength(1);
    expect(io.err[0]).toContain(problem);
    expect(io.err[0]!.startsWith('ivory: ')).toBe(true);
  });

  it('a missing scenario file names the path', async () => {
    const io = capture();
    expect(await main(['run', join(dir, 'nope.yaml')], GUEST_SOURCE)).toBe(2);
    expect(io.err).toEqual([`ivory: ${join(dir, 'nope.yaml')}: cannot read: ENOENT`]);
  });
});

describe('the built command', () => {
  it('builds the guest image and the CLI bundle, and bin/ivory runs the default scenario from them', () => {
    execFileSync(process.execPath, ['build.mjs', '--quiet'], { cwd: ROOT });
    const ok = spawnSync(process.execPath, ['bin/ivory.mjs', 'run'], { cwd: ROOT, encoding: 'utf8' });
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/every byte matches/);
    const bad = spawnSync(process.execPath, ['bin/ivory.mjs', 'run', '--bogus'], { cwd: ROOT, encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toEqual(['ivory: --bogus: unknown option (see ivory help)']);
  });
});
