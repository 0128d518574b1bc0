import { describe, expect, it } from 'vitest';
import type { Addr } from '../../abi/addr.ts';
import { VECTOR } from '../../abi/boot.ts';
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F, VIRTQ_USED_F_NO_NOTIFY } from '../../abi/ring.ts';
import { VIRTIO_MMIO_INT_CONFIG } from '../../abi/virtio-mmio.ts';
import { F, STATUS } from '../../abi/virtio.ts';
import { type AddressSpace, DMA_READ, DMA_WRITE } from '../../platform/address-space.ts';
import { DescriptorChain, DeviceDma, QueueError, type QueueErrorReason, SplitQueue } from '../../platform/virtio/queue.ts';
import { Host, MMIO_LINE, RAM_BYTES, SinkDevice, TestRing, acceptAll, bringUp, writeDesc, MmioDriver } from './virtio-harness.ts';

const { NEXT, WRITE, INDIRECT } = VIRTQ_DESC_F;

/** A queue driven directly, without a device model: ring state and the walker on their own. */
function bareQueue(size = 4, space?: AddressSpace) {
  const h = new Host();
  const ring = new TestRing(h.mem, size);
  const dma = new DeviceDma(h.mem, space ?? h.space);
  const q = new SplitQueue(0, size, dma);
  q.setSize(size);
  q.setAddressWord('desc', false, ring.desc);
  q.setAddressWord('driver', false, ring.avail);
  q.setAddressWord('device', false, ring.used);
  expect(q.enable()).toBeUndefined();
  return { h, ring, q, dma };
}

function popChain(q: SplitQueue): DescriptorChain {
  const c = q.pop();
  if (!(c instanceof DescriptorChain)) throw new Error(`expected a chain, got ${c instanceof QueueError ? c.reason : 'nothing'}`);
  return c;
}

