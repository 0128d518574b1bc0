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

describe('ivory replay', () => {
  const json = file(
    'replay.json',
    JSON.stringify({
      device: { profile: 'qemu', endpoints: [0, 8], aw_bits: 64, granule: '4k', probe_size: 512, reserved_regions: [{ start: '0xfee00000', end: '0xfeefffff', type: 'msi' }] },
      requests: [
        { type: 'attach', domain: 1, endpoint: 0, flags: [] },
        { type: 'map', domain: 1, virt_start: '0x0', virt_end: '0xfff', phys_start: '0xa1000', flags: ['read'] },
        { type: 'map', domain: 1, virt_start: '0xfffffffffffff000', virt_end: '0xffffffffffffffff', phys_start: '0xa2000', flags: ['read', 'write'] },
        { type: 'unmap', domain: 1, virt_start: '0x0', virt_end: '0xfff' },
        { type: 'map', domain: 2, virt_start: '0x0', virt_end: '0xfff', phys_start: '0xa1000', flags: ['read'] },
        { type: 'probe', endpoint: 0 },
      ],
    }),
  );

  it('prints one line per request with its status, and the final domains', async () => {
    const io = capture();
    expect(await main(['replay', json], GUEST_SOURCE)).toBe(0);
    const text = io.out.join('\n');
    expect(text).toMatch(/0 {2}attach domain=1 endpoint=0 flags=- {2}-> OK/);
    expect(text).toMatch(/4 {2}map {4}domain=2 .* -> NOENT/);
    expect(text).toMatch(/summary: 5 OK, 1 NOENT/);
    expect(text).toMatch(/0xfffffffffffff000-0xffffffffffffffff -> 0xa2000 \[read\|write\]/);
  });

  it('--json gives results and the final state, 64-bit values as hex strings', async () => {
    const io = capture();
    expect(await main(['replay', json, '--json', '--profile', 'spec'], GUEST_SOURCE)).toBe(0);
    const out = JSON.parse(io.out.join('\n'));
    expect(out.results.map((r: { status: string }) => r.status)).toEqual(['OK', 'OK', 'OK', 'OK', 'NOENT', 'OK']);
    expect(out.results[0]).toEqual({ index: 0, type: 'attach', status: 'OK' });
    expect(out.final.domains).toEqual([{ id: 1, bypass: false, endpoints: [0], mappings: [{ virt_start: '0xfffffffffffff000', virt_end: '0xffffffffffffffff', phys_start: '0xa2000', flags: ['read', 'write'] }] }]);
  });

  it('replays a QEMU trace log, creating the endpoints it names', async () => {
    const log = file(
      'qemu.log',
      [
        '12345@1700000000.000001:virtio_iommu_attach domain=3 endpoint=16',
        'virtio_iommu_map domain=3 virt_start=0x1000 virt_end=0x1fff phys_start=0x80000 flags=3',
        'some unrelated line',
        '12345@1700000000.000009:virtio_iommu_unmap domain=3 virt_start=0x1000 virt_end=0x1fff',
        'virtio_iommu_detach domain=3 endpoint=16',
      ].join('\n'),
    );
    const io = capture();
    expect(await main(['replay', log, '--json'], GUEST_SOURCE)).toBe(0);
    const out = JSON.parse(io.out.join('\n'));
    expect(out.results.map((r: { type: string; status: string }) => `${r.type}:${r.status}`)).toEqual(['attach:OK', 'map:OK', 'unmap:OK', 'detach:OK']);
    expect(out.final.domains).toEqual([]);
  });

  it.each([
    [['replay'], 'ivory: replay: needs a file: a JSON request list or a QEMU trace log'],
    [['replay', 'x.json', '--profile', 'xen'], 'ivory: --profile: expected one of spec, qemu, cloud-hypervisor, crosvm, got "xen"'],
  ])('a bad argument %j gets one line', async (argv, line) => {
    const io = capture();
    expect(await main(argv, GUEST_SOURCE)).toBe(2);
    expect(io.err).toEqual([line]);
  });

  it('a bad request names its field', async () => {
    const bad = file('bad.json', JSON.stringify({ device: { profile: 'spec', endpoints: [0] }, requests: [{ type: 'map', domain: 1, virt_start: 12, virt_end: '0xfff', phys_start: '0x0', flags: [] }] }));
    const io = capture();
    expect(await main(['replay', bad], GUEST_SOURCE)).toBe(2);
    expect(io.err).toHaveLength(1);
    expect(io.err[0]).toMatch(/^ivory: .*bad\.json: requests\[0\]\.virt_start: /);
  });
});
