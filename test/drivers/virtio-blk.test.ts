// virtio-blk and virtio-rng drivers end to end: guest driver, virtqueue and
// transport against in-test devices, with and without the DMA API.
import { describe, expect, it } from 'vitest';
import { VIRTIO_BLK_F } from '../../abi/virtio-blk.ts';
import { DEVICE_ID, F, bit } from '../../abi/virtio.ts';
import type { BlkStatus, VirtioBlk } from '../../drivers/virtio-blk.ts';
import type { Chain } from './support/device-ring.ts';
import { blkServe } from './support/virtio-model.ts';
import { blkConfig, bootMmio, bootPci, type Booted } from './support/stack.ts';

const V1 = bit(F.VERSION_1);
const PLATFORM = V1 | bit(F.ACCESS_PLATFORM) | bit(F.EVENT_IDX) | bit(F.INDIRECT_DESC);
const DISK_BYTES = 1 << 20;

interface BlkSetup {
  readonly features?: bigint;
  readonly queue?: number;
  readonly capacity?: bigint;
  readonly ro?: boolean;
  readonly usedLen?: (len: number) => number;
}

function bootBlk(transport: 'mmio' | 'pci', s: BlkSetup = {}) {
  const disk = new Uint8Array(DISK_BYTES);
  const opts = {
    deviceId: DEVICE_ID.BLOCK,
    features: s.features ?? V1,
    queues: [s.queue ?? 64],
    serve: blkServe(disk, { ro: s.ro ?? false, ...(s.usedLen ? { usedLen: s.usedLen } : {}) }),
    config: blkConfig(s.capacity ?? BigInt(DISK_BYTES / 512)),
  };
  const b: Booted = transport === 'mmio' ? bootMmio(opts) : bootPci(opts, { msixEntries: 4 });
  const blk = b.stack.blk()[0]!;
  expect(blk).toBeDefined();
  return { ...b, blk, disk, buf: (pages: number) => b.m.k.pages.alloc(pages) };
}

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

function roundTrip(b: ReturnType<typeof bootBlk>, sector: number, bytes: number) {
  const src = b.buf(bytes / 4096);
  const dst = b.buf(bytes / 4096);
  b.m.k.mem.write(src, pattern(bytes, sector));
  expect(b.blk.submitAndWait({ type: 'write', sector, phys: src, len: bytes })).toBe('OK');
  expect(b.disk.subarray(sector * 512, sector * 512 + bytes)).toEqual(pattern(bytes, sector));
  expect(b.blk.submitAndWait({ type: 'read', sector, phys: dst, len: bytes })).toBe('OK');
  expect(b.m.k.mem.read(dst, bytes)).toEqual(pattern(bytes, sector));
}

