import { describe, expect, it } from 'vitest';
import { VIRTQ_DESC_F } from '../../abi/ring.ts';
import { SECTOR_SIZE, VIRTIO_BLK_F, VIRTIO_BLK_S, VIRTIO_BLK_T, VirtioBlkConfig, VirtioBlkReqHeader } from '../../abi/virtio-blk.ts';
import { MMIO, VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_INT_CONFIG } from '../../abi/virtio-mmio.ts';
import { F, STATUS, has } from '../../abi/virtio.ts';
import { RamDisk, VirtioBlk, type VirtioBlkOptions } from '../../platform/devices/blk.ts';
import { type Desc, Host, TestRing, bringUp } from './virtio-harness.ts';

const { NEXT, WRITE } = VIRTQ_DESC_F;
const MiB = 2 ** 20;

function blk(opts: Partial<VirtioBlkOptions> = {}) {
  const h = new Host();
  const dev = new VirtioBlk(h.ctx('virtio-blk.0'), { capacity: MiB, serial: 'ivory-disk-0', ...opts });
  return { h, dev, ...bringUp(h, dev) };
}

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

/** Lays a chain out from descriptor `head` on and makes it available. */
function submit(ring: TestRing, head: number, descs: Desc[]): void {
  descs.forEach((d, i) => ring.setDesc(head + i, { ...d, flags: (d.flags ?? 0) | (i + 1 < descs.length ? NEXT : 0), next: head + i + 1 }));
  ring.add(head);
}

interface Request {
  type: number;
  sector?: number | bigint;
  /** OUT payload. */
  out?: Uint8Array;
  /** Writable data bytes before the status byte (IN, GET_ID). */
  inLen?: number;
  head?: number;
}

/** A request in the usual three-part framing: header, data, status. */
function request(h: Host, ring: TestRing, r: Request): { data: number; status: number } {
  const hdr = h.alloc(VirtioBlkReqHeader.span);
  h.put(hdr, VirtioBlkReqHeader.encode({ type: r.type, reserved: 0, sector: BigInt(r.sector ?? 0) }));
  const status = h.alloc(1);
  h.put(status, Uint8Array.of(0xff));
  const descs: Desc[] = [{ addr: hdr, len: VirtioBlkReqHeader.span }];
  let data = 0;
  if (r.out) {
    data = h.alloc(r.out.length);
    h.put(data, r.out);
    descs.push({ addr: data, len: r.out.length });
  }
  if (r.inLen) {
    data = h.alloc(r.inLen);
    h.put(data, new Uint8Array(r.inLen).fill(0xaa));
    descs.push({ addr: data, len: r.inLen, flags: WRITE });
  }
  descs.push({ addr: status, len: 1, flags: WRITE });
  submit(ring, r.head ?? 0, descs);
  return { data, status };
}

function complete(s: ReturnType<typeof blk>, r: Request) {
  const at = request(s.h, s.ring, r);
  const before = s.ring.usedIdx;
  s.drv.kick();
  s.h.run();
  expect(s.ring.usedIdx).toBe((before + 1) & 0xffff);
  const used = s.ring.usedElem(before);
  return { status: s.h.mem.u8[at.status]!, usedLen: used.len, id: used.id, data: at.data };
}

