// The seeded generator both worlds use for reproducible data (disk patterns,
// entropy): xoshiro128** (Blackman and Vigna), its state expanded from a
// 32-bit seed with splitmix32. Kept here, like Linux's include/linux/prandom.h,
// because guest and host must agree on it bit for bit.

export class Xoshiro128 {
  private readonly s = new Uint32Array(4);

  constructor(seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.s[i] = z ^ (z >>> 16);
    }
  }

  next(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Fills `buf` with output words, little-endian; the unused bytes of a last partial word are dropped. */
  fill(buf: Uint8Array): void {
    for (let i = 0; i < buf.length; i += 4) {
      const w = this.next();
      for (let b = 0; b < 4 && i + b < buf.length; b++) buf[i + b] = w >>> (8 * b);
    }
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
