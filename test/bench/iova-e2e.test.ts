// The end-to-end cell: one stream through the DMA API and the virtio-iommu,
// its requests counted by the device.
import { describe, expect, it } from 'vitest';
import { runE2eCell } from '../../bench/iova/e2e.ts';
import { parseIovaArgs } from '../../bench/iova/cli.ts';

describe('bench iova --e2e', () => {
  it('runs a stream through the whole stack and counts what the device did', async () => {
    const row = await runE2eCell({ strategy: 'linux-rcache', workload: 'ring-48', ops: 50, seed: 1, strict: false });
    // 256 slots filled, 25 freed and re-mapped, and the ring's own mapping; UNMAPs go out as the guest unmaps.
    expect(row).toMatchObject({ strategy: 'linux-rcache', workload: 'ring-48', invalidation: 'lazy', ops: 50, failed_maps: 0, map_requests: 282, unmap_requests: 25 });
    // A map waits for its MAP (1.5 us notify + 1 us request); a lazy unmap only queues its UNMAP,
    // which the next map's sync waits for (1 us): 3.5 us per free+alloc pair.
    expect(row.virtual_ns_per_op).toBe(1750);
  });

  it('is asked for with --e2e', () => {
    expect(parseIovaArgs(['--e2e']).e2e).toBe(true);
    expect(parseIovaArgs([]).e2e).toBe(false);
  });
});