describe('virtio-blk requests', () => {
  it('writes sectors and reads them back, with exact used lengths', () => {
    const s = blk();
    const payload = pattern(1024, 3);
    expect(complete(s, { type: VIRTIO_BLK_T.OUT, sector: 3, out: payload })).toMatchObject({ status: VIRTIO_BLK_S.OK, usedLen: 1 });
    expect([...s.dev.disk.read(3 * SECTOR_SIZE, 1024)]).toEqual([...payload]);
    const r = complete(s, { type: VIRTIO_BLK_T.IN, sector: 3, inLen: 1024 });
    expect(r).toMatchObject({ status: VIRTIO_BLK_S.OK, usedLen: 1025 });
    expect([...s.h.get(r.data, 1024)]).toEqual([...payload]);
    expect(s.dev.report().stats).toMatchObject({ in: 1, out: 1, sectorsRead: 2, sectorsWritten: 2, ioErrors: 0 });
    expect(s.dev.report().dma).toEqual({ readBytes: 16 + 1024 + 16, writtenBytes: 1 + 1024 + 1 });
  });

  it('accepts any framing: header and data in one descriptor, data and status in another', () => {
    const s = blk();
    const buf = s.h.alloc(16 + 512);
    s.h.put(buf, VirtioBlkReqHeader.encode({ type: VIRTIO_BLK_T.OUT, reserved: 0, sector: 1n }));
    s.h.put(buf + 16, pattern(512, 9));
    const st = s.h.alloc(1);
    submit(s.ring, 0, [{ addr: buf, len: 528 }, { addr: st, len: 1, flags: WRITE }]);
    s.drv.kick();
    s.h.run();
    expect(s.h.mem.u8[st]).toBe(VIRTIO_BLK_S.OK);

    const hdr = s.h.alloc(16);
    s.h.put(hdr, VirtioBlkReqHeader.encode({ type: VIRTIO_BLK_T.IN, reserved: 0, sector: 1n }));
    const inbuf = s.h.alloc(513);
    submit(s.ring, 4, [{ addr: hdr, len: 16 }, { addr: inbuf, len: 300, flags: WRITE }, { addr: inbuf + 300, len: 213, flags: WRITE }]);
    s.drv.kick();
    s.h.run();
    expect([...s.h.get(inbuf, 512)]).toEqual([...pattern(512, 9)]);
    expect(s.h.mem.u8[inbuf + 512]).toBe(VIRTIO_BLK_S.OK);
    expect(s.ring.usedElem(1)).toEqual({ id: 4, len: 513 });
  });

  it('completes FLUSH with OK', () => {
    expect(complete(blk(), { type: VIRTIO_BLK_T.FLUSH })).toMatchObject({ status: VIRTIO_BLK_S.OK, usedLen: 1 });
  });

  it('answers GET_ID with the 20-byte zero-padded serial, cut to the buffer', () => {
    const s = blk();
    const r = complete(s, { type: VIRTIO_BLK_T.GET_ID, inLen: 20 });
    expect(r).toMatchObject({ status: VIRTIO_BLK_S.OK, usedLen: 21 });
    expect(new TextDecoder().decode(s.h.get(r.data, 12))).toBe('ivory-disk-0');
    expect([...s.h.get(r.data + 12, 8)]).toEqual(new Array(8).fill(0));
    const short = complete(s, { type: VIRTIO_BLK_T.GET_ID, inLen: 5, head: 8 });
    expect(short.usedLen).toBe(6);
    expect(new TextDecoder().decode(s.h.get(short.data, 5))).toBe('ivory');
  });

  it('fails a read past the end with IOERR and moves no data', () => {
    const s = blk();
    const r = complete(s, { type: VIRTIO_BLK_T.IN, sector: MiB / SECTOR_SIZE - 1, inLen: 1024 });
    expect(r).toMatchObject({ status: VIRTIO_BLK_S.IOERR, usedLen: 1 });
    expect([...s.h.get(r.data, 1024)].every((b) => b === 0xaa)).toBe(true);
    expect(complete(s, { type: VIRTIO_BLK_T.IN, sector: 2n ** 60n, inLen: 512, head: 4 }).status).toBe(VIRTIO_BLK_S.IOERR);
  });

  it('fails a write past the end with IOERR and leaves the disk alone', () => {
    const s = blk();
    expect(complete(s, { type: VIRTIO_BLK_T.OUT, sector: MiB / SECTOR_SIZE - 1, out: pattern(1024, 1) }).status).toBe(VIRTIO_BLK_S.IOERR);
    expect(s.dev.disk.allocated).toBe(0);
    expect(s.dev.report().stats.ioErrors).toBe(1);
  });

  it('fails data that is not a whole number of sectors with IOERR', () => {
    const s = blk();
    expect(complete(s, { type: VIRTIO_BLK_T.OUT, sector: 0, out: pattern(100, 1) }).status).toBe(VIRTIO_BLK_S.IOERR);
    expect(complete(s, { type: VIRTIO_BLK_T.IN, sector: 0, inLen: 700, head: 4 }).status).toBe(VIRTIO_BLK_S.IOERR);
  });

  it('on a read-only disk offers RO, fails writes with IOERR and still reads', () => {
    const s = blk({ readOnly: true });
    expect(has(s.dev.offeredFeatures, VIRTIO_BLK_F.RO)).toBe(true);
    expect(complete(s, { type: VIRTIO_BLK_T.OUT, sector: 0, out: pattern(512, 1) }).status).toBe(VIRTIO_BLK_S.IOERR);
    expect(s.dev.disk.allocated).toBe(0);
    expect(complete(s, { type: VIRTIO_BLK_T.IN, sector: 0, inLen: 512, head: 4 }).status).toBe(VIRTIO_BLK_S.OK);
  });

  it('answers an unknown request type with UNSUPP', () => {
    const s = blk();
    expect(complete(s, { type: 0x55 })).toMatchObject({ status: VIRTIO_BLK_S.UNSUPP, usedLen: 1 });
    expect(complete(s, { type: VIRTIO_BLK_T.DISCARD, head: 4 }).status).toBe(VIRTIO_BLK_S.UNSUPP);
    expect(s.dev.report().stats.unsupported).toBe(2);
  });

  it.each([
    ['a header shorter than 16 bytes', 'BLK_OUTHDR_TOO_SHORT', (h: Host): Desc[] => [{ addr: h.alloc(8), len: 8 }, { addr: h.alloc(1), len: 1, flags: WRITE }]],
    ['no writable status byte', 'BLK_NO_STATUS', (h: Host): Desc[] => [{ addr: h.alloc(16), len: 16 }]],
  ])('treats %s as a driver error: DEVICE_NEEDS_RESET, nothing used', (_name, reason, descs) => {
    const s = blk();
    submit(s.ring, 0, descs(s.h));
    s.drv.kick();
    s.h.run();
    expect(s.drv.status & STATUS.DEVICE_NEEDS_RESET).toBeTruthy();
    expect(s.drv.t.interruptStatus & VIRTIO_MMIO_INT_CONFIG).toBeTruthy();
    expect(s.dev.report().errors[0]!.reason).toBe(reason);
    expect(s.ring.usedIdx).toBe(0);
  });

  it('keeps several requests in flight and completes them in order, one service time apart', () => {
    const s = blk();
    for (let i = 0; i < 4; i++) request(s.h, s.ring, { type: VIRTIO_BLK_T.OUT, sector: i, out: pattern(512, i), head: 4 * i });
    s.drv.kick();
    s.h.run();
    expect([0, 1, 2, 3].map((i) => s.ring.usedElem(i).id)).toEqual([0, 4, 8, 12]);
    const ts = s.h.trace.events.filter((e) => e.name === 'virtqueue_flush').map((e) => e.ts);
    expect(new Set(ts.slice(1).map((t, i) => t - ts[i]!)).size).toBe(1);
  });
});

