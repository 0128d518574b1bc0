// The virtio-iommu pairs benchmark runs real requests: every MAP and UNMAP,
// through the device model or the null device, must come back used with its
// 4-byte tail and, from the device model, status OK.
import { describe, expect, it } from 'vitest';
import { runDisk, runDiskSweep, runPairs } from '../../bench/viommu.ts';

describe('bench viommu: MAP+UNMAP pairs', () => {
  it('runs whole batches through the virtio-iommu and through the null device', () => {
    for (const device of ['virtio-iommu', 'null'] as const) {
      const r = runPairs(100, 64, device, 3);
      expect([r.pairs, r.runs]).toEqual([128, 3]);
      expect(r.nsPerPair).toBeGreaterThan(0);
      expect(r.bestNsPerPair).toBeLessThanOrEqual(r.nsPerPair);
      expect(r.bestPairsPerSec).toBeGreaterThanOrEqual(r.pairsPerSec);
    }
  });
});

describe('bench viommu: the disk by request size', () => {
  it('gives the modelled figures of the full disk run, as shares of no-IOMMU', async () => {
    const bytes = 2 * 2 ** 20;
    const [row, ...rest] = await runDiskSweep(bytes, [64 * 1024]);
    expect(rest).toEqual([]);
    const [none, strict, lazy] = await runDisk(bytes, 64 * 1024);
    expect(row!.requestBytes).toBe(64 * 1024);
    expect(row!.noIommuMBps).toBe(none!.virtualMBps);
    expect(row!.strictShare).toBe(strict!.virtualMBps / none!.virtualMBps);
    expect(row!.lazyShare).toBe(lazy!.virtualMBps / none!.virtualMBps);
    // Lazy saves each UNMAP's round trip: at 64 KiB that shows.
    expect(row!.lazyShare).toBeGreaterThan(row!.strictShare);
  });
});
