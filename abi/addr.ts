// 64-bit bus addresses. Guest-physical addresses fit a number; IOVAs may use
// all 64 bits. An Addr is a number when below 2^53 (exact) and a bigint above,
// so the common case stays fast and no address is ever rounded (design §3).

export type Addr = number | bigint;

const TWO32 = 0x1_0000_0000;
const SAFE_HI = 0x20_0000; // hi words below this keep hi * 2^32 + lo under 2^53

/** Joins two 32-bit halves read off the wire. Most have hi 0: they skip the floating-point multiply and add. */
export function fromHiLo(hi: number, lo: number): Addr {
  if (hi === 0) return lo;
  return hi < SAFE_HI ? hi * TWO32 + lo : (BigInt(hi) << 32n) | BigInt(lo);
}

// Most addresses are below 4 GiB; the guard skips a floating-point modulo
// (a runtime call in V8) on every descriptor and request.
export function lo32(a: Addr): number {
  if (typeof a === 'number') return a < TWO32 ? a : a % TWO32;
  return Number(a & 0xffff_ffffn);
}

export function hi32(a: Addr): number {
  if (typeof a === 'number') return a < TWO32 ? 0 : Math.floor(a / TWO32);
  return Number(a >> 32n);
}

/** Normalises a bigint to the canonical Addr form. */
export function toAddr(a: bigint | number): Addr {
  if (typeof a === 'number') return a;
  const v = BigInt.asUintN(64, a);
  return v < 0x20_0000_0000_0000n ? Number(v) : v;
}

export function toBig(a: Addr): bigint {
  return typeof a === 'bigint' ? a : BigInt(a);
}

export function addAddr(a: Addr, n: number): Addr {
  if (typeof a === 'number') {
    const s = a + n;
    if (s < Number.MAX_SAFE_INTEGER) return s;
  }
  return toAddr(toBig(a) + BigInt(n));
}

export function hexAddr(a: Addr): string {
  return '0x' + a.toString(16);
}

/** DMA_MAPPING_ERROR: all ones, as Linux's ~(dma_addr_t)0. */
export const DMA_MAPPING_ERROR: Addr = 0xffff_ffff_ffff_ffffn;
