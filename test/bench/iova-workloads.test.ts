// The IOVA benchmark's workloads: deterministic from their seed, and shaped
// as docs/iova-bench.md says.
import { describe, expect, it } from 'vitest';
import {
  AMD_HT_WINDOW,
  OP_ALLOC,
  OP_FREE,
  PHYS_BASE_PFN,
  SW_MSI_WINDOW,
  WORKLOADS,
  X86_MSI_WINDOW,
  mapBench,
  resolveWorkload,
  type OpStream,
} from '../../bench/iova/workloads.ts';

const byName = (n: string) => resolveWorkload(n);

/** Replays a stream as if every allocation succeeded: checks slot discipline, returns live counts and sizes seen. */
function walk(s: OpStream) {
  const held = new Int32Array(s.slots).fill(-1); // pages held per slot
  let live = 0;
  const liveAt = new Int32Array(s.length);
  const sizes = new Set<number>();
  let maxLive = 0;
  for (let i = 0; i < s.length; i++) {
    const sl = s.slot[i]!;
    if (s.kind[i] === OP_ALLOC) {
      if (held[sl] !== -1) throw new Error(`op ${i}: alloc into a full slot ${sl}`);
      held[sl] = s.pages[i]!;
      sizes.add(s.pages[i]!);
      live++;
    } else {
      if (s.kind[i] !== OP_FREE) throw new Error(`op ${i}: kind ${s.kind[i]}`);
      if (held[sl] !== s.pages[i]) throw new Error(`op ${i}: free of slot ${sl} (${held[sl]} pages) with ${s.pages[i]}`);
      held[sl] = -1;
      live--;
    }
    maxLive = Math.max(maxLive, live);
    liveAt[i] = live;
  }
  return { liveAt: [...liveAt], sizes, maxLive, endLive: live };
}

