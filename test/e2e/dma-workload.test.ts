// The IOVA benchmark's streams replayed by the guest through the DMA API and
// the virtio-iommu: every allocation is a MAP the device sees, every free an
// UNMAP, under each strategy and both invalidation modes.
import { describe, expect, it } from 'vitest';
import { parseScenario } from '../../cli/scenario.ts';
import { run } from './support.ts';

/** What the virtio-blk driver maps for itself and keeps: its ring (the x86 MSI window is not translated). */
const ringMaps = 1;

const scenario = (cmdline: string, dma: object) => ({
  machine: { preset: 'q35' },
  iommu: {},
  cmdline,
  devices: [{ type: 'virtio-blk', capacity: '1M', iommu_platform: true }],
  workload: { seed: 3, dma },
});

describe('workload.dma', () => {
  for (const iova of ['linux', 'linux-rcache']) {
    it(`replays a ring stream as maps and unmaps the device carries out (iova=${iova}, strict)`, async () => {
      const { report } = await run(scenario(`iova=${iova} iommu.strict=1`, { stream: 'ring-48', ops: 300 }));
      const d = report.guest.workload!.dma!;
      // 256 slots filled, then 150 free+alloc steps; everything unmapped at the end.
      expect(d).toMatchObject({ stream: 'ring-48', ops: 556, measuredOps: 300, maps: 406, unmaps: 406, failedMaps: 0 });
      expect(d.measuredVirtualNs).toBeGreaterThan(0);
      // Strict: the device carried out every map and unmap iommu-dma made: the stream's, plus the ring's own.
      const req = report.host.iommu!.requests;
      const dom = report.guest.dma.iommu!.domains[0]!;
      expect([req['MAP'], req['UNMAP']]).toEqual([{ OK: dom.maps }, { OK: dom.unmaps }]);
      expect(dom.maps - d.maps).toBe(ringMaps);
      expect(dom.unmaps).toBe(d.unmaps);
    });
  }

  it('keeps a 32-bit stream below 4 GiB', async () => {
    const { report } = await run(scenario('', { stream: 'ring-32', ops: 100 }));
    const dom = report.guest.dma.iommu!.domains[0]!;
    expect(report.guest.workload!.dma!.failedMaps).toBe(0);
    expect(BigInt(dom.highestIova!)).toBeLessThan(2n ** 32n);
  });

  it('maps each buffer at its guest-physical address with iova=identity', async () => {
    const { report } = await run(scenario('iova=identity iommu.strict=1', { stream: 'ring-48', ops: 100 }));
    const dom = report.guest.dma.iommu!.domains[0]!;
    // 256 slots, 50 re-allocations and the ring: every one an identity hit, so IOVAs sit in the 256 MiB of RAM.
    expect(dom.iova).toMatchObject({ allocs: 307, rcacheHits: 307, rcacheMisses: 0, failures: 0 });
    expect(BigInt(dom.highestIova!)).toBeLessThan(256n * 2n ** 20n);
  });

  it('names a stream it does not know', () => {
    expect(() => parseScenario(scenario('', { stream: 'nonesuch' }))).toThrow('workload.dma.stream: unknown workload "nonesuch"');
    expect(() => parseScenario(scenario('', { stream: 'ring-48', device: 'virtio-net' }))).toThrow('workload.dma.device');
  });
});