describe('chain walker: every rule ends in DEVICE_NEEDS_RESET and a config interrupt', () => {
  type Setup = (h: Host, r: TestRing) => void;
  /** A valid indirect table of `n` readable entries chained in order, at a fresh address. */
  const table = (h: Host, n: number, entry: (i: number) => { flags?: number; next?: number } = (i) => (i + 1 < n ? { flags: NEXT, next: i + 1 } : {})): number => {
    const t = h.alloc(n * 16);
    for (let i = 0; i < n; i++) writeDesc(h.mem, t, i, { addr: h.alloc(64), len: 64, ...entry(i) });
    return t;
  };
  const cases: [string, QueueErrorReason, Setup, { noIndirect?: boolean }?][] = [
    ['avail idx more than a queue size ahead', 'AVAIL_IDX_OUT_OF_RANGE', (_h, r) => r.setAvailIdx(r.size + 1)],
    ['head index >= queue size', 'HEAD_OUT_OF_RANGE', (_h, r) => r.add(r.size)],
    ['next index >= queue size', 'NEXT_OUT_OF_RANGE', (h, r) => {
      r.setDesc(0, { addr: h.alloc(16), len: 16, flags: NEXT, next: r.size });
      r.add(0);
    }],
    ['next index >= indirect table size', 'NEXT_OUT_OF_RANGE', (h, r) => {
      r.setDesc(0, { addr: table(h, 2, (i) => (i === 0 ? { flags: NEXT, next: 2 } : {})), len: 32, flags: INDIRECT });
      r.add(0);
    }],
    ['a loop in the descriptor table', 'LOOPED_DESCRIPTOR', (h, r) => {
      r.setDesc(0, { addr: h.alloc(16), len: 16, flags: NEXT, next: 1 });
      r.setDesc(1, { addr: h.alloc(16), len: 16, flags: NEXT, next: 0 });
      r.add(0);
    }],
    ['a loop inside an indirect table', 'LOOPED_DESCRIPTOR', (h, r) => {
      r.setDesc(0, { addr: table(h, 3, (i) => ({ flags: NEXT, next: (i + 1) % 3 })), len: 48, flags: INDIRECT });
      r.add(0);
    }],
    ['INDIRECT without VIRTIO_F_INDIRECT_DESC', 'INDIRECT_NOT_NEGOTIATED', (h, r) => {
      r.setDesc(0, { addr: table(h, 1), len: 16, flags: INDIRECT });
      r.add(0);
    }, { noIndirect: true }],
    ['an indirect table of length 0', 'INDIRECT_TABLE_SIZE', (h, r) => {
      r.setDesc(0, { addr: table(h, 1), len: 0, flags: INDIRECT });
      r.add(0);
    }],
    ['an indirect table length not a multiple of 16', 'INDIRECT_TABLE_SIZE', (h, r) => {
      r.setDesc(0, { addr: table(h, 2), len: 24, flags: INDIRECT });
      r.add(0);
    }],
    ['an indirect table of more than 65535 entries', 'INDIRECT_TABLE_SIZE', (h, r) => {
      r.setDesc(0, { addr: h.alloc(16), len: 65536 * 16, flags: INDIRECT });
      r.add(0);
    }],
    ['INDIRECT inside an indirect table', 'NESTED_INDIRECT', (h, r) => {
      const outer = h.alloc(16);
      writeDesc(h.mem, outer, 0, { addr: table(h, 1), len: 16, flags: INDIRECT });
      r.setDesc(0, { addr: outer, len: 16, flags: INDIRECT });
      r.add(0);
    }],
    ['INDIRECT together with NEXT', 'INDIRECT_WITH_NEXT', (h, r) => {
      r.setDesc(0, { addr: table(h, 1), len: 16, flags: INDIRECT | NEXT, next: 1 });
      r.setDesc(1, { addr: h.alloc(16), len: 16 });
      r.add(0);
    }],
    ['a device-readable descriptor after a device-writable one', 'INCORRECT_ORDER', (h, r) => {
      r.setDesc(0, { addr: h.alloc(16), len: 16, flags: WRITE | NEXT, next: 1 });
      r.setDesc(1, { addr: h.alloc(16), len: 16 });
      r.add(0);
    }],
    ['a readable entry in an indirect table after a writable direct descriptor', 'INCORRECT_ORDER', (h, r) => {
      r.setDesc(0, { addr: h.alloc(16), len: 16, flags: WRITE | NEXT, next: 1 });
      r.setDesc(1, { addr: table(h, 1), len: 16, flags: INDIRECT });
      r.add(0);
    }],
    ['a chain of 2^32 bytes', 'CHAIN_TOO_LONG', (_h, r) => {
      r.setDesc(0, { addr: 0x1000, len: 0x8000_0000, flags: NEXT, next: 1 });
      r.setDesc(1, { addr: 0x1000, len: 0x8000_0000 });
      r.add(0);
    }],
    ['a buffer outside RAM', 'UNREACHABLE_BUFFER', (_h, r) => {
      r.setDesc(0, { addr: RAM_BYTES, len: 16 });
      r.add(0);
    }],
    ['a buffer running past the end of RAM', 'UNREACHABLE_BUFFER', (_h, r) => {
      r.setDesc(0, { addr: RAM_BYTES - 8, len: 16, flags: WRITE });
      r.add(0);
    }],
    ['a buffer above 2^53', 'UNREACHABLE_BUFFER', (_h, r) => {
      r.setDesc(0, { addr: 2n ** 60n + 0x1000n, len: 16 });
      r.add(0);
    }],
    ['a buffer wrapping past 2^64', 'UNREACHABLE_BUFFER', (_h, r) => {
      r.setDesc(0, { addr: 2n ** 64n - 8n, len: 0x1008 });
      r.add(0);
    }],
    ['an indirect table outside RAM', 'UNREACHABLE_BUFFER', (_h, r) => {
      r.setDesc(0, { addr: RAM_BYTES + 0x1000, len: 32, flags: INDIRECT });
      r.add(0);
    }],
  ];

  it.each(cases)('%s', (_name, reason, setup, opts) => {
    const h = new Host();
    const sink = new SinkDevice(h.ctx());
    const { drv, ring } = bringUp(h, sink, { features: opts?.noIndirect ? acceptAll(sink, F.INDIRECT_DESC) : acceptAll(sink) });
    setup(h, ring);
    expect(() => {
      drv.kick();
      h.run();
    }).not.toThrow();
    expect(drv.status & STATUS.DEVICE_NEEDS_RESET).toBe(STATUS.DEVICE_NEEDS_RESET);
    expect(drv.t.interruptStatus & VIRTIO_MMIO_INT_CONFIG).toBe(VIRTIO_MMIO_INT_CONFIG);
    expect(h.delivered).toEqual([VECTOR.LINE_BASE + MMIO_LINE]);
    expect(sink.report().errors.map((e) => e.reason)).toEqual([reason]);
    expect(sink.served).toHaveLength(0);
    expect(ring.usedIdx).toBe(0);
  });

  it('a broken device ignores further kicks until reset, then works again', () => {
    const h = new Host();
    const sink = new SinkDevice(h.ctx());
    const { drv, ring } = bringUp(h, sink);
    ring.add(ring.size); // bad head
    drv.kick();
    h.run();
    expect(drv.status & STATUS.DEVICE_NEEDS_RESET).toBeTruthy();
    drv.kick();
    h.run();
    expect(sink.report().errors).toHaveLength(1);

    const again = bringUp(h, sink);
    expect(again.drv.status & STATUS.DEVICE_NEEDS_RESET).toBe(0);
    again.ring.setDesc(0, { addr: h.alloc(16), len: 16 });
    again.ring.add(0);
    again.drv.kick();
    h.run();
    expect(again.ring.usedIdx).toBe(1);
  });
});

