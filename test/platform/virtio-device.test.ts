import { describe, expect, it } from 'vitest';
import { MMIO, VIRTIO_MMIO_INT_VRING } from '../../abi/virtio-mmio.ts';
import { F, STATUS, bit, has } from '../../abi/virtio.ts';
import { VIRTIO_NOTIFY_LATENCY_NS } from '../../platform/virtio/device.ts';
import { Host, MmioDriver, SinkDevice, TestRing, acceptAll, bringUp } from './virtio-harness.ts';

const { ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK, DEVICE_NEEDS_RESET, FAILED } = STATUS;

function device(opts: ConstructorParameters<typeof SinkDevice>[1] = {}) {
  const h = new Host();
  const sink = new SinkDevice(h.ctx(), opts);
  return { h, sink, drv: new MmioDriver(h, sink) };
}

describe('feature negotiation', () => {
  it('offers VERSION_1 and the ring features by default, ACCESS_PLATFORM only with iommu_platform', () => {
    const plain = device().sink.offeredFeatures;
    expect([F.VERSION_1, F.INDIRECT_DESC, F.EVENT_IDX].every((b) => has(plain, b))).toBe(true);
    expect(has(plain, F.ACCESS_PLATFORM)).toBe(false);
    expect(has(device({ iommuPlatform: true }).sink.offeredFeatures, F.ACCESS_PLATFORM)).toBe(true);
    const bare = device({ version1: false, indirectDesc: false, eventIdx: false }).sink.offeredFeatures;
    expect([F.VERSION_1, F.INDIRECT_DESC, F.EVENT_IDX].some((b) => has(bare, b))).toBe(false);
  });

  it('latches FEATURES_OK for a subset of the offered features', () => {
    const { sink, drv } = device();
    expect(drv.negotiate(bit(F.VERSION_1) | bit(F.EVENT_IDX))).toBe(true);
    expect(sink.driverFeatures).toBe(bit(F.VERSION_1) | bit(F.EVENT_IDX));
  });

  it('refuses FEATURES_OK when the driver accepted a feature that was not offered', () => {
    const { sink, drv } = device({ eventIdx: false });
    expect(drv.negotiate(acceptAll(sink) | bit(F.EVENT_IDX))).toBe(false);
    expect(drv.status).toBe(ACKNOWLEDGE | DRIVER);
    expect(sink.report().refusedFeatures[0]!.reason).toMatch(/not offered: EVENT_IDX/);
  });

  it('refuses FEATURES_OK on an iommu_platform device when the driver does not accept ACCESS_PLATFORM', () => {
    const { sink, drv } = device({ iommuPlatform: true });
    expect(drv.negotiate(acceptAll(sink, F.ACCESS_PLATFORM))).toBe(false);
    expect(sink.report().refusedFeatures[0]!.reason).toMatch(/ACCESS_PLATFORM/);
  });

  it('latches FEATURES_OK on an iommu_platform device when the driver accepts ACCESS_PLATFORM', () => {
    const { sink, drv } = device({ iommuPlatform: true });
    expect(drv.negotiate(acceptAll(sink))).toBe(true);
    expect(has(sink.driverFeatures, F.ACCESS_PLATFORM)).toBe(true);
  });

  it('latches FEATURES_OK without ACCESS_PLATFORM when the device does not require it', () => {
    const { sink, drv } = device();
    expect(drv.negotiate(acceptAll(sink))).toBe(true);
  });

  it('refuses FEATURES_OK when a modern-only device sees VERSION_1 declined', () => {
    const { sink, drv } = device();
    expect(drv.negotiate(acceptAll(sink, F.VERSION_1))).toBe(false);
    expect(sink.report().refusedFeatures[0]!.reason).toMatch(/VERSION_1/);
  });

  it('ignores driver feature writes once FEATURES_OK is set, and writes to feature words past 1', () => {
    const { sink, drv } = device();
    drv.negotiate(bit(F.VERSION_1));
    drv.write(MMIO.driver_features_sel, 0);
    drv.write(MMIO.driver_features, 0xffff_ffff);
    expect(sink.driverFeatures).toBe(bit(F.VERSION_1));
    drv.write(MMIO.status, 0);
    drv.write(MMIO.driver_features_sel, 2);
    drv.write(MMIO.driver_features, 1);
    expect(sink.driverFeatures).toBe(0n);
  });

  it('applies the negotiated ring features to the queues', () => {
    const { sink, drv } = device();
    drv.negotiate(acceptAll(sink, F.EVENT_IDX));
    expect(sink.queues.map((q) => [q.eventIdx, q.indirectDesc])).toEqual([
      [false, true],
      [false, true],
    ]);
  });
});

