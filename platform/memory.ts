// Guest-physical RAM: one fixed-size SharedArrayBuffer holding every RAM
// region, laid out in address order, with MMIO holes between regions.
import type { RamRegion } from '../abi/boot.ts';

export class GuestMemory {
  readonly buffer: SharedArrayBuffer;
  readonly u8: Uint8Array;
  readonly dv: DataView;
  readonly regions: readonly RamRegion[];
  // The same regions in a plain array of plain objects: offsetOf runs on every
  // DMA access, and V8 indexes frozen arrays the slow, generic way.
  private readonly ram: RamRegion[];

  constructor(ranges: readonly { gpa: number; size: number }[]) {
    let offset = 0;
    const regions: RamRegion[] = [];
    for (const r of [...ranges].sort((a, b) => a.gpa - b.gpa)) {
      const prev = regions.at(-1);
      if (prev && r.gpa < prev.gpa + prev.size) throw new Error(`RAM regions overlap at ${r.gpa.toString(16)}`);
      regions.push(Object.freeze({ gpa: r.gpa, size: r.size, offset }));
      offset += r.size;
    }
    this.regions = Object.freeze(regions);
    this.ram = regions.map((r) => ({ ...r }));
    this.buffer = new SharedArrayBuffer(offset);
    this.u8 = new Uint8Array(this.buffer);
    this.dv = new DataView(this.buffer);
  }

  get size(): number {
    return this.buffer.byteLength;
  }

  /** Offset in the buffer of [gpa, gpa + len) when it lies inside one RAM region, else -1. */
  offsetOf(gpa: number, len: number): number {
    const ram = this.ram;
    for (let i = 0; i < ram.length; i++) {
      const r = ram[i]!;
      if (gpa >= r.gpa && gpa + len <= r.gpa + r.size) return r.offset + (gpa - r.gpa);
    }
    return -1;
  }

  /** Copies bytes into RAM at a guest-physical address (loading firmware and init). */
  load(gpa: number, bytes: Uint8Array): void {
    const off = this.offsetOf(gpa, bytes.length);
    if (off < 0) throw new Error(`load outside RAM at 0x${gpa.toString(16)}`);
    this.u8.set(bytes, off);
  }
}