describe('chain walker: valid chains', () => {
  it('accepts a chain exactly as long as the queue', () => {
    const { h, ring, q } = bareQueue(4);
    for (let i = 0; i < 4; i++) ring.setDesc(i, { addr: h.alloc(8), len: 8, flags: i < 3 ? NEXT : 0, next: i + 1 });
    ring.add(0);
    expect(popChain(q).readable).toHaveLength(4);
  });

  it('accepts an indirect table longer than the queue, after direct descriptors, and ignores WRITE on the table descriptor', () => {
    const { h, ring, q } = bareQueue(4);
    q.indirectDesc = true;
    const t = h.alloc(8 * 16);
    for (let i = 0; i < 8; i++) writeDesc(h.mem, t, i, { addr: h.alloc(32), len: 32, flags: (i >= 4 ? WRITE : 0) | (i < 7 ? NEXT : 0), next: i + 1 });
    ring.setDesc(2, { addr: h.alloc(16), len: 16, flags: NEXT, next: 3 });
    ring.setDesc(3, { addr: t, len: 8 * 16, flags: INDIRECT | WRITE });
    ring.add(2);
    const c = popChain(q);
    expect(c.head).toBe(2);
    expect(c.readable.map((s) => s.len)).toEqual([16, 32, 32, 32, 32]);
    expect(c.writable.map((s) => s.len)).toEqual([32, 32, 32, 32]);
    expect([c.readableBytes, c.writableBytes]).toEqual([144, 128]);
  });

  it('reads the indirect table once, so a driver rewriting it mid-flight changes nothing already popped', () => {
    const { h, ring, q } = bareQueue(4);
    q.indirectDesc = true;
    const t = h.alloc(16);
    const buf = h.alloc(64);
    writeDesc(h.mem, t, 0, { addr: buf, len: 64 });
    ring.setDesc(0, { addr: t, len: 16, flags: INDIRECT });
    ring.add(0);
    const c = popChain(q);
    writeDesc(h.mem, t, 0, { addr: 0, len: 4 });
    expect(c.readable).toMatchObject([{ addr: buf, len: 64 }]);
  });

  it('moves exactly the bytes asked for, by words or bytes, whatever the size, the alignment or the buffer', () => {
    const h = new Host();
    const dma = new DeviceDma(h.mem, h.space);
    const ram = h.mem.u8;
    // Two device buffers in turn (the word view of the last one is kept), one of them a view at an odd offset.
    const bufs = [new Uint8Array(1024), new Uint8Array(new ArrayBuffer(1030), 3, 1024)];
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) & 0xff;
    for (const n of [4, 8, 12, 60, 100, 511, 512, 700]) {
      for (const [k, off, pos] of [[0, 0x1_0000, 0], [1, 0x1_0000, 1], [0, 0x1_0001, 4], [1, 0x1_0000, 5], [0, 0x1_0004, 8]] as const) {
        const buf = bufs[k]!;
        for (let i = 0; i < 1024; i++) buf[i] = next();
        for (let i = 0; i < 2048; i++) ram[0x1_0000 + i] = next();
        const ramBefore = ram.slice(0x1_0000, 0x1_0000 + 2048);
        const bufBefore = buf.slice();
        dma.copy(off, pos, n, buf, DMA_READ);
        expect([...buf]).toEqual([...bufBefore.slice(0, pos), ...ram.slice(off, off + n), ...bufBefore.slice(pos + n)]);
        for (let i = 0; i < 1024; i++) buf[i] = next();
        dma.copy(off, pos, n, buf, DMA_WRITE);
        const at = off - 0x1_0000;
        expect([...ram.slice(0x1_0000, 0x1_0000 + 2048)]).toEqual([...ramBefore.slice(0, at), ...buf.slice(pos, pos + n), ...ramBefore.slice(at + n)]);
      }
    }
  });

  it('copies across segment boundaries in both directions and counts the exact bytes written', () => {
    const { h, ring, q, dma } = bareQueue(8);
    const r = [h.alloc(3), h.alloc(5), h.alloc(8)];
    const w = [h.alloc(2), h.alloc(7)];
    h.put(r[0]!, Uint8Array.of(1, 2, 3));
    h.put(r[1]!, Uint8Array.of(4, 5, 6, 7, 8));
    h.put(r[2]!, Uint8Array.of(9, 10, 11, 12, 13, 14, 15, 16));
    ring.setDesc(0, { addr: r[0]!, len: 3, flags: NEXT, next: 1 });
    ring.setDesc(1, { addr: r[1]!, len: 5, flags: NEXT, next: 2 });
    ring.setDesc(2, { addr: r[2]!, len: 8, flags: NEXT, next: 3 });
    ring.setDesc(3, { addr: w[0]!, len: 2, flags: WRITE | NEXT, next: 4 });
    ring.setDesc(4, { addr: w[1]!, len: 7, flags: WRITE });
    ring.add(0);
    const c = popChain(q);

    const dst = new Uint8Array(10);
    expect(c.read(2, dst)).toBe(10);
    expect([...dst]).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(c.read(14, new Uint8Array(8))).toBe(2); // short at the end of the readable part

    expect(c.write(1, Uint8Array.of(0xa, 0xb, 0xc, 0xd))).toBe(4);
    expect([...h.get(w[0]!, 2)]).toEqual([0, 0xa]);
    expect([...h.get(w[1]!, 3)]).toEqual([0xb, 0xc, 0xd]);
    expect(c.write(8, Uint8Array.of(1, 2, 3))).toBe(1);
    expect(c.written).toBe(5);
    expect([dma.readBytes, dma.writtenBytes]).toEqual([12, 5]);
  });
});

