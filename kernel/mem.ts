// The kernel's view of its own physical memory: guest-physical addresses
// (identity-mapped, as a kernel's direct map) over the shared RAM buffer.
import type { RamRegion } from '../abi/boot.ts';
import { copyBytes } from '../abi/bytes.ts';

export class PhysMem {
  readonly u8: Uint8Array;
  readonly dv: DataView;

  constructor(
    buffer: SharedArrayBuffer,
    readonly regions: readonly RamRegion[],
  ) {
    this.u8 = new Uint8Array(buffer);
    this.dv = new DataView(buffer);
  }

  /** Buffer offset of [gpa, gpa + len); throws on an address outside RAM, as a kernel oops would. */
  off(gpa: number, len = 1): number {
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa + len <= r.gpa + r.size) return r.offset + (gpa - r.gpa);
    }
    throw new RangeError(`physical access outside RAM: 0x${gpa.toString(16)}+${len}`);
  }

  /** A view of [gpa, gpa + len): shares the RAM bytes, no copy. */
  bytes(gpa: number, len: number): Uint8Array {
    const o = this.off(gpa, len);
    return this.u8.subarray(o, o + len);
  }

  read(gpa: number, len: number): Uint8Array {
    return this.bytes(gpa, len).slice();
  }

  write(gpa: number, src: Uint8Array): void {
    copyBytes(this.u8, this.off(gpa, src.length), src, 0, src.length);
  }

  fill(gpa: number, len: number, value = 0): void {
    this.bytes(gpa, len).fill(value);
  }
}
