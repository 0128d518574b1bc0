import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VIRTQ_DESC_F } from '../../abi/ring.ts';
import { DescriptorChain, DeviceDma, QueueError, SplitQueue } from '../../platform/virtio/queue.ts';
import { type Desc, Host, RAM_BYTES, TestRing, writeDesc } from './virtio-harness.ts';

const { NEXT, WRITE, INDIRECT } = VIRTQ_DESC_F;
const SIZE = 8;
const BUF = 0x20_0000;
const TABLE = 0x30_0000;

/** Descriptors drawn from values near every boundary the walker checks. */
const desc = (maxNext: number) =>
  fc.record({
    addr: fc.constantFrom<number | bigint>(BUF, BUF + 0x1000, RAM_BYTES, RAM_BYTES - 8, 2n ** 64n - 8n),
    len: fc.constantFrom(0, 1, 16, 48, 24, 0x8000_0000, 0xffff_ffff),
    flags: fc.integer({ min: 0, max: 7 }),
    next: fc.integer({ min: 0, max: maxNext }),
  });

type Verdict = { reason: string } | { readable: number[]; writable: number[] };

/** The rules of §2.7.5 written as plainly as possible, over the descriptors as generated. */
function reference(ring: Desc[], table: Desc[], head: number, indirectOk: boolean): Verdict {
  const reachable = (d: Desc) => d.len === 0 || (typeof d.addr === 'number' && d.addr + d.len <= RAM_BYTES);
  if (head >= SIZE) return { reason: 'HEAD_OUT_OF_RANGE' };
  const segs: Desc[] = [];
  let descs = ring;
  let inTable = false;
  let i = head;
  let hops = 0;
  let total = 0;
  for (;;) {
    if (++hops > descs.length) return { reason: 'LOOPED_DESCRIPTOR' };
    const d = descs[i]!;
    const flags = d.flags ?? 0;
    if (flags & INDIRECT) {
      if (!indirectOk) return { reason: 'INDIRECT_NOT_NEGOTIATED' };
      if (inTable) return { reason: 'NESTED_INDIRECT' };
      if (flags & NEXT) return { reason: 'INDIRECT_WITH_NEXT' };
      if (d.len === 0 || d.len % 16 || d.len / 16 > 0xffff) return { reason: 'INDIRECT_TABLE_SIZE' };
      // Only the table at TABLE exists; any other address holds zeros or is unreachable.
      if (!reachable(d)) return { reason: 'UNREACHABLE_BUFFER' };
      descs = Array.from({ length: d.len / 16 }, (_, k) => (d.addr === TABLE ? table[k] : undefined) ?? { addr: 0, len: 0 });
      inTable = true;
      i = hops = 0;
      continue;
    }
    if (!(flags & WRITE) && segs.some((s) => (s.flags ?? 0) & WRITE)) return { reason: 'INCORRECT_ORDER' };
    total += d.len;
    if (total >= 2 ** 32) return { reason: 'CHAIN_TOO_LONG' };
    segs.push(d);
    if (!(flags & NEXT)) break;
    i = d.next ?? 0;
    if (i >= descs.length) return { reason: 'NEXT_OUT_OF_RANGE' };
  }
  const readable = segs.filter((s) => !((s.flags ?? 0) & WRITE));
  const writable = segs.filter((s) => (s.flags ?? 0) & WRITE);
  if (![...readable, ...writable].every(reachable)) return { reason: 'UNREACHABLE_BUFFER' };
  return { readable: readable.map((s) => s.len), writable: writable.map((s) => s.len) };
}

describe('chain walker against a reference model', () => {
  it('never throws and reaches the same verdict for any descriptor table', () => {
    fc.assert(
      fc.property(
        fc.array(desc(SIZE + 1), { minLength: SIZE, maxLength: SIZE }),
        fc.array(desc(5), { minLength: 4, maxLength: 4 }),
        fc.integer({ min: 0, max: SIZE + 1 }),
        fc.boolean(),
        fc.boolean(),
        (ring, table, head, indirectOk, pointAtTable) => {
          const h = new Host();
          const r = new TestRing(h.mem, SIZE);
          // Make indirect descriptors point at the real table often enough to walk it.
          const ringDescs = ring.map((d) => ((d.flags & INDIRECT) && pointAtTable ? { ...d, addr: TABLE } : d));
          ringDescs.forEach((d, i) => r.setDesc(i, d));
          table.forEach((d, i) => writeDesc(h.mem, TABLE, i, d));
          r.add(head);
          const q = new SplitQueue(0, SIZE, new DeviceDma(h.mem, h.space));
          q.setAddressWord('desc', false, r.desc);
          q.setAddressWord('driver', false, r.avail);
          q.setAddressWord('device', false, r.used);
          q.enable();
          q.indirectDesc = indirectOk;
          let got: Verdict | undefined;
          expect(() => {
            const c = q.pop();
            if (c instanceof QueueError) got = { reason: c.reason };
            else if (c instanceof DescriptorChain) got = { readable: c.readable.map((s) => s.len), writable: c.writable.map((s) => s.len) };
          }).not.toThrow();
          expect(got).toEqual(reference(ringDescs, table, head, indirectOk));
        },
      ),
      { numRuns: 3000, seed: 20240501 },
    );
  });
});