describe('avail ring', () => {
  it('reads avail.idx again only once the entries it announced are taken, as QEMU does', () => {
    const { h, ring, q } = bareQueue(4);
    for (let i = 0; i < 2; i++) ring.setDesc(i, { addr: h.alloc(4), len: 4, flags: WRITE });
    ring.add(0);
    ring.add(1);
    expect(popChain(q).head).toBe(0);
    // The driver breaks the ring: the entry already announced is still taken, the jump is found at the next read.
    ring.setAvailIdx(2 + q.size + 1);
    expect(popChain(q).head).toBe(1);
    const r = q.pop();
    expect(r).toBeInstanceOf(QueueError);
    expect((r as QueueError).reason).toBe('AVAIL_IDX_OUT_OF_RANGE');
  });
});

describe('used ring', () => {
  it('wraps used idx and avail idx across 65535 -> 0, filling slots in ring order', () => {
    const { h, ring, q } = bareQueue(4);
    for (let i = 0; i < 4; i++) ring.setDesc(i, { addr: h.alloc(4), len: 4, flags: WRITE });
    const seen: number[] = [];
    for (let n = 0; n < 65540; n++) {
      ring.add(n % 4);
      const c = popChain(q);
      c.write(0, Uint8Array.of(n & 0xff));
      q.push(c);
      if (n >= 65533) seen.push(ring.usedIdx);
    }
    expect(seen).toEqual([65534, 65535, 0, 1, 2, 3, 4]);
    expect(q.nextAvail).toBe(4);
    // Entry 65539 went to slot 65539 % 4 = 3 with head 3 and used length 1.
    expect(ring.usedElem(3)).toEqual({ id: 3, len: 1 });
  });

  it('writes the used element before used.idx and reports exactly the bytes written', () => {
    const { h, ring, q } = bareQueue(4);
    ring.setDesc(1, { addr: h.alloc(512), len: 512, flags: WRITE });
    ring.add(1);
    const c = popChain(q);
    c.write(0, new Uint8Array(100));
    q.push(c);
    expect(ring.usedIdx).toBe(1);
    expect(ring.usedElem(0)).toEqual({ id: 1, len: 100 });
  });
});

