// The IOVA benchmark's arithmetic: nearest-rank percentiles, the workload's
// view of free space (failed-although-free) and the fragmentation index.
import { describe, expect, it } from 'vitest';
import { BITMAP_PFNS, fragmentationIndex, largestAlignedIn, packRange, SpaceView, unusableIndex } from '../../bench/iova/space.ts';
import { median, medianSummary, percentile, summarize } from '../../bench/iova/stats.ts';

describe('latency statistics', () => {
  it('percentiles are nearest-rank on known inputs', () => {
    const s = Float64Array.from({ length: 1000 }, (_, i) => i + 1); // 1 .. 1000
    expect(percentile(s, 50)).toBe(500);
    expect(percentile(s, 99)).toBe(990);
    expect(percentile(s, 99.9)).toBe(999);
    expect(percentile(s, 100)).toBe(1000);
    expect(percentile(s, 0)).toBe(1);
    const ten = Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(percentile(ten, 50)).toBe(5);
    expect(percentile(ten, 90)).toBe(9);
    expect(percentile(ten, 99)).toBe(10);
    expect(percentile(Float64Array.of(7), 99.9)).toBe(7);
  });

  it('summarize sorts, averages and picks the ladder; only the first n samples count', () => {
    const xs = Float64Array.from({ length: 10_000 }, (_, i) => (i * 7919) % 10_000); // 0 .. 9999 shuffled
    const s = summarize(xs);
    expect(s).toEqual({ count: 10_000, mean: 4999.5, p50: 4999, p90: 8999, p99: 9899, p999: 9989, p9999: 9998, max: 9999 });
    const part = summarize(Float64Array.of(3, 1, 2, 1000), 3);
    expect(part).toMatchObject({ count: 3, mean: 2, p50: 2, max: 3 });
    expect(summarize(new Float64Array(0)).count).toBe(0);
  });

  it('the median of repetitions is taken per field', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    const a = summarize(Float64Array.of(1, 2, 3));
    const b = summarize(Float64Array.of(10, 20, 30));
    const c = summarize(Float64Array.of(5, 6, 100));
    expect(medianSummary([a, b, c])).toMatchObject({ mean: 20, p50: 6, max: 30 });
  });
});

