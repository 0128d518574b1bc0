import { describe, expect, it } from 'vitest';
import { blkAndRng, run } from './support.ts';

const ACCESS_PLATFORM = '0x200000000';

describe('feature negotiation end to end', () => {
  it('a device without VERSION_1 is refused by the modern driver and marked FAILED', async () => {
    const { report } = await run(blkAndRng({ version_1: false }));
    const blk = report.guest.virtio[0]!;
    expect(blk.driver).toBeNull();
    expect(blk.status.at(-1)!.names).toContain('FAILED');
    expect(blk.status.some((s) => s.names.includes('FEATURES_OK'))).toBe(false);
    expect(report.guest.errors.join('\n')).toMatch(/does not offer VIRTIO_F_VERSION_1/);
    expect(report.exitStatus).toBe(1); // the disk workload had no disk
  });

  it('a device requiring ACCESS_PLATFORM refuses FEATURES_OK from a driver that does not accept it; the driver sets FAILED', async () => {
    const { report } = await run(blkAndRng({ iommu_platform: true }, {}, { cmdline: `virtio.drop_features=${ACCESS_PLATFORM}` }));
    const blk = report.guest.virtio[0]!;
    expect(blk.acceptedNames).not.toContain('ACCESS_PLATFORM');
    const i = blk.status.findIndex((s) => s.op === 'write' && s.names.includes('FEATURES_OK'));
    expect(i).toBeGreaterThan(0);
    expect(blk.status[i + 1]).toMatchObject({ op: 'read' });
    expect(blk.status[i + 1]!.names).not.toContain('FEATURES_OK');
    expect(blk.status.at(-1)!.names).toContain('FAILED');
    expect(report.host.devices[0]!.refusedFeatures.map((r) => r.reason).join()).toMatch(/ACCESS_PLATFORM/);
    // The rng device does not require it and still works.
    expect(report.guest.virtio[1]!.driver).toBe('virtio_rng');
  });

  it('the reverse: a driver that knows ACCESS_PLATFORM and a device that does not offer it negotiate without it', async () => {
    const { report } = await run(blkAndRng());
    const blk = report.guest.virtio[0]!;
    expect(blk.offeredNames).not.toContain('ACCESS_PLATFORM');
    expect(blk.acceptedNames).not.toContain('ACCESS_PLATFORM');
    expect(blk.usesDmaApi).toBe(false);
    expect(report.exitStatus).toBe(0);
  });

  it('both offered and accepted: the device takes FEATURES_OK and the DMA API is used', async () => {
    const { report } = await run(blkAndRng({ iommu_platform: true }));
    const blk = report.guest.virtio[0]!;
    expect(blk.acceptedNames).toContain('ACCESS_PLATFORM');
    expect(blk.usesDmaApi).toBe(true);
    expect(report.host.devices[0]!.refusedFeatures).toEqual([]);
    expect(report.exitStatus).toBe(0);
  });

  it('a driver that does not know EVENT_IDX or INDIRECT_DESC still moves every byte', async () => {
    const { report } = await run(blkAndRng({}, {}, { cmdline: 'virtio.drop_features=0x30000000' }));
    expect(report.guest.virtio[0]!.acceptedNames).not.toContain('EVENT_IDX');
    expect(report.guest.virtio[0]!.acceptedNames).not.toContain('INDIRECT_DESC');
    expect(report.guest.workload!.disk!.verified).toBe(true);
  });

  it('a transitional virtio-pci function (disable_legacy: false) is found by its subsystem ID and driven through its modern interface', async () => {
    const { report } = await run(blkAndRng({ disable_legacy: false }));
    expect(report.guest.busDevices[0]).toMatchObject({ id: '1af4:1001', driver: 'virtio-pci' });
    expect(report.guest.virtio[0]).toMatchObject({ deviceType: 'virtio-blk', driver: 'virtio_blk' });
    expect(report.guest.workload!.disk!.verified).toBe(true);
  });
});