describe('notification suppression', () => {
  function served(q: SplitQueue, ring: TestRing, h: Host, n: number): void {
    for (let i = 0; i < n; i++) {
      ring.setDesc(i % ring.size, { addr: h.alloc(4), len: 4, flags: WRITE });
      ring.add(i % ring.size);
      q.push(popChain(q));
    }
  }

  it('with EVENT_IDX interrupts only when used idx passes used_event (vring_need_event)', () => {
    const { h, ring, q } = bareQueue(8);
    q.eventIdx = true;
    ring.usedEvent = 2;
    const decisions: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      served(q, ring, h, 1);
      decisions.push(q.needsInterrupt());
    }
    // used idx 1, 2: not yet; 3 passes used_event 2; 4: used_event not moved, no more.
    expect(decisions).toEqual([false, false, true, false]);
    served(q, ring, h, 2);
    ring.usedEvent = 4; // a batch that crosses used_event still interrupts once
    expect(q.needsInterrupt()).toBe(true);
  });

  it('with EVENT_IDX ignores VIRTQ_AVAIL_F_NO_INTERRUPT', () => {
    const { h, ring, q } = bareQueue(4);
    q.eventIdx = true;
    ring.availFlags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    ring.usedEvent = 0;
    served(q, ring, h, 1);
    expect(q.needsInterrupt()).toBe(true);
  });

  it('without EVENT_IDX honours VIRTQ_AVAIL_F_NO_INTERRUPT, and never interrupts for nothing', () => {
    const { h, ring, q } = bareQueue(4);
    served(q, ring, h, 1);
    expect(q.needsInterrupt()).toBe(true);
    expect(q.needsInterrupt()).toBe(false);
    ring.availFlags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    served(q, ring, h, 1);
    expect(q.needsInterrupt()).toBe(false);
  });

  it('without EVENT_IDX sets VIRTQ_USED_F_NO_NOTIFY while polling and clears it after, re-checking the ring', () => {
    const { h, ring, q } = bareQueue(4);
    q.disableNotification();
    expect(ring.usedFlags).toBe(VIRTQ_USED_F_NO_NOTIFY);
    ring.setDesc(0, { addr: h.alloc(4), len: 4 });
    ring.add(0);
    expect(q.enableNotification()).toBe(true); // a buffer arrived while kicks were off
    expect(ring.usedFlags).toBe(0);
    popChain(q);
    expect(q.enableNotification()).toBe(false);
  });

  it('with EVENT_IDX publishes avail_event = next avail when re-enabling, and never touches used.flags', () => {
    const { h, ring, q } = bareQueue(4);
    q.eventIdx = true;
    q.disableNotification();
    expect(ring.usedFlags).toBe(0);
    ring.setDesc(0, { addr: h.alloc(4), len: 4 });
    ring.add(0);
    ring.add(0);
    popChain(q);
    popChain(q);
    expect(q.enableNotification()).toBe(false);
    expect(ring.availEvent).toBe(2);
  });

  it('end to end: with EVENT_IDX and used_event far ahead, completions raise no interrupt until it is reached', () => {
    const h = new Host();
    const sink = new SinkDevice(h.ctx());
    const { drv, ring } = bringUp(h, sink, { queueSize: 8 });
    ring.usedEvent = 2;
    for (let i = 0; i < 2; i++) {
      ring.setDesc(i, { addr: h.alloc(4), len: 4 });
      ring.add(i);
    }
    drv.kick();
    h.run();
    expect(ring.usedIdx).toBe(2);
    expect(h.delivered).toHaveLength(0);
    ring.setDesc(2, { addr: h.alloc(4), len: 4 });
    ring.add(2);
    drv.kick();
    h.run();
    expect(h.delivered).toEqual([VECTOR.LINE_BASE + MMIO_LINE]);
    expect(sink.report().interrupts.used).toBe(1);
  });
});

