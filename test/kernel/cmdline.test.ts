import { describe, expect, it } from 'vitest';
import { Cmdline } from '../../kernel/cmdline.ts';

describe('Cmdline', () => {
  it('parses key=value and flags, later words win', () => {
    const c = new Cmdline('iommu.strict=0 quiet nr_cpus=2 nr_cpus=4 swiotlb=8192,force');
    expect(c.int('nr_cpus', 1)).toBe(4);
    expect(c.bool('quiet', false)).toBe(true);
    expect(c.bool('iommu.strict', true)).toBe(false);
    expect(c.str('swiotlb', '')).toBe('8192,force');
    expect(c.has('absent')).toBe(false);
  });

  it('falls back to defaults on malformed values', () => {
    const c = new Cmdline('nr_cpus=two iommu.passthrough=maybe');
    expect(c.int('nr_cpus', 1)).toBe(1);
    expect(c.bool('iommu.passthrough', false)).toBe(false);
    expect(c.int('x', 0x10)).toBe(16);
    expect(new Cmdline('a=0x20').int('a', 0)).toBe(32);
  });
});
