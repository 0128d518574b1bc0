// The virtio-iommu pairs benchmark runs real requests: every MAP and UNMAP,
// through the device model or the null device, must come back used with its
// 4-byte tail and, from the device model, status OK.
import { describe, expect, it } from 'vitest';
import { runPairs } from '../../bench/viommu.ts';

describe('bench viommu: MAP+UNMAP pairs', () => {
  it('runs whole batches through the virtio-iommu and through the null device', () => {
    for (const device of ['virtio-iommu', 'null'] as const) {
      const r = runPairs(100, 64, device);
      expect(r.pairs).toBe(128);
      expect(r.nsPerPair).toBeGreaterThan(0);
    }
  });

});