/** An IOMMU-like space: 4 KiB IOVA pages mapped to arbitrary guest-physical pages, with a generation. */
class PagedSpace implements AddressSpace {
  generation = 0;
  resolves = 0;
  readonly pages = new Map<number, number>();
  constructor(private readonly h: Host) {}
  resolve(addr: Addr, len: number, access: number): number {
    this.resolves++;
    if (typeof addr === 'bigint') return -1;
    const gpa = this.pages.get(Math.floor(addr / 4096));
    if (gpa === undefined || (addr % 4096) + len > 4096) return -1;
    return this.h.space.resolve(gpa + (addr % 4096), len, access);
  }
  read(): boolean {
    return false;
  }
  write(): boolean {
    return false;
  }
  write32(): boolean {
    return false;
  }
}

/** A queue of 4 whose rings sit at IOVA 0x10_0000 (GPA 0x1_0000 up) and whose buffer page 0x20_0000 is mapped 1:1. */
function pagedQueue() {
  const h = new Host();
  const space = new PagedSpace(h);
  for (let i = 0; i < 4; i++) space.pages.set(0x100 + i, 0x1_0000 + i * 4096);
  space.pages.set(0x200, 0x20_0000);
  const q = new SplitQueue(0, 4, new DeviceDma(h.mem, space));
  q.setAddressWord('desc', false, 0x10_0000);
  q.setAddressWord('driver', false, 0x10_1000);
  q.setAddressWord('device', false, 0x10_2000);
  q.enable();
  return { h, space, q };
}