describe('the workload view of the space', () => {
  it('largestAlignedIn finds the largest naturally aligned power-of-two block', () => {
    expect(largestAlignedIn(1, 0xfffff)).toBe(0x80000);
    expect(largestAlignedIn(0, 0xfffff)).toBe(0x100000);
    expect(largestAlignedIn(5, 7)).toBe(2); // [6, 7]
    expect(largestAlignedIn(3, 5)).toBe(2); // [4, 5]
    expect(largestAlignedIn(3, 4)).toBe(1);
    expect(largestAlignedIn(9, 8)).toBe(0);
    expect(largestAlignedIn(2 ** 52 + 3, 2 ** 53 - 2)).toBe(2 ** 50); // 2^51 blocks start below or end above it
    expect(largestAlignedIn(2 ** 52, 2 ** 53 - 1)).toBe(2 ** 52);
  });

  it('an empty domain: total free and the index it reads with nothing allocated', () => {
    const v = new SpaceView(1, []);
    expect(v.free(0xfffff)).toEqual({ total: 0xfffff, largestAligned: 0x80000, usable: 0xfffff });
    expect(fragmentationIndex(v.free(0xfffff))).toBeCloseTo(0.5, 5);
    expect(fragmentationIndex({ total: 0, largestAligned: 0, usable: 0 })).toBe(0);
    expect(unusableIndex({ total: 0, largestAligned: 0, usable: 0 })).toBe(0);
    expect(v.free(2 ** 36 - 1)).toEqual({ total: 2 ** 36 - 1, largestAligned: 2 ** 35, usable: 2 ** 36 - 1 });
    // For 64-page requests only pfn 0's block [0, 63] is lost to the start pfn.
    expect(unusableIndex(v.free(0xfffff, 64))).toBeCloseTo(63 / 0xfffff, 12);
  });

  it('a failure is "although free" only when an aligned block of the rounded size is free under the limit', () => {
    // A 64-page domain [1, 63]: fill everything but [8, 11] and [13, 15].
    const v = new SpaceView(1, [{ lo: 40, hi: 63 }]);
    v.add(1, 1, 63);
    v.add(2, 2, 63);
    v.add(4, 4, 63);
    v.add(12, 1, 63);
    v.add(16, 16, 63);
    v.add(32, 8, 63);
    expect(v.invalid).toBe(0);
    expect(v.free(63)).toEqual({ total: 7, largestAligned: 4, usable: 7 }); // [8, 11]
    expect(v.free(63, 4).usable).toBe(4); // [8, 11]; [13, 15] holds no aligned 4
    expect(unusableIndex(v.free(63, 2))).toBeCloseTo(1 / 7, 10); // only pfn 13 is in no free aligned pair
    expect(v.fits(4, 63)).toBe(true);
    expect(v.fits(3, 63)).toBe(true); // rounded to 4
    expect(v.fits(5, 63)).toBe(false); // 8 aligned pages are not free, though 7 pages are
    expect(v.fits(4, 10)).toBe(false); // not under the limit
    expect(fragmentationIndex(v.free(63))).toBeCloseTo(1 - 4 / 7, 10);
    v.remove(12, 1);
    expect(v.free(63)).toEqual({ total: 8, largestAligned: 8, usable: 8 });
    expect(unusableIndex(v.free(63, 8))).toBe(0);
    expect(fragmentationIndex(v.free(63))).toBe(0);
    expect(v.fits(5, 63)).toBe(true);
  });

  it('flags allocations that overlap, break the limit or the alignment', () => {
    const v = new SpaceView(1, [{ lo: 0xfee00, hi: 0xfeeff }]);
    v.add(0xfee00, 1, 0xfffff); // on the reserved window
    v.add(0x100, 4, 0xfffff);
    v.add(0x102, 2, 0xfffff); // on a live range
    v.add(0x201, 2, 0xfffff); // misaligned
    v.add(0xffffe, 4, 0xfffff); // misaligned and above the limit
    v.add(0, 1, 0xfffff); // below the start pfn
    expect(v.invalid).toBe(5);
  });

  it('joins free space across the bitmap top and sees ranges above it', () => {
    const v = new SpaceView(1, [{ lo: BITMAP_PFNS - 16, hi: BITMAP_PFNS + 15 }]);
    const limit = 2 ** 22 - 1;
    // Free: [1, 2^20 - 17] and [2^20 + 16, 2^22 - 1].
    expect(v.free(limit)).toMatchObject({ total: limit - 32, largestAligned: 2 ** 21 });
    v.add(2 ** 21, 2 ** 20, limit); // [2^21, 3 * 2^20 - 1]
    expect(v.free(limit).largestAligned).toBe(2 ** 20); // [3 * 2^20, 2^22 - 1]
    v.add(3 * 2 ** 20, 2 ** 20, limit);
    expect(v.free(limit).largestAligned).toBe(2 ** 19);
    expect(v.free(limit).total).toBe(limit - 32 - 2 ** 21);
    expect(v.invalid).toBe(0);
    v.remove(2 ** 21, 2 ** 20);
    expect(v.free(limit).largestAligned).toBe(2 ** 20);
    // A range straddling the bitmap top: both parts are taken.
    const w = new SpaceView(1, []);
    w.add(BITMAP_PFNS - 4, 8, limit);
    expect(w.free(limit).total).toBe(limit - 8);
    w.remove(BITMAP_PFNS - 4, 8);
    expect(w.free(limit).total).toBe(limit);
  });

  it('asks a high-range source instead of tracking ranges above 4 GiB itself, with the same answers', () => {
    const reserved = [{ lo: 0xfd00000, hi: 0xfffffff }];
    const live: [number, number][] = [
      [2 ** 36 - 64, 64],
      [2 ** 36 - 256, 128],
      [0xfc00000, 1],
      [0x80000, 16],
    ];
    const tracked = new SpaceView(1, reserved);
    const keys = new Float64Array(8);
    const sourced = new SpaceView(1, reserved, () => {
      let n = 0;
      for (const [lo, pages] of live) if (lo >= BITMAP_PFNS) keys[n++] = packRange(lo, lo + pages - 1);
      return { keys, n, odd: [[2 ** 40, 2 ** 40 + 5000]] };
    });
    for (const [lo, pages] of live) {
      tracked.add(lo, pages, 2 ** 36 - 1);
      sourced.add(lo, pages, 2 ** 36 - 1);
    }
    tracked.add(2 ** 40, 5001, 2 ** 41); // misaligned, but there
    for (const limit of [0xfffff, 2 ** 28 - 1, 2 ** 36 - 1, 2 ** 41]) for (const pages of [1, 64]) expect(sourced.free(limit, pages)).toEqual(tracked.free(limit, pages));
    expect(sourced.invalid).toBe(0);
  });
});
