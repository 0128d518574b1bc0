// `ivory replay`, device side: both input forms (JSON, QEMU trace log), their
// errors naming the field, and the statuses and final state a replay reports.
import { describe, expect, it } from 'vitest';
import { ReplayInputError, parseQemuTrace, parseReplayJson, replay } from '../../platform/iommu/replay.ts';

const EXAMPLE = {
  device: { profile: 'qemu', endpoints: [0, 8], aw_bits: 64, granule: '4k', probe_size: 512, reserved_regions: [{ start: '0xfee00000', end: '0xfeefffff', type: 'msi' }] },
  requests: [
    { type: 'attach', domain: 1, endpoint: 0, flags: [] },
    { type: 'map', domain: 1, virt_start: '0x0', virt_end: '0xfff', phys_start: '0xa1000', flags: ['read'] },
    { type: 'map', domain: 1, virt_start: '0xfffffffffffff000', virt_end: '0xffffffffffffffff', phys_start: '0xa2000', flags: ['read', 'write'] },
    { type: 'unmap', domain: 1, virt_start: '0x0', virt_end: '0xfff' },
    { type: 'probe', endpoint: 0 },
    { type: 'detach', domain: 1, endpoint: 8 },
  ],
};

const json = (o: unknown) => parseReplayJson(JSON.stringify(o));
const statuses = (r: ReturnType<typeof replay>) => r.results.map((x) => x.status);

describe('replay of JSON requests', () => {
  it('reports each request with its fields and status, and the final domains with 64-bit values in hex', () => {
    const r = replay(json(EXAMPLE));
    expect(r.profile).toBe('qemu');
    expect(statuses(r)).toEqual(['OK', 'OK', 'OK', 'OK', 'OK', 'NOENT']);
    expect(r.results[1]).toEqual({
      index: 1,
      type: 'map',
      fields: { domain: 1, virt_start: '0x0', virt_end: '0xfff', phys_start: '0xa1000', flags: ['read'] },
      status: 'OK',
      used_length: 4,
    });
    expect(r.results[4]).toMatchObject({ used_length: 516, properties: [{ type: 'msi', start: '0xfee00000', end: '0xfeefffff' }] });
    expect(r.final).toEqual({
      domains: [{ id: 1, bypass: false, endpoints: [0], mappings: [{ virt_start: '0xfffffffffffff000', virt_end: '0xffffffffffffffff', phys_start: '0xa2000', flags: ['read', 'write'] }] }],
    });
  });

  it('runs under another profile on request, as --profile does', () => {
    const input = json({ ...EXAMPLE, requests: [...EXAMPLE.requests, { type: 'map', domain: 9, virt_start: '0x0', virt_end: '0xfff', phys_start: '0x0' }] });
    expect(statuses(replay(input, { profile: 'spec' })).slice(-2)).toEqual(['INVAL', 'NOENT']);
    const ch = replay(input, { profile: 'cloud-hypervisor' }).results.at(-1)!;
    expect(ch).toMatchObject({ status: 'NOENT', used_length: 0 });
  });

  it('sends raw flag bits and reserved bytes, and reports NONE when the device wrote nothing', () => {
    const r = replay(json({ device: { profile: 'spec', endpoints: [8] }, requests: [{ type: 'map', domain: 1, virt_start: '0x0', virt_end: '0xfff', phys_start: '0x0', flags: 8 }, { type: 'attach', domain: 1, endpoint: 8, flags: [], reserved: 1 }] }));
    expect(statuses(r)).toEqual(['INVAL', 'INVAL']);
    expect(r.results[0]?.fields['flags']).toEqual(['0x8']);
    const noProbe = replay(json({ device: { profile: 'spec', endpoints: [8], features: { probe: false } }, requests: [{ type: 'probe', endpoint: 8 }] }));
    expect(noProbe.results[0]).toMatchObject({ status: 'NONE', used_length: 0 });
  });

  it('keeps order across more requests than the queue holds', () => {
    const requests = [{ type: 'attach', domain: 1, endpoint: 8 }];
    for (let i = 0; i < 300; i++) {
      const at = '0x' + (i * 0x1000).toString(16);
      const end = '0x' + (i * 0x1000 + 0xfff).toString(16);
      requests.push({ type: 'map', domain: 1, virt_start: at, virt_end: end, phys_start: at, flags: ['read'] } as never);
      if (i % 2) requests.push({ type: 'unmap', domain: 1, virt_start: at, virt_end: end } as never);
    }
    const r = replay(json({ device: { profile: 'spec', endpoints: [8] }, requests }));
    expect(r.results).toHaveLength(requests.length);
    expect(r.results.every((x, i) => x.index === i && x.status === 'OK')).toBe(true);
    expect(r.final.domains[0]?.mappings).toHaveLength(150);
  });
});