describe('ring areas through a translating address space', () => {
  it('reads rings spread over discontiguous pages and re-resolves them when the generation changes', () => {
    const h = new Host();
    const space = new PagedSpace(h);
    // Queue of 512: the desc table spans two IOVA pages, backed by GPA pages in reverse order.
    const iova = 0x40_0000;
    // The used ring (6 + 8 * 512 bytes) spills into a fifth page.
    const gpaPages = [0x30_0000, 0x2f_0000, 0x2e_0000, 0x2d_0000, 0x31_0000];
    gpaPages.forEach((g, i) => space.pages.set(iova / 4096 + i, g));
    const dma = new DeviceDma(h.mem, space);
    const q = new SplitQueue(0, 512, dma);
    const descIova = iova;
    const availIova = iova + 0x2000;
    const usedIova = iova + 0x3000;
    q.setAddressWord('desc', false, descIova);
    q.setAddressWord('driver', false, availIova);
    q.setAddressWord('device', false, usedIova);
    expect(q.enable()).toBeUndefined();
    // Driver writes descriptor 300 (second desc page) and the avail ring, through its own view of the mapping.
    const gpaOf = (a: number) => space.pages.get(Math.floor(a / 4096))! + (a % 4096);
    const buf = 0x20_0000;
    space.pages.set(0x50_0000 / 4096, buf);
    writeDesc(h.mem, gpaOf(descIova + 300 * 16), 0, { addr: 0x50_0000, len: 64, flags: WRITE });
    h.mem.dv.setUint16(gpaOf(availIova + 4), 300, true);
    h.mem.dv.setUint16(gpaOf(availIova + 2), 1, true);
    const c = popChain(q);
    expect(c.head).toBe(300);
    c.write(0, Uint8Array.of(0xee));
    expect(h.mem.u8[buf]).toBe(0xee);
    q.push(c);
    expect(h.mem.dv.getUint16(gpaOf(usedIova + 2), true)).toBe(1);

    // The used page moves: without a generation bump the device would keep writing the old page.
    const newUsed = 0x2c_0000;
    h.mem.u8.copyWithin(newUsed, gpaPages[3]!, gpaPages[3]! + 4096);
    space.pages.set(usedIova / 4096, newUsed);
    space.generation++;
    h.mem.dv.setUint16(gpaOf(availIova + 6), 300, true);
    h.mem.dv.setUint16(gpaOf(availIova + 2), 2, true);
    q.push(popChain(q));
    expect(h.mem.dv.getUint16(newUsed + 2, true)).toBe(2);
    expect(h.mem.dv.getUint16(gpaPages[3]! + 2, true)).toBe(1);

    // Unmapping the used ring is a driver error the device reports, not an exception.
    space.pages.delete(usedIova / 4096);
    space.generation++;
    const r = q.pop();
    expect(r).toBeInstanceOf(QueueError);
    expect((r as QueueError).reason).toBe('UNREACHABLE_RING');
  });

  it('translates a one-page buffer once at the pop, and again only after the space changed', () => {
    const { h, space, q } = pagedQueue();
    space.pages.set(0x201, 0x30_0000);
    writeDesc(h.mem, 0x1_0000, 0, { addr: 0x20_0010, len: 16, flags: NEXT, next: 1 });
    writeDesc(h.mem, 0x1_0000, 1, { addr: 0x20_0100, len: 8, flags: WRITE });
    h.mem.dv.setUint16(0x1_1000 + 2, 1, true);
    h.mem.u8.set([1, 2, 3, 4], 0x20_0010);
    const c = popChain(q);
    expect(c.readable[0]!.off).toBe(h.space.resolve(0x20_0010, 16, DMA_READ));
    const walked = space.resolves;
    const got = new Uint8Array(4);
    expect(c.read(0, got)).toBe(4);
    expect([...got]).toEqual([1, 2, 3, 4]);
    expect(c.write(0, Uint8Array.of(9))).toBe(1);
    expect(space.resolves).toBe(walked);
    expect(h.mem.u8[0x20_0100]).toBe(9);

    // The page moves under the buffer: the next write translates again and lands in the new page.
    space.pages.set(0x200, 0x30_0000);
    space.generation++;
    expect(c.write(1, Uint8Array.of(7))).toBe(1);
    expect(space.resolves).toBe(walked + 1);
    expect(h.mem.u8[0x30_0101]).toBe(7);
    expect(h.mem.u8[0x20_0101]).toBe(0);
  });

  it('marks a chain faulted when its buffer is unmapped after the pop', () => {
    const { h, space, q } = pagedQueue();
    writeDesc(h.mem, 0x1_0000, 0, { addr: 0x20_0000, len: 16, flags: WRITE });
    h.mem.dv.setUint16(0x1_1000 + 2, 1, true);
    const c = popChain(q);
    space.pages.delete(0x200);
    space.generation++;
    expect(c.write(0, new Uint8Array(16))).toBe(0);
    expect(c.faulted).toBe(true);
    expect(c.written).toBe(0);
  });
});