describe('workload streams', () => {
  it('has every workload the issue names, each generating a consistent stream', () => {
    expect(WORKLOADS.map((w) => w.name)).toEqual([
      'ring-32',
      'ring-48',
      'mixed-32',
      'mixed-48',
      'fill-32',
      'fill-48',
      'reserved-32',
      'reserved-48',
      'nic',
      'storage-sg',
      'long-short',
      'dma32-full',
      'near-full',
      'holes',
      'map-bench',
    ]);
    for (const w of WORKLOADS) {
      const small = w.name === 'long-short' ? resolveWorkload('long-short:live=1000') : w;
      const s = small.generate(7, 2000);
      expect(s.length - s.measureFrom, w.name).toBeGreaterThanOrEqual(2000);
      expect(s.kind.length).toBe(s.length);
      walk(s);
      let bad = 0;
      for (let i = 0; i < s.length; i++) {
        if (s.limit[i] !== w.devices[s.dev[i]!]!.limitPfn || s.cpu[i]! >= w.cpus) bad++;
        if (s.phys[i]! % 2 ** (32 - Math.clz32(s.pages[i]! - 1)) !== 0) bad++;
      }
      expect(bad, w.name).toBe(0);
      expect(w.startPfn).toBeGreaterThanOrEqual(1);
    }
  });

  it('is deterministic from its seed', () => {
    for (const name of ['mixed-48', 'storage-sg', 'near-full', 'holes', 'dma32-full']) {
      const w = byName(name);
      const a = w.generate(42, 3000);
      const b = w.generate(42, 3000);
      const c = w.generate(43, 3000);
      for (const k of ['kind', 'slot', 'pages', 'cpu', 'dev', 'limit', 'phys'] as const) expect(Buffer.from(a[k].buffer).equals(Buffer.from(b[k].buffer)), `${name}.${k}`).toBe(true);
      expect(Buffer.from(a.pages.buffer).equals(Buffer.from(c.pages.buffer)) && Buffer.from(a.slot.buffer).equals(Buffer.from(c.slot.buffer)), `${name}: seed changes nothing`).toBe(false);
    }
  });

  it('ring keeps 256 live single pages, freeing the oldest; 32- and 48-bit limits are inclusive pfns', () => {
    for (const [name, limit] of [
      ['ring-32', 0xfffff],
      ['ring-48', 2 ** 36 - 1],
    ] as const) {
      const w = byName(name);
      const s = w.generate(1, 1000);
      expect(s.measureFrom).toBe(256);
      expect(w.limitPfn).toBe(limit);
      const { liveAt, sizes } = walk(s);
      expect(liveAt[255]).toBe(256);
      expect(Math.min(...liveAt.slice(256))).toBe(255);
      expect([...sizes]).toEqual([1]);
      // FIFO: the measured phase frees slot 0, 1, 2 ... in turn.
      const frees = [...s.slot.subarray(s.measureFrom)].filter((_, i) => s.kind[s.measureFrom + i] === OP_FREE);
      expect(frees.slice(0, 300)).toEqual(Array.from({ length: 300 }, (_, i) => i % 256));
      expect(w.reserved).toEqual([]);
    }
  });

  it('mixed keeps 4096 live ranges of 1, 2, 4 ... 64 pages, freed in random order', () => {
    const s = byName('mixed-32').generate(3, 20_000);
    const { liveAt, sizes } = walk(s);
    expect(liveAt[s.measureFrom - 1]).toBe(4096);
    expect([...sizes].sort((a, b) => a - b)).toEqual([1, 2, 4, 8, 16, 32, 64]);
    const frees = [...s.slot.subarray(s.measureFrom)].filter((_, i) => s.kind[s.measureFrom + i] === OP_FREE);
    expect(frees.slice(0, 50)).not.toEqual([...frees.slice(0, 50)].sort((a, b) => a - b));
    expect(new Set(frees).size).toBeGreaterThan(3000);
  });

  it('fill allocates ops/2 single pages then frees them all; by default 2^20', () => {
    const w = byName('fill-32');
    expect(w.defaultOps).toBe(2 ** 21);
    const s = w.generate(1, 1000);
    expect(s.measureFrom).toBe(0);
    expect(s.builtUpAt).toBe(500);
    expect([...s.kind.subarray(0, 500)].every((k) => k === OP_ALLOC)).toBe(true);
    expect([...s.kind.subarray(500)].every((k) => k === OP_FREE)).toBe(true);
    expect(walk(s).endLive).toBe(0);
  });

  it('reserved and holes reserve the windows of reference §2.3; holes keeps IOVA 0 out', () => {
    for (const name of ['reserved-32', 'reserved-48']) expect(byName(name).reserved).toEqual([X86_MSI_WINDOW, SW_MSI_WINDOW]);
    expect(X86_MSI_WINDOW).toEqual({ lo: 0xfee00000 / 4096, hi: Math.floor(0xfeefffff / 4096) });
    expect(SW_MSI_WINDOW).toEqual({ lo: 0x8000000 / 4096, hi: (0x8000000 + 0x100000) / 4096 - 1 });
    expect(AMD_HT_WINDOW).toEqual({ lo: 0xfd00000000 / 4096, hi: (0xffffffffff + 1) / 4096 - 1 });
    const h = byName('holes');
    expect(h.reserved).toEqual([SW_MSI_WINDOW, X86_MSI_WINDOW, AMD_HT_WINDOW]);
    expect(h.startPfn).toBe(1);
    expect(h.devices.map((d) => d.limitPfn)).toEqual([2 ** 28 - 1, 0xfffff]);
  });

  it('nic frees on another CPU than it allocates, one queue per CPU', () => {
    const w = resolveWorkload('nic:cpus=4');
    expect(w.name).toBe('nic');
    const s = w.generate(1, 10_000);
    const allocCpu = new Map<number, number>();
    let cross = 0;
    let frees = 0;
    for (let i = 0; i < s.length; i++) {
      if (s.kind[i] === OP_ALLOC) allocCpu.set(s.slot[i]!, s.cpu[i]!);
      else {
        frees++;
        if (allocCpu.get(s.slot[i]!) !== s.cpu[i]) cross++;
      }
    }
    expect(cross).toBe(frees);
    expect(walk(s).maxLive).toBe(4 * 256);
    expect(w.devices[0]!.pci32).toBe(true);
    const one = resolveWorkload('nic:cpus=1');
    expect(one.name).toBe('nic:cpus=1');
    expect(new Set(one.generate(1, 1000).cpu)).toEqual(new Set([0]));
  });

  it('storage-sg spans 4 KiB .. 4 MiB across the 128 KiB rcache threshold, 128 in flight', () => {
    const s = byName('storage-sg').generate(5, 20_000);
    const { sizes, liveAt } = walk(s);
    expect(Math.min(...sizes)).toBe(1);
    expect(Math.max(...sizes)).toBe(1024);
    expect([...sizes].some((x) => x > 32)).toBe(true);
    expect([...sizes].some((x) => x & (x - 1))).toBe(true);
    expect(liveAt[s.measureFrom - 1]).toBe(128);
  });

  it('long-short builds its live set first; dma32-full fills exactly the 32-bit space', () => {
    const ls = resolveWorkload('long-short:live=5000').generate(1, 100);
    expect(ls.measureFrom).toBe(5000);
    expect(byName('long-short').generate(1, 2).measureFrom).toBe(300_000);
    const w = byName('dma32-full');
    const s = w.generate(1, 1000);
    let pages32 = 0;
    for (let i = 0; i < s.measureFrom; i++) if (s.dev[i] === 0) pages32 += s.pages[i]!;
    expect(pages32).toBe(0xfffff); // pfns 1 .. 0xfffff
    expect(w.devices[1]!.pci32).toBe(true);
    expect(w.limitPfn).toBe(0xfffff);
  });

  it('near-full sweeps occupancy between 90% and 99% of a small domain', () => {
    const w = byName('near-full');
    const s = w.generate(2, 100_000);
    const cap = w.limitPfn;
    let used = 0;
    let lo = Infinity;
    let hi = 0;
    for (let i = 0; i < s.length; i++) {
      used += s.kind[i] === OP_ALLOC ? s.pages[i]! : -s.pages[i]!;
      if (i >= s.measureFrom) {
        lo = Math.min(lo, used);
        hi = Math.max(hi, used);
      }
    }
    expect(lo / cap).toBeGreaterThan(0.89);
    expect(hi / cap).toBeLessThan(0.995);
    expect(hi / cap).toBeGreaterThan(0.985);
  });

  it('map-bench exposes the dma_map_benchmark knobs', () => {
    expect(byName('map-bench').name).toBe('map-bench');
    const w = mapBench({ threads: 2, granule: 16, bits: 48, delay: 5 });
    expect(w.name).toBe('map-bench:threads=2:granule=16:bits=48:delay=5');
    expect(resolveWorkload(w.name).name).toBe(w.name);
    expect(w.devices[0]).toMatchObject({ dmaBits: 48, limitPfn: 2 ** 36 - 1, pci32: true });
    const s = w.generate(1, 1000);
    const { sizes, endLive } = walk(s);
    expect([...sizes]).toEqual([16]);
    expect(endLive).toBe(0);
    // Each unmap comes `delay` other ops after its map, on the same CPU.
    const mappedAt = new Map<number, number>();
    for (let i = 0; i < s.length; i++) {
      if (s.kind[i] === OP_ALLOC) mappedAt.set(s.slot[i]!, i);
      else if (i < 900) expect(i - mappedAt.get(s.slot[i]!)! - 1).toBe(5);
    }
    expect(new Set(s.cpu)).toEqual(new Set([0, 1]));
    expect(s.phys[0]).toBe(PHYS_BASE_PFN);
  });

  it.each([
    ['nope', /unknown workload "nope"/],
    ['map-bench:threads=0', /threads must be an integer in 1\.\.255/],
    ['map-bench:colour=3', /unknown parameter "colour"/],
    ['nic:cpus', /expected key=value/],
    ['ring-32:cpus=2', /unknown workload/],
  ])('rejects %s', (spec, msg) => {
    expect(() => resolveWorkload(spec)).toThrow(msg);
  });
});
