// The modern virtio-pci transport: capability walk, MSI-X vector assignment,
// and the refusals a modern-only, MSI-X-only driver makes.
import { describe, expect, it } from 'vitest';
import { DEVICE_ID, F, STATUS, bit } from '../../abi/virtio.ts';
import { bootPci } from './support/stack.ts';

const rng = { deviceId: DEVICE_ID.ENTROPY, features: bit(F.VERSION_1), queues: [8], serve: () => 0 };

describe('virtio-pci', () => {
  it('binds a modern function, maps config to MSI-X entry 0 and the queue to entry 1', () => {
    const { stack, model, m, vdev } = bootPci(rng, { msixEntries: 4 });
    expect(stack.rng()).toHaveLength(1);
    expect(vdev()!.id).toBe(DEVICE_ID.ENTROPY);
    expect(model.status & STATUS.DRIVER_OK).toBe(STATUS.DRIVER_OK);
    expect(model.queues[0]!.vector).toBe(1);
    expect(model.queues[0]!.ready).toBe(1);
    model.signal('config');
    m.k.irqs.poll();
    expect(m.k.irqs.counts()).toMatchObject({ 'virtio0-0': 1, 'virtio0-1': 0 });
    expect(vdev()!.report.configChanges).toBe(1);
  });

  it('ignores a capability that names a BAR the function does not have', () => {
    const { stack, m } = bootPci(rng, { msixEntries: 4, badCapFirst: true });
    expect(stack.rng()).toHaveLength(1);
    expect(m.dmesg()).toContain('0000:00:01.0: virtio capability type 1 at 0x4c outside BAR 7, ignored');
  });

  it('refuses a function without MSI-X', () => {
    const { m, vdev, model } = bootPci(rng, { msixEntries: 0 });
    expect(vdev()).toBeUndefined();
    expect(model.statusWrites).toEqual([]);
    expect(m.k.pci.failures.map((f) => f.error)).toEqual(['0000:00:01.0: no MSI-X capability (INTx is not supported)']);
  });

  it('fails the device when MSI-X cannot give config and queues their own vectors', () => {
    const { vdev, model, m } = bootPci(rng, { msixEntries: 1 });
    expect(vdev()!.report.errors).toEqual(['virtio0: needs 2 MSI-X vectors, got 1']);
    expect(model.status & STATUS.FAILED).toBe(STATUS.FAILED);
    expect(m.k.pages.available).toBe(m.k.pages.totalPages); // no ring left behind
  });

  it('frees its rings and vectors when the function is removed', () => {
    const { m, pdev, model, remove } = bootPci({ ...rng, features: bit(F.VERSION_1) | bit(F.ACCESS_PLATFORM) }, { msixEntries: 4 });
    remove();
    expect(model.statusWrites.slice(-2)).toEqual([0, STATUS.ACKNOWLEDGE]);
    expect(m.iommu.live.size).toBe(0);
    expect(pdev.msix).toEqual([]);
    expect(m.k.irqs.counts()).toEqual({ timer: 0 });
  });
});
