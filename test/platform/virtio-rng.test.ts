import { describe, expect, it } from 'vitest';
import { VIRTQ_DESC_F } from '../../abi/ring.ts';
import { DEVICE_ID, STATUS } from '../../abi/virtio.ts';
import { Xoshiro128 } from '../../abi/prng.ts';
import { VirtioRng } from '../../platform/devices/rng.ts';
import { Host, bringUp } from './virtio-harness.ts';

const { NEXT, WRITE } = VIRTQ_DESC_F;

/** Fetches `sizes.length` buffers of entropy from a fresh device seeded with `seed`. */
function entropy(seed: number, sizes: number[]): Uint8Array[] {
  const h = new Host();
  const { drv, ring, model } = bringUp(h, new VirtioRng(h.ctx('virtio-rng.0'), { seed }));
  const bufs = sizes.map((n, i) => {
    const addr = h.alloc(n);
    ring.setDesc(i, { addr, len: n, flags: WRITE });
    ring.add(i);
    return addr;
  });
  drv.kick();
  h.run();
  sizes.forEach((n, i) => expect(ring.usedElem(i)).toEqual({ id: i, len: n }));
  expect(model.report().stats.bytesProduced).toBe(sizes.reduce((a, b) => a + b, 0));
  return bufs.map((a, i) => h.get(a, sizes[i]!));
}

describe('virtio-rng', () => {
  it('is device 4 with no device features and no config', () => {
    const h = new Host();
    const rng = new VirtioRng(h.ctx(), { seed: 1 });
    expect(rng.deviceId).toBe(DEVICE_ID.ENTROPY);
    expect(rng.offeredFeatures & 0xff_ffffn).toBe(0n);
    expect(rng.config.length).toBe(0);
  });

  it('produces the same bytes for the same seed and different bytes for another', () => {
    const a = entropy(42, [64, 13]);
    const b = entropy(42, [64, 13]);
    const c = entropy(43, [64, 13]);
    expect(a).toEqual(b);
    expect(a[0]).not.toEqual(c[0]);
    expect(new Set(a[0]).size).toBeGreaterThan(32); // not a constant fill
  });

  it('fills buffers from the xoshiro128** stream, word by word', () => {
    const [got] = entropy(7, [8]);
    const g = new Xoshiro128(7);
    const w0 = g.next();
    const w1 = g.next();
    const want = new Uint8Array(8);
    new DataView(want.buffer).setUint32(0, w0, true);
    new DataView(want.buffer).setUint32(4, w1, true);
    expect(got).toEqual(want);
  });

  it('keeps its byte stream stable across versions (golden vector, seed 42)', () => {
    expect(Buffer.from(entropy(42, [8])[0]!).toString('hex')).toBe('ac1c1ea9e9367b20');
  });

  it('fills a buffer split over several descriptors', () => {
    const h = new Host();
    const { drv, ring } = bringUp(h, new VirtioRng(h.ctx(), { seed: 9 }));
    const a = h.alloc(5);
    const b = h.alloc(11);
    ring.setDesc(0, { addr: a, len: 5, flags: WRITE | NEXT, next: 1 });
    ring.setDesc(1, { addr: b, len: 11, flags: WRITE });
    ring.add(0);
    drv.kick();
    h.run();
    const whole = new Uint8Array(16);
    new Xoshiro128(9).fill(whole);
    expect([...h.get(a, 5), ...h.get(b, 11)]).toEqual([...whole]);
    expect(ring.usedElem(0).len).toBe(16);
  });

  it('treats a device-readable descriptor as a driver error: DEVICE_NEEDS_RESET, nothing written', () => {
    const h = new Host();
    const { drv, ring, model } = bringUp(h, new VirtioRng(h.ctx(), { seed: 1 }));
    const r = h.alloc(8);
    const w = h.alloc(8);
    ring.setDesc(0, { addr: r, len: 8, flags: NEXT, next: 1 });
    ring.setDesc(1, { addr: w, len: 8, flags: WRITE });
    ring.add(0);
    drv.kick();
    h.run();
    expect(drv.status & STATUS.DEVICE_NEEDS_RESET).toBeTruthy();
    expect(model.report().errors[0]!.reason).toBe('RNG_READABLE_BUFFER');
    expect([...h.get(w, 8)]).toEqual(new Array(8).fill(0));
    expect(ring.usedIdx).toBe(0);
  });
});
