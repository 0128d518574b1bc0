// Device initialisation and feature negotiation (virtio 1.4 §3.1.1) through the
// virtio-mmio transport, against an in-test device model.
import { describe, expect, it } from 'vitest';
import { VIRTIO_BLK_F } from '../../abi/virtio-blk.ts';
import { DEVICE_ID, F, STATUS, bit } from '../../abi/virtio.ts';
import { blkServe } from './support/virtio-model.ts';
import { blkConfig, bootMmio } from './support/stack.ts';

const { ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK, FAILED } = STATUS;
const blk = (features: bigint, config = blkConfig(2048n)) => ({ deviceId: DEVICE_ID.BLOCK, features, queues: [64], serve: blkServe(new Uint8Array(1 << 20)), config });

describe('virtio device initialisation', () => {
  it('runs reset, ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK in order and reads each back', () => {
    const { model, vdev, stack } = bootMmio(blk(bit(F.VERSION_1)));
    expect(model.statusWrites).toEqual([0, ACKNOWLEDGE, ACKNOWLEDGE | DRIVER, ACKNOWLEDGE | DRIVER | FEATURES_OK, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK]);
    const r = vdev()!.report;
    expect(r.status.filter((s) => s.op === 'write').map((s) => s.value)).toEqual(model.statusWrites);
    // Every write after the reset follows a read, FEATURES_OK is re-read before probing, and
    // DRIVER_OK is added only if the driver's probe did not set it already (Linux's virtio_dev_probe).
    expect(r.status.map((s) => `${s.op[0]}${s.value}`)).toEqual(['w0', 'r0', 'r0', 'w1', 'r1', 'w3', 'r3', 'w11', 'r11', 'r11', 'r11', 'w15']);
    expect(stack.blk()).toHaveLength(1);
    expect(r.errors).toEqual([]);
  });

  it('accepts exactly what the driver knows and the device offers, plus the transport bits Linux keeps', () => {
    const offered =
      bit(F.VERSION_1) | bit(F.ACCESS_PLATFORM) | bit(F.EVENT_IDX) | bit(F.INDIRECT_DESC) | bit(F.RING_PACKED) | bit(F.IN_ORDER) | bit(F.NOTIFICATION_DATA) | bit(F.ANY_LAYOUT) |
      bit(VIRTIO_BLK_F.FLUSH) | bit(VIRTIO_BLK_F.RO) | bit(VIRTIO_BLK_F.DISCARD) | bit(VIRTIO_BLK_F.MQ) | bit(50);
    const { model, vdev } = bootMmio(blk(offered));
    const accepted = bit(F.VERSION_1) | bit(F.ACCESS_PLATFORM) | bit(F.EVENT_IDX) | bit(F.INDIRECT_DESC) | bit(VIRTIO_BLK_F.FLUSH) | bit(VIRTIO_BLK_F.RO);
    expect(model.driverFeatures).toBe(accepted);
    expect(vdev()!.features).toBe(accepted);
    expect(vdev()!.report).toMatchObject({ offered, accepted, deviceId: DEVICE_ID.BLOCK, transport: 'virtio-mmio' });
    expect(model.status).toBe(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
  });

  it('fails a device without VIRTIO_F_VERSION_1 before writing any features', () => {
    const { model, vdev, stack, m } = bootMmio(blk(bit(VIRTIO_BLK_F.FLUSH)));
    expect(model.statusWrites).toEqual([0, ACKNOWLEDGE, ACKNOWLEDGE | DRIVER, ACKNOWLEDGE | DRIVER | FAILED]);
    expect(model.driverFeatures).toBe(0n);
    expect(vdev()!.report.errors).toEqual(['virtio0: device does not offer VIRTIO_F_VERSION_1']);
    expect(stack.blk()).toEqual([]);
    expect(stack.bus.failures).toEqual([{ device: 'virtio0', driver: 'virtio_blk', error: 'virtio0: device does not offer VIRTIO_F_VERSION_1' }]);
    expect(m.k.irqs.counts()).toEqual({ timer: 0 }); // no queue, no interrupt line taken
  });

  it('fails the device when FEATURES_OK does not stick', () => {
    const { model, vdev, m, stack } = bootMmio(blk(bit(F.VERSION_1) | bit(VIRTIO_BLK_F.FLUSH)), (md) => (md.refuseFeatures = true));
    expect(model.statusWrites.at(-1)).toBe(ACKNOWLEDGE | DRIVER | FAILED);
    expect(model.statusWrites).not.toContain(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    expect(m.dmesg()).toContain('virtio: device refuses features: 3');
    expect(vdev()!.report.errors).toEqual(['virtio: device refuses features: 3']);
    expect(stack.blk()).toEqual([]);
  });

  it('re-reads config when the generation changes in the middle of a multi-field read', () => {
    let changed = false;
    let reads = 0;
    const { vdev, stack } = bootMmio(blk(bit(F.VERSION_1), blkConfig(0xffff_ffffn)), (md) => {
      md.onConfigRead = (off) => {
        reads++;
        // Between the high and the low word of capacity: a torn read would give 0.
        if (off === 4 && !changed) {
          changed = true;
          md.setConfig(0, [0, 0, 0, 0, 1, 0, 0, 0]);
        }
      };
    });
    expect(vdev()!.report.errors).toEqual([]);
    expect(stack.blk()[0]!.config.capacity).toBe(0x1_0000_0000n);
    expect(reads).toBe(4); // two words, twice
  });

  it('gives up on a config generation that never settles', () => {
    const { vdev, stack } = bootMmio(blk(bit(F.VERSION_1)), (md) => (md.onConfigRead = () => md.setConfig(59, [0])));
    expect(vdev()!.report.errors).toEqual(['virtio0: config generation never settles']);
    expect(stack.blk()).toEqual([]);
  });

  it('resets the device and returns to ACKNOWLEDGE when the transport device goes away', () => {
    const { model, m, remove } = bootMmio(blk(bit(F.VERSION_1) | bit(F.ACCESS_PLATFORM)));
    expect(m.iommu.live.size).toBe(1); // the ring
    remove();
    expect(model.statusWrites.slice(-2)).toEqual([0, ACKNOWLEDGE]);
    expect(m.iommu.live.size).toBe(0);
    expect(() => m.k.irqs.request(0x20 + 5, 'again', () => {})).not.toThrow(); // the line was freed
  });
});

describe('virtio-mmio probing', () => {
  const rng = { deviceId: DEVICE_ID.ENTROPY, features: bit(F.VERSION_1), queues: [8], serve: () => 0 };

  it('refuses a block with the wrong magic value', () => {
    const { m, vdev } = bootMmio(rng, (_md, front) => (front.magic = 0x12345678));
    expect(vdev()).toBeUndefined();
    expect(m.k.platform.failures[0]!.error).toBe('a000000.virtio_mmio: Wrong magic value 0x12345678!');
  });

  it('refuses a legacy (version 1) device with a log line', () => {
    const { m, vdev } = bootMmio(rng, (_md, front) => (front.version = 1));
    expect(vdev()).toBeUndefined();
    expect(m.dmesg().some((l) => l.includes('legacy virtio-mmio (version 1) is not supported'))).toBe(true);
  });

  it('ignores a slot whose device ID is 0', () => {
    const { model, vdev } = bootMmio({ ...rng, deviceId: 0 });
    expect(vdev()).toBeUndefined();
    expect(model.statusWrites).toEqual([]);
  });
});

describe('config-change notifications', () => {
  it('reach the device through the virtio-mmio interrupt, and a device needing reset is reported', () => {
    const { model, vdev, m, front } = bootMmio(blk(bit(F.VERSION_1)));
    model.signal('config');
    expect(front.interruptStatus).toBe(2);
    m.k.irqs.poll();
    expect(front.interruptStatus).toBe(0); // acknowledged
    expect(vdev()!.report.configChanges).toBe(1);
    expect(vdev()!.report.errors).toEqual([]);
    model.status |= STATUS.DEVICE_NEEDS_RESET;
    model.signal('config');
    m.k.irqs.poll();
    expect(vdev()!.report.errors).toEqual(['virtio0: device needs reset']);
  });
});
