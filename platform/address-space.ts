// How a device model sees memory. Every DMA a device makes goes through its
// endpoint's address space: for now the identity (guest-physical) space;
// the IOMMU (next) puts a translating space in front of it.
import { type Addr } from '../abi/addr.ts';
import type { GuestMemory } from './memory.ts';
import type { InterruptController } from './irq.ts';
import type { HostTrace } from './trace.ts';

/** Access a device makes: DMA_READ reads guest memory, DMA_WRITE writes it. */
export const DMA_READ = 1;
export const DMA_WRITE = 2;

export interface AddressSpace {
  /** Bumped whenever a translation may have changed; resolutions cached before are then stale. */
  readonly generation: number;
  /** Buffer offset of [addr, addr + len) if the device may access it as one run of RAM, else -1 (a fault, recorded). */
  resolve(addr: Addr, len: number, access: number): number;
  /** Copies guest memory into `dst`; false (and a recorded fault) if any byte is unreachable. */
  read(addr: Addr, dst: Uint8Array): boolean;
  write(addr: Addr, src: Uint8Array): boolean;
  /** A posted 32-bit write, the way a device signals MSI. */
  write32(addr: Addr, value: number): boolean;
}

export interface DmaFault {
  readonly addr: Addr;
  readonly len: number;
  readonly access: number;
}

/**
 * The identity space: bus addresses are guest-physical; RAM and the MSI
 * doorbell are reachable, up to what the bus can address (the firmware's
 * dma_bits). A device driving an address beyond that faults here; real
 * hardware would drop the high bits and hit the wrong memory.
 */
export class PhysicalSpace implements AddressSpace {
  readonly generation = 0;
  faults = 0;
  lastFault: DmaFault | undefined;
  /** First address the bus cannot drive. */
  private readonly limit: number;

  constructor(
    readonly mem: GuestMemory,
    private readonly irq: InterruptController,
    private readonly trace: HostTrace,
    readonly name: string,
    busBits = 64,
  ) {
    this.limit = busBits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** busBits;
  }

  resolve(addr: Addr, len: number, access: number): number {
    const off = typeof addr === 'number' && addr + len <= this.limit ? this.mem.offsetOf(addr, len) : -1;
    if (off < 0) this.fault(addr, len, access);
    return off;
  }

  read(addr: Addr, dst: Uint8Array): boolean {
    const off = this.resolve(addr, dst.length, DMA_READ);
    if (off < 0) return false;
    dst.set(this.mem.u8.subarray(off, off + dst.length));
    return true;
  }

  write(addr: Addr, src: Uint8Array): boolean {
    const off = this.resolve(addr, src.length, DMA_WRITE);
    if (off < 0) return false;
    this.mem.u8.set(src, off);
    return true;
  }

  write32(addr: Addr, value: number): boolean {
    if (typeof addr === 'number' && this.irq.isDoorbell(addr)) {
      this.irq.msiWrite(addr, value);
      return true;
    }
    const off = this.resolve(addr, 4, DMA_WRITE);
    if (off < 0) return false;
    this.mem.dv.setUint32(off, value, true);
    return true;
  }

  private fault(addr: Addr, len: number, access: number): void {
    this.faults++;
    this.lastFault = { addr, len, access };
    this.trace.emit('dma_fault', { space: this.name, addr: '0x' + addr.toString(16), len, write: access === DMA_WRITE });
  }
}
