// The split virtqueue against an independent device-side ring: index wrap,
// indirect tables, notification suppression both ways, a lying device, and
// DMA mapping failures that must leave nothing mapped.
import { describe, expect, it } from 'vitest';
import { toBig } from '../../abi/addr.ts';
import { F, bit } from '../../abi/virtio.ts';
import { VirtioBus, VirtioDevice, type VirtioTransport } from '../../drivers/virtio/core.ts';
import { createVirtqueue, type Segment, type Virtqueue } from '../../drivers/virtio/virtqueue.ts';
import { Device } from '../../kernel/device.ts';
import { DeviceRing } from './support/device-ring.ts';
import { FakeMachine } from './support/machine.ts';

function setup(features: bigint, num = 8) {
  const m = new FakeMachine();
  const parent = new Device('transport0', m.k.platform as never);
  m.k.dmaConfigure(parent);
  let notifies = 0;
  const transport = { name: 'stub', notify: () => notifies++ } as unknown as VirtioTransport;
  const vdev = new VirtioDevice(m.k, new VirtioBus(m.k), transport, 1, parent);
  vdev.features = features | bit(F.VERSION_1);
  let callbacks = 0;
  const vq = createVirtqueue(vdev, 0, num, { name: 'requestq', callback: () => callbacks++ })! as Virtqueue<number>;
  const platform = (features & bit(F.ACCESS_PLATFORM)) !== 0n;
  const translate = (a: bigint, len: number) => m.ramOff(platform ? m.iommu.translate(a, len) : Number(a), len);
  const dev = new DeviceRing(m.dv, translate, vq.num, { desc: toBig(vq.descAddr), driver: toBig(vq.availAddr), device: toBig(vq.usedAddr) }, (features & bit(F.EVENT_IDX)) !== 0n, (features & bit(F.INDIRECT_DESC)) !== 0n);
  const page = m.k.pages.alloc(16);
  const seg = (i: number, len = 64): Segment => ({ phys: page + i * 256, len });
  return { m, vq, dev, seg, notifies: () => notifies, callbacks: () => callbacks };
}