describe('virtio-blk', () => {
  it('writes and reads back through the DMA API over virtio-pci with MSI-X', () => {
    const b = bootBlk('pci', { features: PLATFORM });
    roundTrip(b, 10, 8192);
    expect(b.blk.stats).toEqual({ requests: 2, completed: 2, errors: 0, bytesRead: 8192, bytesWritten: 8192 });
    expect(b.m.iommu.maps).toBe(8); // header, data, status and the indirect table, per request
    expect(b.m.iommu.streamingLive()).toBe(0);
    expect(b.m.k.irqs.counts()['virtio0-1']).toBe(2);
  });

  it('writes and reads back with physical addresses over virtio-mmio', () => {
    const b = bootBlk('mmio');
    roundTrip(b, 2040, 4096);
    expect(b.m.iommu.maps).toBe(0);
    expect(b.m.k.irqs.counts()['virtio0']).toBe(2);
  });

  it('keeps requests in flight up to the free descriptors', () => {
    for (const [features, inFlight] of [
      [V1, 5], // three descriptors each from 16
      [V1 | bit(F.INDIRECT_DESC), 16], // one descriptor each; the request slots run out
    ] as const) {
      const b = bootBlk('mmio', { features, queue: 16 });
      const data = b.buf(16);
      const done: BlkStatus[] = [];
      let submitted = 0;
      while (!b.blk.submit({ type: 'read', sector: submitted, phys: data + submitted * 4096, len: 512, done: (s) => done.push(s) })) submitted++;
      expect(submitted).toBe(inFlight);
      expect(b.blk.submit({ type: 'read', sector: 0, phys: data, len: 512 })).toBe('ENOSPC');
      expect(b.model.served).toBe(0);
      b.m.k.irqs.waitEvent(() => done.length === inFlight, 'all reads');
      expect(done.every((s) => s === 'OK')).toBe(true);
      expect(b.blk.freeRequests).toBe(16);
    }
  });

  it('completes a request the device finishes while callbacks are being re-enabled', () => {
    const b = bootBlk('mmio');
    const vq = b.vdev()!.vqs[0]!;
    const data = b.buf(1);
    const done: string[] = [];
    // The device serves the second request in the window between draining and re-enabling, with interrupts off.
    const enableCbPrepare = vq.enableCbPrepare.bind(vq);
    vq.enableCbPrepare = () => {
      b.model.process(0);
      return enableCbPrepare();
    };
    b.blk.submit({
      type: 'read', sector: 0, phys: data, len: 512,
      done: (s) => {
        done.push(`first ${s}`);
        b.blk.submit({ type: 'read', sector: 1, phys: data, len: 512, done: (s2) => done.push(`second ${s2}`) });
      },
    });
    b.m.k.irqs.waitEvent(() => done.length === 2, 'both reads');
    expect(done).toEqual(['first OK', 'second OK']);
    expect(b.m.k.irqs.counts()['virtio0']).toBe(1);
  });

  it('refuses a write to a read-only disk before the device sees it', () => {
    const b = bootBlk('mmio', { features: V1 | bit(VIRTIO_BLK_F.RO) });
    const data = b.buf(1);
    expect(b.blk.config.readOnly).toBe(true);
    expect(b.blk.submit({ type: 'write', sector: 0, phys: data, len: 512 })).toBe('EROFS');
    expect(b.model.notifies).toBe(0);
    expect(b.blk.submitAndWait({ type: 'read', sector: 0, phys: data, len: 512 })).toBe('OK');
  });

  it('checks sectors against the capacity and the block size', () => {
    const b = bootBlk('mmio', { capacity: 2048n });
    const data = b.buf(1);
    const read = (sector: number, len: number) => b.blk.submit({ type: 'read', sector, phys: data, len });
    expect(read(2047, 1024)).toBe('EINVAL');
    expect(read(2048, 512)).toBe('EINVAL');
    expect(read(-1, 512)).toBe('EINVAL');
    expect(read(0, 100)).toBe('EINVAL');
    expect(read(0, 0)).toBe('EINVAL');
    expect(b.model.notifies).toBe(0);
    expect(read(2047, 512)).toBeUndefined();
  });

  it('sends FLUSH only when negotiated, and GET_ID returns the serial', () => {
    const plain = bootBlk('mmio');
    expect(plain.blk.submit({ type: 'flush' })).toBe('EOPNOTSUPP');
    const b = bootBlk('mmio', { features: V1 | bit(VIRTIO_BLK_F.FLUSH) });
    expect(b.blk.submitAndWait({ type: 'flush' })).toBe('OK');
    const id = b.buf(1);
    expect(b.blk.submit({ type: 'get-id', phys: id, len: 16 })).toBe('EINVAL');
    expect(b.blk.submitAndWait({ type: 'get-id', phys: id, len: 20 })).toBe('OK');
    expect(new TextDecoder().decode(b.m.k.mem.read(id, 15))).toBe('ivory-test-disk');
  });

  it('fails a completion whose used length does not match what the device had to write', () => {
    for (const [usedLen, what] of [
      [() => 0, 'used length 0'],
      [(n: number) => n - 1, 'used length 512'],
      [(n: number) => n + 8, 'used length 521'],
    ] as const) {
      const b = bootBlk('mmio', { usedLen });
      expect(b.blk.submitAndWait({ type: 'read', sector: 0, phys: b.buf(1), len: 512 })).toBe('IOERR');
      expect(b.blk.stats).toMatchObject({ errors: 1, bytesRead: 0 });
      expect(b.vdev()!.report.errors).toEqual([`virtio0: read completed with ${what}, expected 513`]);
    }
  });

  it('passes the device status through: IOERR past the end of the backing store', () => {
    const b = bootBlk('mmio', { capacity: BigInt(DISK_BYTES / 512) + 8n });
    expect(b.blk.submitAndWait({ type: 'read', sector: DISK_BYTES / 512, phys: b.buf(1), len: 512 })).toBe('IOERR');
    expect(b.blk.stats.errors).toBe(1);
    expect(b.vdev()!.report.errors).toEqual([]);
  });

  it('fails requests still in flight with IOERR when the device goes away, leaving nothing mapped', () => {
    const b = bootBlk('pci', { features: PLATFORM });
    const done: BlkStatus[] = [];
    for (let i = 0; i < 3; i++) b.blk.submit({ type: 'read', sector: i, phys: b.buf(1), len: 512, done: (s) => done.push(s) });
    b.remove();
    expect(done).toEqual(['IOERR', 'IOERR', 'IOERR']);
    expect(b.m.iommu.live.size).toBe(0);
    expect(b.stack.blk()).toEqual([]);
  });

  it('lists bound devices and reports their queues and counters', () => {
    const b = bootBlk('pci', { features: PLATFORM });
    roundTrip(b, 0, 4096);
    const [r] = b.stack.report();
    expect(r).toMatchObject({ device: 'virtio0', transport: 'virtio-pci', busDevice: '0000:00:01.0', driver: 'virtio_blk', deviceId: DEVICE_ID.BLOCK, accepted: PLATFORM, errors: [] });
    expect(r!.queues).toEqual([{ name: 'requests', num: 64, broken: false, added: 2, bytesOut: 16 + 4096 + 16, bytesIn: 1 + 4096 + 1, kicks: 2, kicksSuppressed: 0, interrupts: 2 }]);
    expect(r!.stats).toBe((b.stack.blk()[0] as VirtioBlk).stats);
  });
});

describe('virtio-rng', () => {
  function bootRng(serve: (c: Chain, dv: DataView) => number) {
    const b = bootMmio({ deviceId: DEVICE_ID.ENTROPY, features: V1 | bit(F.ACCESS_PLATFORM), queues: [8], serve });
    return { ...b, rng: b.stack.rng()[0]! };
  }

  it('fills larger reads with several device requests', () => {
    let next = 0;
    const { rng, m } = bootRng((c, dv) => {
      const w = c.writable[0]!;
      const n = Math.min(w.len, 3000); // a device may return less than asked
      for (let i = 0; i < n; i++) dv.setUint8(w.off + i, next++ & 0xff);
      return n;
    });
    const bytes = rng.read(10_000);
    expect(bytes).toEqual(Uint8Array.from({ length: 10_000 }, (_, i) => i & 0xff));
    expect(rng.stats).toEqual({ requests: 4, bytes: 10_000 });
    expect(m.iommu.streamingLive()).toBe(0);
  });

  it('throws rather than trust a device claiming more bytes than the buffer holds', () => {
    const { rng } = bootRng((c) => c.writable[0]!.len + 1);
    expect(() => rng.read(16)).toThrow('virtio0: device claims 17 bytes of a 16-byte buffer');
  });
});
