import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE, PageAllocator } from '../../kernel/page-alloc.ts';

describe('PageAllocator', () => {
  it('allocates from the highest fitting address, honours the address limit and alignment', () => {
    const pa = new PageAllocator([{ gpa: 0, size: 64 * PAGE_SIZE }]);
    expect(pa.alloc(1)).toBe(63 * PAGE_SIZE);
    expect(pa.alloc(4, Number.MAX_SAFE_INTEGER, 4)).toBe(56 * PAGE_SIZE);
    expect(pa.alloc(1)).toBe(62 * PAGE_SIZE);
    expect(pa.alloc(60, 64 * PAGE_SIZE - 1)).toBe(-1);
    expect(pa.alloc(2, 10 * PAGE_SIZE - 1)).toBe(8 * PAGE_SIZE);
    expect(pa.alloc(3, Number.MAX_SAFE_INTEGER, 8)).toBe(48 * PAGE_SIZE);
  });

  it('spans RAM regions with a hole, prefers memory above 4 GiB and never allocates across the hole', () => {
    const pa = new PageAllocator([
      { gpa: 0, size: 4 * PAGE_SIZE },
      { gpa: 2 ** 32, size: 4 * PAGE_SIZE },
    ]);
    expect(pa.alloc(8)).toBe(-1);
    expect(pa.alloc(4)).toBe(2 ** 32);
    expect(pa.alloc(1, 2 ** 32 - 1)).toBe(3 * PAGE_SIZE);
    expect(pa.alloc(3)).toBe(0);
    expect(pa.available).toBe(0);
  });

  it('reserve carves a range out and a double free is caught', () => {
    const pa = new PageAllocator([{ gpa: 0, size: 16 * PAGE_SIZE }]);
    pa.reserve(PAGE_SIZE + 10, 2 * PAGE_SIZE);
    expect(pa.available).toBe(13);
    const a = pa.alloc(1);
    pa.freePagesAt(a, 1);
    expect(() => pa.freePagesAt(a, 1)).toThrow(/double free/);
  });

  it('keeps exact accounting and never hands out a page twice (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 9 }), fc.nat()), { maxLength: 200 }), (ops) => {
        const pa = new PageAllocator([{ gpa: 0, size: 256 * PAGE_SIZE }]);
        const live: { gpa: number; n: number }[] = [];
        const owner = new Map<number, number>();
        for (const [isAlloc, n, pick] of ops) {
          if (isAlloc || live.length === 0) {
            const gpa = pa.alloc(n);
            if (gpa < 0) continue;
            for (let p = 0; p < n; p++) {
              expect(owner.has(gpa / PAGE_SIZE + p)).toBe(false);
              owner.set(gpa / PAGE_SIZE + p, 1);
            }
            live.push({ gpa, n });
          } else {
            const [{ gpa, n: count }] = live.splice(pick % live.length, 1) as [{ gpa: number; n: number }];
            pa.freePagesAt(gpa, count);
            for (let p = 0; p < count; p++) owner.delete(gpa / PAGE_SIZE + p);
          }
          expect(pa.available).toBe(256 - owner.size);
        }
      }),
    );
  });
});