describe('split virtqueue', () => {
  it('keeps adding and getting buffers across the 65535 -> 0 index wrap', () => {
    const { vq, dev, seg } = setup(0n, 8);
    const total = 66_000;
    const wrong: string[] = [];
    for (let i = 0; i < total; i += 3) {
      for (let j = 0; j < 3; j++) if (vq.add([seg(0, 16)], [seg(1 + j, 32)], i + j)) wrong.push(`add ${i + j}`);
      for (let c = dev.pop(); c; c = dev.pop()) {
        if (c.readable.length !== 1 || c.readable[0]!.len !== 16 || c.writable.length !== 1 || c.writable[0]!.len !== 32) wrong.push(`chain at ${i}`);
        dev.push(c.head, 7);
      }
      for (let j = 0; j < 3; j++) {
        const b = vq.getBuf();
        if (b?.token !== i + j || b.len !== 7) wrong.push(`get ${i + j}: ${JSON.stringify(b)}`);
      }
      if (vq.getBuf()) wrong.push(`extra buffer at ${i}`);
    }
    expect(wrong.slice(0, 5)).toEqual([]);
    expect(dev.availIdx).toBe(total & 0xffff);
    expect(dev.usedIdx).toBe(total & 0xffff);
    expect(vq.numFreeDescs).toBe(8);
    expect(vq.stats).toMatchObject({ added: total, bytesOut: 16 * total, bytesIn: 32 * total });
  });

  it('uses one descriptor and an indirect table for a multi-segment buffer, all of it mapped through the DMA API', () => {
    const { m, vq, dev, seg } = setup(bit(F.INDIRECT_DESC) | bit(F.ACCESS_PLATFORM));
    expect(vq.add([seg(0, 16), seg(1, 512)], [seg(2, 1)], 1)).toBeUndefined();
    expect(vq.numFreeDescs).toBe(7);
    expect(m.iommu.streamingLive()).toBe(4); // three segments and the table
    const c = dev.pop()!;
    expect(c.indirect).toBe(true);
    expect(c.readable.map((p) => p.len)).toEqual([16, 512]);
    expect(c.writable.map((p) => p.len)).toEqual([1]);
    // Bus addresses are IOVAs above 2^53, passed through unrounded.
    for (const a of c.addrs) expect(a >= 1n << 60n).toBe(true);
    expect(c.readable[1]!.off).toBe(m.ramOff(seg(1).phys, 512));
    dev.push(c.head, 1);
    expect(vq.getBuf()).toEqual({ token: 1, len: 1 });
    expect(m.iommu.streamingLive()).toBe(0);
    expect(vq.numFreeDescs).toBe(8);
  });

  it('chains direct descriptors for a single segment, and without INDIRECT_DESC', () => {
    const one = setup(bit(F.INDIRECT_DESC));
    one.vq.add([one.seg(0)], [], 1);
    expect(one.dev.pop()!.indirect).toBe(false);
    const plain = setup(0n);
    plain.vq.add([plain.seg(0), plain.seg(1)], [plain.seg(2)], 1);
    expect(plain.vq.numFreeDescs).toBe(5);
    expect(plain.vq.add([plain.seg(0), plain.seg(1)], [plain.seg(2), plain.seg(3)], 2)).toBeUndefined();
    expect(plain.vq.add([plain.seg(0)], [plain.seg(1), plain.seg(2)], 3)).toBe('ENOSPC');
  });

  it('suppresses kicks with EVENT_IDX until avail_event is passed', () => {
    const { vq, dev, seg, notifies } = setup(bit(F.EVENT_IDX));
    vq.add([seg(0)], [], 1);
    expect(vq.kick()).toBe(true);
    expect(notifies()).toBe(1); // avail_event 0 is passed by idx 0 -> 1
    vq.add([seg(0)], [], 2);
    vq.kick();
    expect(notifies()).toBe(1); // the device has not asked again
    dev.setAvailEvent(4);
    for (let t = 3; t <= 5; t++) vq.add([seg(0)], [], t); // idx 2 -> 5 passes 4
    vq.kick();
    expect(notifies()).toBe(2);
    expect(vq.stats).toMatchObject({ kicks: 2, kicksSuppressed: 1 });
  });

  it('suppresses kicks with NO_NOTIFY when EVENT_IDX is off', () => {
    const { vq, dev, seg, notifies } = setup(0n);
    dev.setNoNotify(true);
    vq.add([seg(0)], [], 1);
    vq.kick();
    expect(notifies()).toBe(0);
    dev.setNoNotify(false);
    vq.add([seg(0)], [], 2);
    vq.kick();
    expect(notifies()).toBe(1);
  });

  it('sets NO_INTERRUPT while callbacks are disabled and re-checks when enabling them', () => {
    const { vq, dev, seg } = setup(0n);
    vq.disableCb();
    expect(dev.availFlags).toBe(1);
    vq.add([seg(0)], [], 1);
    const c = dev.pop()!;
    const old = dev.usedIdx;
    dev.push(c.head, 0);
    expect(dev.wantsInterrupt(old)).toBe(false);
    // A buffer used while callbacks were off: enabling must report it.
    expect(vq.enableCb()).toBe(false);
    expect(dev.availFlags).toBe(0);
    expect(vq.getBuf()?.token).toBe(1);
    expect(vq.enableCb()).toBe(true);
  });

  it('moves used_event with EVENT_IDX so the device interrupts only when callbacks are on', () => {
    const { vq, dev, seg } = setup(bit(F.EVENT_IDX));
    const serveOne = (token: number) => {
      vq.add([seg(0)], [], token);
      const old = dev.usedIdx;
      dev.push(dev.pop()!.head, 0);
      return dev.wantsInterrupt(old);
    };
    expect(serveOne(1)).toBe(true); // used_event starts at 0
    vq.getBuf();
    vq.disableCb();
    expect(serveOne(2)).toBe(false);
    expect(serveOne(3)).toBe(false);
    expect(vq.enableCb()).toBe(false);
    vq.getBuf();
    vq.getBuf();
    expect(vq.enableCb()).toBe(true);
    expect(dev.usedEvent).toBe(3);
    expect(serveOne(4)).toBe(true);
  });

  it('runs the callback from interrupt() only when there is used work', () => {
    const { vq, dev, seg, callbacks } = setup(0n);
    expect(vq.interrupt()).toBe(false);
    vq.add([seg(0)], [], 1);
    dev.push(dev.pop()!.head, 0);
    expect(vq.interrupt()).toBe(true);
    expect(callbacks()).toBe(1);
    expect(vq.stats.interrupts).toBe(1);
  });

  it('marks the queue broken when the device returns an id out of range', () => {
    const { m, vq, dev, seg } = setup(0n);
    vq.add([seg(0)], [], 1);
    dev.pop();
    dev.push(9, 0);
    expect(vq.getBuf()).toBeUndefined();
    expect(vq.broken).toBe(true);
    expect(m.dmesg()).toContain('virtio0: requestq: id 9 out of range');
    expect(vq.add([seg(0)], [], 2)).toBe('EIO');
    expect(vq.notify()).toBe(false);
  });

  it('marks the queue broken when the device returns an id that is not a head', () => {
    const { m, vq, dev, seg } = setup(0n);
    vq.add([seg(0), seg(1)], [], 1);
    dev.pop();
    dev.push(1, 0); // the second descriptor of the chain
    expect(vq.getBuf()).toBeUndefined();
    expect(vq.broken).toBe(true);
    expect(m.dmesg()).toContain('virtio0: requestq: id 1 is not a head!');
  });

  it('unwinds every mapping and returns ENOMEM when a segment cannot be mapped', () => {
    const { m, vq, dev, seg } = setup(bit(F.ACCESS_PLATFORM));
    m.iommu.failAfter = 2;
    expect(vq.add([seg(0), seg(1)], [seg(2)], 1)).toBe('ENOMEM');
    expect(m.iommu.maps).toBe(2);
    expect(m.iommu.streamingLive()).toBe(0);
    expect(vq.numFreeDescs).toBe(8);
    expect(dev.availIdx).toBe(0);
    m.iommu.failAfter = Infinity;
    expect(vq.add([seg(0), seg(1)], [seg(2)], 1)).toBeUndefined();
    expect(dev.pop()!.readable).toHaveLength(2);
  });

  it('unwinds an indirect buffer whose table cannot be mapped', () => {
    const { m, vq, dev, seg } = setup(bit(F.ACCESS_PLATFORM) | bit(F.INDIRECT_DESC));
    const tables = new Set<number>();
    const kzalloc = m.k.slab.kzalloc.bind(m.k.slab);
    m.k.slab.kzalloc = (size) => {
      const gpa = kzalloc(size);
      tables.add(gpa);
      return gpa;
    };
    const kfree = m.k.slab.kfree.bind(m.k.slab);
    m.k.slab.kfree = (gpa) => {
      expect(tables.delete(gpa)).toBe(true);
      kfree(gpa);
    };
    for (const failAfter of [1, 3]) {
      m.iommu.failAfter = failAfter; // a data segment, then the table itself
      expect(vq.add([seg(0), seg(1)], [seg(2)], 1)).toBe('ENOMEM');
      expect(m.iommu.streamingLive()).toBe(0);
      expect(vq.numFreeDescs).toBe(8);
    }
    expect(dev.availIdx).toBe(0);
    expect(tables.size).toBe(0); // both tables freed
  });

  it('hands back and unmaps buffers the device never used', () => {
    const { m, vq, seg } = setup(bit(F.ACCESS_PLATFORM));
    vq.add([seg(0)], [seg(1)], 1);
    vq.add([seg(2)], [], 2);
    expect(vq.detachUnusedBuf()).toBe(1);
    expect(vq.detachUnusedBuf()).toBe(2);
    expect(vq.detachUnusedBuf()).toBeUndefined();
    expect(m.iommu.streamingLive()).toBe(0);
    vq.free();
    expect(m.iommu.live.size).toBe(0);
  });
});
