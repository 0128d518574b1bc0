import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../platform/memory.ts';

const MiB = 2 ** 20;

describe('GuestMemory: RAM regions with holes between them', () => {
  // Given out of order: RAM at 0-1 MiB and 4 GiB-4 GiB+2 MiB, a hole between.
  const mem = new GuestMemory([
    { gpa: 2 ** 32, size: 2 * MiB },
    { gpa: 0, size: MiB },
  ]);

  it('lays the regions out in address order, frozen', () => {
    expect(mem.regions).toEqual([
      { gpa: 0, size: MiB, offset: 0 },
      { gpa: 2 ** 32, size: 2 * MiB, offset: MiB },
    ]);
    expect(Object.isFrozen(mem.regions) && Object.isFrozen(mem.regions[1])).toBe(true);
    expect(mem.size).toBe(3 * MiB);
  });

  it('finds a range inside one region, and nothing across an edge or in the hole', () => {
    expect(mem.offsetOf(0, MiB)).toBe(0);
    expect(mem.offsetOf(MiB - 4, 4)).toBe(MiB - 4);
    expect(mem.offsetOf(2 ** 32, 1)).toBe(MiB);
    expect(mem.offsetOf(2 ** 32 + 2 * MiB - 8, 8)).toBe(3 * MiB - 8);
    expect(mem.offsetOf(MiB - 4, 8)).toBe(-1);
    expect(mem.offsetOf(MiB, 1)).toBe(-1);
    expect(mem.offsetOf(2 ** 32 - 1, 2)).toBe(-1);
    expect(mem.offsetOf(2 ** 32 + 2 * MiB - 8, 9)).toBe(-1);
  });

  it('loads bytes into RAM and refuses a load outside it', () => {
    mem.load(2 ** 32 + 16, Uint8Array.of(1, 2, 3));
    expect([...mem.u8.subarray(MiB + 16, MiB + 19)]).toEqual([1, 2, 3]);
    expect(() => mem.load(MiB - 1, Uint8Array.of(1, 2))).toThrow('load outside RAM at 0xfffff');
  });

  it('refuses overlapping regions', () => {
    expect(() => new GuestMemory([{ gpa: 0, size: 2 * MiB }, { gpa: MiB, size: MiB }])).toThrow('RAM regions overlap at 100000');
  });
});