describe('queue setup', () => {
  it('refuses misaligned ring areas at enable: DEVICE_NEEDS_RESET, queue stays disabled, no interrupt before DRIVER_OK', () => {
    for (const [area, addr] of [
      ['desc', 0x1_0008],
      ['driver', 0x1_2001],
      ['device', 0x1_3002],
    ] as const) {
      const h = new Host();
      const sink = new SinkDevice(h.ctx());
      const drv = new MmioDriver(h, sink);
      drv.negotiate(acceptAll(sink));
      const q = sink.queues[0]!;
      q.setAddressWord('desc', false, 0x1_0000);
      q.setAddressWord('driver', false, 0x1_2000);
      q.setAddressWord('device', false, 0x1_3000);
      q.setAddressWord(area, false, addr);
      sink.enableQueue(0);
      expect(q.ready).toBe(false);
      expect(sink.status & STATUS.DEVICE_NEEDS_RESET).toBeTruthy();
      expect(sink.report().errors[0]!.reason).toBe('MISALIGNED_RING');
      expect(h.delivered).toHaveLength(0);
    }
  });

  it('accepts only power-of-two sizes up to the maximum, and nothing while enabled', () => {
    const { q } = bareQueue(4);
    q.disable();
    for (const bad of [0, 3, 8, 6, -4, 2.5]) {
      q.setSize(bad);
      expect(q.size).toBe(4);
    }
    q.setSize(2);
    expect(q.size).toBe(2);
    q.enable();
    q.setSize(1);
    q.setAddressWord('desc', true, 1);
    expect(q.size).toBe(2);
    expect(q.addr.desc).toBe(0x1_0000);
  });

  it('keeps a 64-bit ring address exactly from its two halves', () => {
    const h = new Host();
    const q = new SplitQueue(0, 4, new DeviceDma(h.mem, h.space));
    q.setAddressWord('desc', true, 0xffff_ffff);
    q.setAddressWord('desc', false, 0xffff_f000);
    expect(q.addr.desc).toBe(0xffff_ffff_ffff_f000n);
    expect([q.addressWord('desc', true), q.addressWord('desc', false)]).toEqual([0xffff_ffff, 0xffff_f000]);
  });

  it('reads and writes through the access type of each area', () => {
    const accesses: number[][] = [];
    const h = new Host();
    const spy: AddressSpace = {
      generation: 0,
      resolve: (a, l, acc) => (accesses.push([Number(a), acc]), h.space.resolve(a, l, acc)),
      read: () => false,
      write: () => false,
      write32: () => false,
    };
    const ring = new TestRing(h.mem, 4);
    const q = new SplitQueue(0, 4, new DeviceDma(h.mem, spy));
    q.setAddressWord('desc', false, ring.desc);
    q.setAddressWord('driver', false, ring.avail);
    q.setAddressWord('device', false, ring.used);
    q.enable();
    const [rb, wb] = [h.alloc(8), h.alloc(8)];
    ring.setDesc(0, { addr: rb, len: 8, flags: NEXT, next: 1 });
    ring.setDesc(1, { addr: wb, len: 8, flags: WRITE });
    ring.add(0);
    popChain(q);
    const accessOf = (a: number) => accesses.find(([x]) => x === a)?.[1];
    expect([accessOf(ring.desc), accessOf(ring.avail), accessOf(ring.used), accessOf(rb), accessOf(wb)]).toEqual([DMA_READ, DMA_READ, DMA_WRITE, DMA_READ, DMA_WRITE]);
  });
});

describe('hot path', () => {
  it('reuses chains and their segments once warm: the same objects come back after a push', () => {
    const { h, ring, q } = bareQueue(4);
    ring.setDesc(0, { addr: h.alloc(8), len: 8, flags: NEXT, next: 1 });
    ring.setDesc(1, { addr: h.alloc(8), len: 8, flags: WRITE });
    ring.add(0);
    const first = popChain(q);
    const seg = first.readable[0];
    q.push(first);
    ring.add(0);
    const second = popChain(q);
    expect(second).toBe(first);
    expect(second.readable[0]).toBe(seg);
    expect([second.readableBytes, second.writableBytes, second.written]).toEqual([8, 8, 0]);
  });
});
