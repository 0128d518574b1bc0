// The DMA view of one endpoint behind the virtio-iommu: an AddressSpace, so the
// device models and the queue code use it unchanged. Each access is translated
// (virtio 1.4 §5.13.6: bypass, MSI regions, domain mappings, permissions) unless
// the driver did not accept ACCESS_PLATFORM: then, as virtio 1.4 §6 has it, the
// device uses the driver's physical addresses, "not translated further".
import { type Addr, hexAddr } from '../../abi/addr.ts';
import { type AddressSpace, DMA_READ, DMA_WRITE } from '../address-space.ts';
import type { GuestMemory } from '../memory.ts';
import type { HostTrace } from '../trace.ts';
import { eachPage } from '../virtio/queue.ts';
import type { Endpoint, IommuState } from './domains.ts';

export class EndpointSpace implements AddressSpace {
  private isTranslated = true;
  /** Counts translation switches, so that every switch changes the generation. */
  private switches = 0;

  constructor(
    readonly name: string,
    readonly endpoint: Endpoint,
    private readonly state: IommuState,
    /** Guest-physical memory and the MSI doorbell, as the bus reaches them. */
    readonly physical: AddressSpace,
    private readonly mem: GuestMemory,
    private readonly trace: HostTrace,
  ) {}

  /** Changes when a mapping this endpoint might have cached goes, its domain changes, or it is switched. */
  get generation(): number {
    return this.endpoint.generation + this.switches + this.physical.generation;
  }

  /** Whether accesses go through the IOMMU: the device negotiated ACCESS_PLATFORM. */
  get translated(): boolean {
    return this.isTranslated;
  }

  /** The machine calls this when the device's features are final. */
  setTranslated(on: boolean): void {
    if (on === this.isTranslated) return;
    this.isTranslated = on;
    this.switches++;
    this.trace.emit('virtio_iommu_switch_address_space', { endpoint: this.endpoint.id, dev: this.name, on });
  }

  resolve(addr: Addr, len: number, access: number): number {
    if (!this.isTranslated) {
      this.endpoint.stats.direct++;
      return this.physical.resolve(addr, len, access);
    }
    if (this.trace.enabled) this.trace.emit('virtio_iommu_translate', { mr: this.name, rid: this.endpoint.id, addr: hexAddr(addr), flag: access });
    const gpa = this.state.translate(this.endpoint, addr, len, access);
    return gpa === -1 ? -1 : this.physical.resolve(gpa, len, access);
  }

  read(addr: Addr, dst: Uint8Array): boolean {
    const u8 = this.mem.u8;
    return eachPage(this, addr, dst.length, DMA_READ, (off, pos, n) => dst.set(u8.subarray(off, off + n), pos));
  }

  write(addr: Addr, src: Uint8Array): boolean {
    const u8 = this.mem.u8;
    return eachPage(this, addr, src.length, DMA_WRITE, (off, pos, n) => u8.set(src.subarray(pos, pos + n), off));
  }

  /** An MSI write: translated like any write, then delivered by the bus (the doorbell, or RAM). */
  write32(addr: Addr, value: number): boolean {
    if (!this.isTranslated) {
      this.endpoint.stats.direct++;
      return this.physical.write32(addr, value);
    }
    const gpa = this.state.translate(this.endpoint, addr, 4, DMA_WRITE);
    return gpa !== -1 && this.physical.write32(gpa, value);
  }
}
