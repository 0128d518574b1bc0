// copyBytes against a byte-by-byte reference: every size on both sides of the
// word path and of set(), every alignment, views with odd byte offsets, and
// shared as well as plain buffers alternating, so the view cache is exercised.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { copyBytes } from '../../abi/bytes.ts';

function filled(buffer: ArrayBufferLike, offset: number, length: number, seed: number): Uint8Array {
  const a = new Uint8Array(buffer, offset, length);
  for (let i = 0; i < length; i++) a[i] = (seed + i * 31) & 0xff;
  return a;
}

const side = fc.record({ shared: fc.boolean(), offset: fc.integer({ min: 0, max: 7 }), at: fc.integer({ min: 0, max: 40 }) });

describe('copyBytes', () => {
  it('copies exactly n bytes and nothing else, whatever the sizes, alignments and buffers', () => {
    fc.assert(
      fc.property(side, side, fc.integer({ min: 0, max: 300 }), (d, s, n) => {
        const room = 400;
        const src = filled(s.shared ? new SharedArrayBuffer(room + 8) : new ArrayBuffer(room + 8), s.offset, room, 7);
        const dst = filled(d.shared ? new SharedArrayBuffer(room + 8) : new ArrayBuffer(room + 8), d.offset, room, 101);
        const want = Uint8Array.from(dst);
        for (let i = 0; i < n; i++) want[d.at + i] = src[s.at + i]!;
        copyBytes(dst, d.at, src, s.at, n);
        expect(Array.from(dst)).toEqual(Array.from(want));
      }),
      { numRuns: 500 },
    );
  });

  it('keeps copying right when many buffers take turns', () => {
    const bufs = Array.from({ length: 5 }, (_, k) => filled(new ArrayBuffer(64), 0, 64, k * 17));
    for (let round = 0; round < 20; round++) {
      const dst = bufs[round % 5]!;
      const src = bufs[(round * 3 + 1) % 5]!;
      if (dst === src) continue;
      const want = Uint8Array.from(dst);
      want.set(src.subarray(8, 40), 16);
      copyBytes(dst, 16, src, 8, 32);
      expect(Array.from(dst)).toEqual(Array.from(want));
    }
  });
});
