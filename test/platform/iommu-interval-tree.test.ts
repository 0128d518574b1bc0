// The interval tree that holds a domain's mappings: exact answers against a
// plain array, for frame numbers of a 4 KiB granule and for byte addresses up
// to 2^64 - 1, and the AVL height bound.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Addr, toAddr, toBig } from '../../abi/addr.ts';
import { type Frame, IntervalTree, frameOf } from '../../platform/iommu/interval-tree.ts';

const MAX = 2n ** 64n - 1n;

/** The reference: disjoint intervals in an array, searched linearly. */
class ArrayModel {
  readonly items: { start: bigint; end: bigint; value: number }[] = [];

  insert(start: bigint, end: bigint, value: number): boolean {
    if (end < start || this.items.some((i) => i.start <= end && i.end >= start)) return false;
    this.items.push({ start, end, value });
    this.items.sort((a, b) => (a.start < b.start ? -1 : 1));
    return true;
  }

  remove(start: bigint): number | undefined {
    const at = this.items.findIndex((i) => i.start === start);
    return at < 0 ? undefined : this.items.splice(at, 1)[0]!.value;
  }

  find(x: bigint): number | undefined {
    return this.items.find((i) => i.start <= x && x <= i.end)?.value;
  }

  overlapping(start: bigint, end: bigint): number[] {
    return this.items.filter((i) => i.start <= end && i.end >= start).map((i) => i.value);
  }
}

/** Every interval overlapping [start, end], walked the way UNMAP walks them: first overlap, then next. */
function overlapping<V>(t: IntervalTree<V>, start: Frame, end: Frame): V[] {
  const out: V[] = [];
  for (let i = t.firstOverlap(start, end); i !== undefined && i.start <= end; i = t.next(i)) out.push(i.value);
  return out;
}

/** Keys that cluster, so that overlaps and neighbours are common: near 0, around 2^53, at the top of 2^64. */
const key = fc.oneof(
  fc.bigInt({ min: 0n, max: 64n }),
  fc.bigInt({ min: 2n ** 53n - 32n, max: 2n ** 53n + 32n }),
  fc.bigInt({ min: MAX - 64n, max: MAX }),
);
const op = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), a: key, len: fc.bigInt({ min: 0n, max: 8n }) }),
  fc.record({ kind: fc.constant('remove' as const), a: key }),
  fc.record({ kind: fc.constant('find' as const), a: key }),
  fc.record({ kind: fc.constant('overlap' as const), a: key, len: fc.bigInt({ min: 0n, max: 40n }) }),
);

describe('IntervalTree', () => {
  it('answers like an array of disjoint intervals, at any width up to 2^64 - 1', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const t = new IntervalTree<number>();
        const m = new ArrayModel();
        ops.forEach((o, n) => {
          const a = toAddr(o.a);
          switch (o.kind) {
            case 'insert': {
              const end = o.a + o.len > MAX ? MAX : o.a + o.len;
              expect(t.insert(a, toAddr(end), n)).toBe(m.insert(o.a, end, n));
              t.validate();
              break;
            }
            case 'remove':
              expect(t.remove(a)?.value).toBe(m.remove(o.a));
              t.validate();
              break;
            case 'find':
              expect(t.find(a)?.value).toBe(m.find(o.a));
              break;
            case 'overlap': {
              const end = o.a + o.len > MAX ? MAX : o.a + o.len;
              expect(overlapping(t, a, toAddr(end))).toEqual(m.overlapping(o.a, end));
              expect(t.firstOverlap(a, toAddr(end))?.value).toBe(m.overlapping(o.a, end)[0]);
            }
          }
        });
        expect(t.size).toBe(m.items.length);
        expect([...t].map((i) => [toBig(i.start), toBig(i.end), i.value])).toEqual(m.items.map((i) => [i.start, i.end, i.value]));
        // Keys stay canonical: a number below 2^53, a bigint from there on.
        for (const i of t) for (const k of [i.start, i.end]) expect(typeof k).toBe(toBig(k) < 2n ** 53n ? 'number' : 'bigint');
      }),
      { numRuns: 300 },
    );
  });

  it('keeps every stored height exact through thousands of inserts and removals in random order', () => {
    const t = new IntervalTree<number>();
    let seed = 1;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    const live = new Set<number>();
    for (let step = 0; step < 20_000; step++) {
      const k = next() % 5000;
      if (live.has(k)) {
        expect(t.remove(k)?.value).toBe(k);
        live.delete(k);
      } else {
        expect(t.insert(k, k, k)).toBe(true);
        live.add(k);
      }
      if (step % 97 === 0) t.validate();
    }
    t.validate();
    expect(t.size).toBe(live.size);
  });

  it('stays balanced: height within 1.44 log2(n + 2) after ascending inserts and removals', () => {
    const t = new IntervalTree<number>();
    const n = 4096;
    for (let i = 0; i < n; i++) t.insert(i * 2, i * 2, i);
    expect(t.height).toBeLessThanOrEqual(Math.floor(1.44 * Math.log2(n + 2)));
    for (let i = 0; i < n; i += 2) t.remove(i * 2);
    expect(t.size).toBe(n / 2);
    expect(t.height).toBeLessThanOrEqual(Math.floor(1.44 * Math.log2(n / 2 + 2)));
    expect(t.find(2)?.value).toBe(1);
    expect(t.find(0)).toBeUndefined();
  });

  it('refuses an interval that overlaps, or that ends before it starts, and changes nothing', () => {
    const t = new IntervalTree<string>();
    expect(t.insert(10, 19, 'a')).toBe(true);
    expect(t.insert(19, 25, 'b')).toBe(false);
    expect(t.insert(0, 10, 'c')).toBe(false);
    expect(t.insert(5, 4, 'd')).toBe(false);
    expect(t.insert(20, 25, 'e')).toBe(true);
    expect([...t].map((i) => i.value)).toEqual(['a', 'e']);
  });

  it('holds the last byte of the 64-bit space as a key, beside its neighbour below', () => {
    const t = new IntervalTree<string>();
    expect(t.insert(MAX - 0xfffn, MAX, 'top')).toBe(true);
    expect(t.insert(MAX - 0x1fffn, MAX - 0x1000n, 'below')).toBe(true);
    expect(t.find(MAX)?.value).toBe('top');
    expect(t.find(MAX - 0x1000n)?.value).toBe('below');
    expect(t.find(2n ** 53n)).toBeUndefined();
    expect(t.remove(MAX - 0xfffn)?.value).toBe('top');
    expect(t.find(MAX)).toBeUndefined();
  });
});

describe('frames', () => {
  it('convert byte addresses to 4 KiB frame numbers, exactly at the edges', () => {
    const cases: [Addr, Addr][] = [
      [0, 0],
      [0xfff, 0],
      [0x1000, 1],
      [2 ** 53 - 1, 2 ** 41 - 1],
      [2n ** 53n, 2 ** 41],
      [MAX, 2 ** 52 - 1],
    ];
    for (const [addr, frame] of cases) expect(frameOf(addr, 12)).toBe(frame);
    expect(frameOf(MAX, 0)).toBe(MAX);
    expect(frameOf(MAX, 1)).toBe(2n ** 63n - 1n);
  });
});
