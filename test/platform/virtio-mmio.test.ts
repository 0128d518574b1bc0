import { describe, expect, it } from 'vitest';
import { VECTOR } from '../../abi/boot.ts';
import { MMIO, VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_MAGIC } from '../../abi/virtio-mmio.ts';
import { F, STATUS, bit } from '../../abi/virtio.ts';
import { VirtioRng } from '../../platform/devices/rng.ts';
import { createVirtioMmio } from '../../platform/virtio/attach.ts';
import { VIRTIO_MMIO_VENDOR_ID } from '../../platform/virtio/mmio.ts';
import { Host, MMIO_LINE, MmioDriver, SinkDevice, TestRing, acceptAll, bringUp } from './virtio-harness.ts';

function setup() {
  const h = new Host();
  const sink = new SinkDevice(h.ctx(), { queueSize: 64 });
  sink.config.set([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
  return { h, sink, drv: new MmioDriver(h, sink) };
}

describe('virtio-mmio registers', () => {
  it('identifies itself: magic, version 2, device and vendor IDs', () => {
    const { drv } = setup();
    expect([drv.read(MMIO.magic), drv.read(MMIO.version), drv.read(MMIO.device_id), drv.read(MMIO.vendor_id)]).toEqual([VIRTIO_MMIO_MAGIC, 2, 0x1f, VIRTIO_MMIO_VENDOR_ID]);
  });

  it('shows feature words through DeviceFeaturesSel; words past 1 read 0', () => {
    const { sink, drv } = setup();
    expect(drv.deviceFeatures()).toBe(sink.offeredFeatures);
    drv.write(MMIO.device_features_sel, 2);
    expect(drv.read(MMIO.device_features)).toBe(0);
    drv.write(MMIO.device_features_sel, 1);
    expect(drv.read(MMIO.device_features)).toBe(1); // VERSION_1 is bit 32
  });

  it('reports QueueNumMax per queue and 0 for a queue that does not exist', () => {
    const { drv } = setup();
    drv.write(MMIO.queue_sel, 1);
    expect(drv.read(MMIO.queue_num_max)).toBe(64);
    drv.write(MMIO.queue_sel, 2);
    expect(drv.read(MMIO.queue_num_max)).toBe(0);
    drv.write(MMIO.queue_ready, 1); // no queue: nothing happens
    expect(drv.read(MMIO.queue_ready)).toBe(0);
  });

  it('programs a queue, then ignores size and address writes while QueueReady is 1', () => {
    const { h, sink, drv } = setup();
    drv.negotiate(acceptAll(sink));
    const ring = new TestRing(h.mem, 16);
    drv.setupQueue(0, ring);
    const q = sink.queues[0]!;
    expect([q.size, q.addr.desc, q.addr.driver, q.addr.device, q.ready]).toEqual([16, ring.desc, ring.avail, ring.used, true]);
    drv.write(MMIO.queue_num, 8);
    drv.write(MMIO.queue_desc_low, 0x9000);
    drv.write(MMIO.queue_device_high, 1);
    expect([q.size, q.addr.desc, q.addr.device]).toEqual([16, ring.desc, ring.used]);
    drv.write(MMIO.queue_ready, 0);
    expect(drv.read(MMIO.queue_ready)).toBe(0);
    drv.write(MMIO.queue_desc_high, 0x12);
    expect(q.addr.desc).toBe(0x12 * 2 ** 32 + ring.desc);
  });

  it('ignores control register accesses that are not 32 bits wide', () => {
    const { sink, drv } = setup();
    expect(drv.t.handler.read(MMIO.magic, 2)).toBe(0);
    expect(drv.t.handler.read(MMIO.magic, 1)).toBe(0);
    drv.t.handler.write(MMIO.status, 1, STATUS.ACKNOWLEDGE);
    drv.t.handler.write(MMIO.status, 2, STATUS.ACKNOWLEDGE);
    expect(sink.status).toBe(0);
    drv.t.handler.write(MMIO.queue_sel, 2, 1);
    drv.write(MMIO.queue_num, 8);
    expect(sink.queues.map((q) => q.size)).toEqual([8, 64]);
  });

  it('reads and writes nothing at write-only or reserved offsets', () => {
    const { drv } = setup();
    drv.write(MMIO.queue_sel, 0);
    drv.write(MMIO.queue_num, 32);
    expect([drv.read(MMIO.queue_num), drv.read(MMIO.queue_notify), drv.read(MMIO.interrupt_ack), drv.read(0x0c8)]).toEqual([0, 0, 0, 0]);
    expect([drv.read(MMIO.shm_len_low), drv.read(MMIO.shm_base_high)]).toEqual([0xffff_ffff, 0xffff_ffff]);
  });

  it('serves device config at 0x100 with 8, 16 and 32-bit reads, and reads 0 past its end', () => {
    const { drv } = setup();
    const rd = (off: number, size: 1 | 2 | 4) => drv.t.handler.read(VIRTIO_MMIO_CONFIG + off, size);
    expect([rd(0, 1), rd(1, 1), rd(2, 2), rd(4, 4), rd(8, 4), rd(7, 2)]).toEqual([0x11, 0x22, 0x4433, 0x88776655, 0, 0]);
  });

  it('reads ConfigGeneration and the status the device holds', () => {
    const { drv } = setup();
    expect(drv.read(MMIO.config_generation)).toBe(0);
    drv.write(MMIO.status, STATUS.ACKNOWLEDGE);
    expect(drv.read(MMIO.status)).toBe(STATUS.ACKNOWLEDGE);
  });

  it('raises the line when an interrupt bit goes up, keeps bits until acknowledged, and clears them on reset', () => {
    const h = new Host();
    const sink = new SinkDevice(h.ctx());
    // Without EVENT_IDX every completion signals.
    const { drv, ring } = bringUp(h, sink, { features: acceptAll(sink, F.EVENT_IDX) });
    const line = VECTOR.LINE_BASE + MMIO_LINE;
    ring.setDesc(0, { addr: h.alloc(8), len: 8 });
    ring.add(0);
    ring.add(0);
    drv.kick();
    h.run();
    // Two signals, one VRING bit: the line went up once.
    expect(sink.report().interrupts.used).toBe(2);
    expect(drv.read(MMIO.interrupt_status)).toBe(VIRTIO_MMIO_INT_VRING);
    expect(h.delivered).toEqual([line]);
    ring.add(ring.size); // a driver error: the config bit goes up, a new edge
    drv.kick();
    h.run();
    expect(drv.read(MMIO.interrupt_status)).toBe(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
    expect(h.delivered).toEqual([line, line]);
    drv.write(MMIO.interrupt_ack, VIRTIO_MMIO_INT_VRING);
    expect(drv.read(MMIO.interrupt_status)).toBe(VIRTIO_MMIO_INT_CONFIG);
    drv.write(MMIO.status, 0);
    expect(drv.read(MMIO.interrupt_status)).toBe(0);
  });

  it('dispatches QueueNotify by queue index', () => {
    const h = new Host();
    const sink = new SinkDevice(h.ctx());
    const { drv } = bringUp(h, sink);
    const ring1 = new TestRing(h.mem, 8, 0x3_0000);
    drv.setupQueue(1, ring1);
    ring1.setDesc(0, { addr: h.alloc(8), len: 8 });
    ring1.add(0);
    drv.kick(0);
    h.run();
    expect(ring1.usedIdx).toBe(0);
    drv.kick(1);
    drv.kick(7); // no such queue: ignored
    h.run();
    expect(ring1.usedIdx).toBe(1);
  });

  it('is mapped on the bus by createVirtioMmio and reached through it', () => {
    const h = new Host();
    const rng = new VirtioRng(h.ctx('virtio-rng.0'), { seed: 1 });
    createVirtioMmio(rng, h.bus, 0xfeb0_0000, h.irq, 16);
    expect(h.bus.read(0xfeb0_0000 + MMIO.magic, 4)).toBe(VIRTIO_MMIO_MAGIC);
    expect(h.bus.read(0xfeb0_0000 + MMIO.device_id, 4)).toBe(4);
    h.bus.write(0xfeb0_0000 + MMIO.driver_features_sel, 4, 1);
    h.bus.write(0xfeb0_0000 + MMIO.driver_features, 4, 1);
    expect(rng.driverFeatures).toBe(bit(F.VERSION_1));
  });
});