describe('virtio-blk config and features', () => {
  it('offers SIZE_MAX, SEG_MAX, BLK_SIZE and FLUSH, and ring features as switched', () => {
    const s = blk({ indirectDesc: false });
    const f = s.dev.offeredFeatures;
    expect([VIRTIO_BLK_F.SIZE_MAX, VIRTIO_BLK_F.SEG_MAX, VIRTIO_BLK_F.BLK_SIZE, VIRTIO_BLK_F.FLUSH, F.EVENT_IDX, F.VERSION_1].every((b) => has(f, b))).toBe(true);
    expect([VIRTIO_BLK_F.RO, F.INDIRECT_DESC, F.ACCESS_PLATFORM].some((b) => has(f, b))).toBe(false);
    expect(has(blk({ iommuPlatform: true }).dev.offeredFeatures, F.ACCESS_PLATFORM)).toBe(true);
  });

  it('presents capacity, size_max, seg_max, blk_size and num_queues through 8/16/32-bit config reads', () => {
    const s = blk({ capacity: 8 * MiB, queueSize: 128 });
    const C = VirtioBlkConfig.off;
    const rd = (off: number, size: 1 | 2 | 4) => s.drv.t.handler.read(VIRTIO_MMIO_CONFIG + off, size);
    expect(rd(C.capacity, 4) + rd(C.capacity + 4, 4) * 2 ** 32).toBe((8 * MiB) / SECTOR_SIZE);
    expect(rd(C.seg_max, 4)).toBe(126);
    expect(rd(C.size_max, 4)).toBeGreaterThan(0);
    expect(rd(C.blk_size, 2)).toBe(512);
    expect(rd(C.blk_size + 1, 1)).toBe(2);
    expect(rd(C.num_queues, 2)).toBe(1);
  });

  it('resizes: new capacity, a new config generation and a config interrupt; a shrunk tail reads zeros after growing back', () => {
    const s = blk();
    complete(s, { type: VIRTIO_BLK_T.OUT, sector: 2047, out: pattern(512, 5) });
    const gen = s.drv.read(MMIO.config_generation);
    s.dev.resize(512 * 1024);
    expect(s.drv.read(MMIO.config_generation)).toBe((gen + 1) & 0xff);
    expect(s.drv.t.interruptStatus & VIRTIO_MMIO_INT_CONFIG).toBeTruthy();
    expect(s.drv.t.handler.read(VIRTIO_MMIO_CONFIG + VirtioBlkConfig.off.capacity, 4)).toBe(1024);
    expect(complete(s, { type: VIRTIO_BLK_T.IN, sector: 2047, inLen: 512, head: 4 }).status).toBe(VIRTIO_BLK_S.IOERR);
    s.dev.resize(MiB);
    const r = complete(s, { type: VIRTIO_BLK_T.IN, sector: 2047, inLen: 512, head: 8 });
    expect(r.status).toBe(VIRTIO_BLK_S.OK);
    expect([...s.h.get(r.data, 512)].every((b) => b === 0)).toBe(true);
  });

  it('keeps a 1 TiB disk sparse: only written chunks take memory', () => {
    const s = blk({ capacity: 2 ** 40 });
    const last = 2 ** 40 / SECTOR_SIZE - 1;
    expect(complete(s, { type: VIRTIO_BLK_T.OUT, sector: last, out: pattern(512, 2) }).status).toBe(VIRTIO_BLK_S.OK);
    expect(s.dev.disk.allocated).toBe(RamDisk.CHUNK);
    const r = complete(s, { type: VIRTIO_BLK_T.IN, sector: last, inLen: 512, head: 4 });
    expect([...s.h.get(r.data, 512)]).toEqual([...pattern(512, 2)]);
  });

  it('rejects a capacity that is not whole sectors at construction', () => {
    expect(() => new VirtioBlk(new Host().ctx(), { capacity: 1000 })).toThrow(/multiple of 512/);
  });
});

describe('RamDisk', () => {
  it('reads and writes across chunk boundaries', () => {
    const d = new RamDisk(4 * RamDisk.CHUNK);
    const p = pattern(RamDisk.CHUNK + 100, 4);
    d.write(RamDisk.CHUNK - 50, p);
    expect([...d.read(RamDisk.CHUNK - 50, p.length)]).toEqual([...p]);
    expect(d.allocated).toBe(3 * RamDisk.CHUNK);
  });
});