describe('JSON input errors name the field', () => {
  const bad = (o: unknown, message: string) => expect(() => json(o)).toThrow(message);

  it.each([
    [{ ...EXAMPLE, requests: [{ type: 'map', domain: 1, virt_start: 4096, virt_end: '0xfff', phys_start: '0x0' }] }, 'requests[0].virt_start: expected a hex string'],
    [{ ...EXAMPLE, requests: [{ type: 'unmap', domain: 1, virt_start: '0x0', virt_end: '0x1ffffffffffffffff' }] }, 'requests[0].virt_end: expected a hex string of at most 64 bits'],
    [{ ...EXAMPLE, requests: [{ type: 'flush' }] }, 'requests[0].type: expected one of attach, detach, map, unmap, probe'],
    [{ ...EXAMPLE, requests: [{ type: 'attach', domain: -1, endpoint: 0 }] }, 'requests[0].domain: expected an integer from 0 to 4294967295'],
    [{ ...EXAMPLE, requests: [{ type: 'map', domain: 1, virt_start: '0x0', virt_end: '0xfff', phys_start: '0x0', flags: ['exec'] }] }, 'requests[0].flags[0]: expected one of read, write, mmio'],
    [{ ...EXAMPLE, requests: [{ type: 'probe', endpoint: 0, extra: 1 }] }, 'requests[0].extra: unknown field'],
    [{ ...EXAMPLE, device: { ...EXAMPLE.device, profile: 'kvmtool' } }, 'device.profile: expected one of spec, qemu, cloud-hypervisor, crosvm'],
    [{ ...EXAMPLE, device: { ...EXAMPLE.device, aw_bits: 16 } }, 'device.aw_bits: expected an integer from 32 to 64'],
    [{ ...EXAMPLE, device: { ...EXAMPLE.device, reserved_regions: [{ start: '0x10', end: '0x0', type: 'msi' }] } }, 'device.reserved_regions[0].end: below start'],
    [{ ...EXAMPLE, device: { ...EXAMPLE.device, endpoints: [0, 8, 0] } }, 'device.endpoints[2]: endpoint 0 is listed twice'],
    [{ ...EXAMPLE, device: { ...EXAMPLE.device, domain_range: [5, 1] } }, 'device.domain_range[1]: below the start'],
    [{ ...EXAMPLE, device: { ...EXAMPLE.device, features: { ats: true } } }, 'device.features.ats: unknown field'],
    [{ ...EXAMPLE, requests: {} }, 'requests: expected an array'],
  ])('%#: %s', (input, message) => bad(input, message));

  it('says when the text is not JSON', () => {
    expect(() => parseReplayJson('{')).toThrow(ReplayInputError);
    expect(() => parseReplayJson('{')).toThrow(/^input: not JSON/);
  });
});

describe('replay of a QEMU trace log', () => {
  const LOG = [
    '1234@1700000000.000100:virtio_iommu_get_config page_size_mask=0xfffffffffffff000 input range start=0x0',
    '1234@1700000000.000200:virtio_iommu_attach domain=1 endpoint=8',
    'virtio_iommu_attach domain=1 endpoint=16',
    '1234@1700000000.000300:virtio_iommu_map domain=1 virt_start=0xfffff000 virt_end=0xffffffff phys_start=0x7a000 flags=3',
    'virtio_iommu_translate mr=virtio-iommu-0-8 rid=8 addr=0xfffff000 flag=1',
    '1234@1700000000.000400:virtio_iommu_unmap domain=1 virt_start=0xfffff000 virt_end=0xffffffff',
    '1234@1700000000.000401:virtio_iommu_unmap_done domain=1 virt_start=0xfffff000 virt_end=0xffffffff',
    'virtio_iommu_detach_endpoint_from_domain domain=1 endpoint=8',
    '1234@1700000000.000500:virtio_iommu_detach domain=-2 endpoint=8',
    '',
  ].join('\n');

  it('takes attach, detach, map and unmap lines with or without the PID@TIME: prefix, and creates the endpoints named', () => {
    const input = parseQemuTrace(LOG);
    expect(input.device).toEqual({ profile: 'qemu', endpoints: [8, 16], reservedRegions: [] });
    expect(input.requests.map((r) => r.type)).toEqual(['attach', 'attach', 'map', 'unmap', 'detach']);
    expect(input.lines).toEqual([2, 3, 4, 6, 9]);
    const r = replay(input);
    expect(statuses(r)).toEqual(['OK', 'OK', 'OK', 'OK', 'INVAL']);
    // %d printed 0xfffffffe as -2.
    expect(r.results[4]).toMatchObject({ fields: { domain: 0xffff_fffe, endpoint: 8 }, line: 9 });
    expect(r.results[2]?.fields).toEqual({ domain: 1, virt_start: '0xfffff000', virt_end: '0xffffffff', phys_start: '0x7a000', flags: ['read', 'write'] });
    expect(r.final.domains).toEqual([{ id: 1, bypass: false, endpoints: [8, 16], mappings: [] }]);
  });

  it('names the line of a malformed event', () => {
    expect(() => parseQemuTrace('ok\nvirtio_iommu_map domain=1 virt_start=0x0 virt_end=zz phys_start=0x0 flags=1')).toThrow('line 2: virtio_iommu_map: expected virt_end=<number>');
  });
});
