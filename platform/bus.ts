// The CPU's view of physical addresses outside RAM: MMIO regions claimed by
// devices (register blocks, BARs, ECAM). Unclaimed reads return all ones and
// unclaimed writes are dropped, as on a real bus.
import type { AccessSize } from '../abi/boot.ts';
import type { HostTrace } from './trace.ts';

export interface MmioHandler {
  read(offset: number, size: AccessSize): number;
  write(offset: number, size: AccessSize, value: number): void;
}

interface Region {
  base: number;
  size: number;
  name: string;
  handler: MmioHandler;
}

const ALL_ONES: Record<AccessSize, number> = { 1: 0xff, 2: 0xffff, 4: 0xffff_ffff };

export class MmioBus {
  private regions: Region[] = [];
  unassigned = 0;

  constructor(private readonly trace: HostTrace) {}

  /** Claims [base, base + size). Overlapping claims are a machine-construction bug. */
  map(base: number, size: number, name: string, handler: MmioHandler): void {
    for (const r of this.regions) {
      if (base < r.base + r.size && r.base < base + size) throw new Error(`MMIO ${name} overlaps ${r.name}`);
    }
    this.regions.push({ base, size, name, handler });
    this.regions.sort((a, b) => a.base - b.base);
  }

  unmap(name: string): void {
    this.regions = this.regions.filter((r) => r.name !== name);
  }

  read(addr: number, size: AccessSize): number {
    const r = this.find(addr, size);
    if (!r) {
      this.unassigned++;
      this.trace.emit('unassigned_read', { addr, size });
      return ALL_ONES[size];
    }
    return r.handler.read(addr - r.base, size);
  }

  write(addr: number, size: AccessSize, value: number): void {
    const r = this.find(addr, size);
    if (!r) {
      this.unassigned++;
      this.trace.emit('unassigned_write', { addr, size, value });
      return;
    }
    r.handler.write(addr - r.base, size, value);
  }

  private find(addr: number, size: number): Region | undefined {
    let lo = 0;
    let hi = this.regions.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.regions[mid]!;
      if (addr < r.base) hi = mid - 1;
      else if (addr >= r.base + r.size) lo = mid + 1;
      else return addr + size <= r.base + r.size ? r : undefined;
    }
    return undefined;
  }
}

/** A register-block read of 1, 2 or 4 bytes; outside the block reads as zero. */
export function readSized(dv: DataView, off: number, size: AccessSize): number {
  if (off < 0 || off + size > dv.byteLength) return 0;
  return size === 1 ? dv.getUint8(off) : size === 2 ? dv.getUint16(off, true) : dv.getUint32(off, true);
}

/** A register-block write of 1, 2 or 4 bytes; outside the block is ignored. */
export function writeSized(dv: DataView, off: number, size: AccessSize, value: number): void {
  if (off < 0 || off + size > dv.byteLength) return;
  if (size === 1) dv.setUint8(off, value);
  else if (size === 2) dv.setUint16(off, value, true);
  else dv.setUint32(off, value, true);
}