describe('device status', () => {
  it('keeps DEVICE_NEEDS_RESET against driver writes, and records the status history', () => {
    const h = new Host();
    const sink = new SinkDevice(h.ctx());
    const { drv, ring } = bringUp(h, sink);
    ring.add(ring.size); // a head past the queue: a driver error
    drv.kick();
    h.run();
    drv.write(MMIO.status, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED);
    expect(drv.status).toBe(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED | DEVICE_NEEDS_RESET);
    const history = sink.report().statusHistory.map((s) => s.status.join('|'));
    expect(history.slice(-2)).toEqual(['ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK|DEVICE_NEEDS_RESET', 'ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK|DEVICE_NEEDS_RESET|FAILED']);
  });

  it('processes no buffer before DRIVER_OK, even when kicked', () => {
    const h = new Host();
    const sink = new SinkDevice(h.ctx());
    const drv = new MmioDriver(h, sink);
    drv.negotiate(acceptAll(sink));
    const ring = new TestRing(h.mem, 8);
    drv.setupQueue(0, ring);
    ring.setDesc(0, { addr: h.alloc(8), len: 8 });
    ring.add(0);
    drv.kick();
    h.run();
    expect(sink.served).toHaveLength(0);
    expect(ring.usedIdx).toBe(0);
    drv.driverOk();
    drv.kick();
    h.run();
    expect(ring.usedIdx).toBe(1);
  });

  it('writing 0 resets queues, features, interrupt status and drops work already scheduled', () => {
    const h = new Host();
    const sink = new SinkDevice(h.ctx());
    const { drv, ring } = bringUp(h, sink);
    ring.setDesc(0, { addr: h.alloc(8), len: 8 });
    ring.add(0);
    ring.add(0);
    drv.kick();
    h.events.runUntil(() => ring.usedIdx === 1); // one completion in, one still scheduled
    expect(drv.t.interruptStatus).toBe(VIRTIO_MMIO_INT_VRING);
    drv.write(MMIO.status, 0);
    h.run();
    expect(ring.usedIdx).toBe(1);
    expect(drv.status).toBe(0);
    expect(sink.driverFeatures).toBe(0n);
    expect(drv.t.interruptStatus).toBe(0);
    const q = sink.queues[0]!;
    expect([q.ready, q.size, q.nextAvail, q.nextUsed, q.addr.desc, q.eventIdx]).toEqual([false, q.maxSize, 0, 0, 0, false]);
    drv.write(MMIO.queue_sel, 0);
    expect(drv.read(MMIO.queue_ready)).toBe(0);
  });

  it('runs device work after the notify latency and completes requests one service time apart', () => {
    const h = new Host();
    const sink = new SinkDevice(h.ctx());
    const { drv, ring } = bringUp(h, sink);
    for (let i = 0; i < 3; i++) {
      ring.setDesc(i, { addr: h.alloc(8), len: 8 });
      ring.add(i);
    }
    drv.kick();
    drv.kick(); // coalesced: the device is already awake
    h.run();
    const flushes = h.trace.events.filter((e) => e.name === 'virtqueue_flush').map((e) => e.ts);
    expect(flushes).toEqual([VIRTIO_NOTIFY_LATENCY_NS + 100, VIRTIO_NOTIFY_LATENCY_NS + 200, VIRTIO_NOTIFY_LATENCY_NS + 300]);
    expect(h.traced('virtio_queue_notify')).toBe(2);
    expect(h.traced('virtqueue_pop')).toBe(3);
  });

  it('completes chains in the order it served them while its completion ring wraps and grows', () => {
    const h = new Host();
    const sink = new SinkDevice(h.ctx());
    const { drv, ring } = bringUp(h, sink, { queueSize: 64 });
    const add = (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        ring.setDesc(i, { addr: h.alloc(8), len: 8 });
        ring.add(i);
      }
      drv.kick();
    };
    // 10 served and completed leave the ring's start at slot 10; 40 more then wrap it and make it grow twice.
    add(0, 10);
    h.run();
    add(10, 50);
    h.run();
    expect(sink.served).toEqual([...Array(50).keys()]);
    expect(ring.usedIdx).toBe(50);
    expect(Array.from({ length: 50 }, (_, i) => ring.usedElem(i).id)).toEqual([...Array(50).keys()]);
  });

  it('reports features, per-queue counts, interrupts and errors', () => {
    const h = new Host();
    const sink = new SinkDevice(h.ctx());
    const { drv, ring } = bringUp(h, sink, { features: acceptAll(new SinkDevice(h.ctx()), F.EVENT_IDX) });
    ring.setDesc(0, { addr: h.alloc(8), len: 8 });
    ring.add(0);
    drv.kick();
    h.run();
    const r = sink.report();
    expect(r.offered).toEqual(['bit0', 'INDIRECT_DESC', 'EVENT_IDX', 'VERSION_1']);
    expect(r.accepted).toEqual(['bit0', 'INDIRECT_DESC', 'VERSION_1']);
    expect(r.queues[0]).toEqual({ index: 0, size: 256, popped: 1, used: 1 });
    expect(r.interrupts).toEqual({ used: 1, config: 0 });
    expect(r.errors).toEqual([]);
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });
});
