// A minimal machine for driver tests: the real kernel/ parts over a fake boot
// protocol. RAM is a SharedArrayBuffer at a non-zero base (so a buffer offset is
// never mistaken for an address); MMIO goes to in-test device models; a device's
// deferred work runs when the CPU halts, as a device runs while the guest waits.
import { DMA_MAPPING_ERROR, toAddr, toBig, type Addr } from '../../../abi/addr.ts';
import { VECTOR, type AccessSize, type BootProtocol } from '../../../abi/boot.ts';
import type { CoherentBuffer, DmaDirection, DmaOps } from '../../../dma/ops.ts';
import type { Device } from '../../../kernel/device.ts';
import { createKernel, type MutableKernel } from '../../../kernel/setup.ts';
import { PAGE_SIZE, PageAllocator } from '../../../kernel/page-alloc.ts';

export const RAM_BASE = 0x4000_0000;
export const RAM_SIZE = 16 << 20;
export const MSI_DOORBELL = 0xfee0_0000;
export const MSI_DEST_SHIFT = 12;

export interface MmioWindow {
  readonly base: number;
  readonly size: number;
  read(off: number, size: AccessSize): number;
  write(off: number, size: AccessSize, value: number): void;
}

export class FakeMachine {
  readonly ram = new SharedArrayBuffer(RAM_SIZE);
  readonly dv = new DataView(this.ram);
  readonly iommu: TestIommu;
  readonly k: MutableKernel;
  private readonly windows: MmioWindow[] = [];
  private readonly later: (() => void)[] = [];
  private deliver: ((cpu: number, vector: number) => void) | undefined;
  private clockNs = 0;
  private deadline: number | undefined;

  constructor() {
    const boot: BootProtocol = {
      memory: { buffer: this.ram, regions: [{ gpa: RAM_BASE, size: RAM_SIZE, offset: 0 }] },
      mmio: {
        read: (addr, size) => {
          const w = this.window(addr);
          return w ? w.read(addr - w.base, size) : size === 4 ? 0xffff_ffff : (1 << (8 * size)) - 1;
        },
        write: (addr, size, value) => this.window(addr)?.write(addr - this.window(addr)!.base, size, value),
      },
      interrupts: { connect: (deliver) => (this.deliver = deliver) },
      clock: { now: () => this.clockNs, armTimer: (_cpu, t) => (this.deadline = t), halt: () => this.halt(), relax: () => this.halt() },
      console: { write: () => {} },
      cmdline: '',
      firmware: { addr: 0, size: 0 },
      initrd: { addr: 0, size: 0 },
    };
    this.k = createKernel(boot, { version: 1, machine: 'test', cpus: 1, msi: { doorbell: { base: MSI_DOORBELL, size: 0x10_0000 }, destShift: MSI_DEST_SHIFT }, pci: [], virtioMmio: [] });
    this.iommu = new TestIommu(this.k.pages);
    this.k.dmaConfigure = (dev: Device) => {
      dev.dma.ops = this.iommu;
    };
  }

  map(w: MmioWindow): void {
    this.windows.push(w);
  }

  /** Runs `fn` the next time the CPU halts. */
  defer(fn: () => void): void {
    this.later.push(fn);
  }

  raise(cpu: number, vector: number): void {
    this.deliver!(cpu, vector);
  }

  raiseLine(line: number): void {
    this.raise(0, VECTOR.LINE_BASE + line);
  }

  /** RAM buffer offset of a guest-physical range; throws outside RAM, as a bus error would. */
  ramOff(gpa: number, len: number): number {
    if (gpa < RAM_BASE || gpa + len > RAM_BASE + RAM_SIZE) throw new RangeError(`device access outside RAM: 0x${gpa.toString(16)}+${len}`);
    return gpa - RAM_BASE;
  }

  /** Every kernel log line so far. */
  dmesg(): string[] {
    return this.k.log.lines.map((l) => l.text);
  }

  private window(addr: number): MmioWindow | undefined {
    return this.windows.find((w) => addr >= w.base && addr < w.base + w.size);
  }

  private halt(): boolean {
    const work = this.later.shift();
    if (work) {
      work();
      return true;
    }
    if (this.deadline === undefined) return false;
    this.clockNs = Math.max(this.clockNs, this.deadline);
    this.deadline = undefined;
    this.raise(0, VECTOR.TIMER);
    return true;
  }
}

interface Mapping {
  readonly iova: bigint;
  readonly phys: number;
  readonly size: number;
  readonly dir: DmaDirection | 'coherent';
}

/**
 * A translating DMA backend: every mapping gets a fresh IOVA above 2^53, so a
 * driver that hands the device a physical address, an unmapped or a rounded
 * address is caught when the device translates it. `failAfter` injects mapping failures.
 */
export class TestIommu implements DmaOps {
  readonly name = 'test-iommu';
  readonly live = new Map<bigint, Mapping>();
  /** Streaming mappings that may still succeed; the one after fails. */
  failAfter = Infinity;
  maps = 0;
  unmaps = 0;
  private nextIova = (1n << 60n) + 0x1000n;

  constructor(private readonly pages: PageAllocator) {}

  mapPhys(_dev: Device, phys: number, size: number, dir: DmaDirection): Addr {
    if (this.failAfter <= 0) return DMA_MAPPING_ERROR;
    this.failAfter--;
    this.maps++;
    return this.insert(phys, size, dir);
  }

  unmapPhys(_dev: Device, addr: Addr, size: number, dir: DmaDirection): void {
    const m = this.live.get(toBig(addr));
    if (!m || m.size !== size || m.dir !== dir) throw new Error(`bad unmap of ${addr} size ${size} dir ${dir}: ${JSON.stringify(m, (_k, v) => (typeof v === 'bigint' ? v.toString(16) : v))}`);
    this.live.delete(m.iova);
    this.unmaps++;
  }

  allocCoherent(_dev: Device, size: number): CoherentBuffer | undefined {
    const gpa = this.pages.alloc(Math.ceil(size / PAGE_SIZE));
    if (gpa < 0) return undefined;
    return { cpuAddr: gpa, dmaAddr: this.insert(gpa, size, 'coherent'), size };
  }

  freeCoherent(_dev: Device, buf: CoherentBuffer): void {
    this.live.delete(toBig(buf.dmaAddr));
    this.pages.freePagesAt(buf.cpuAddr, Math.ceil(buf.size / PAGE_SIZE));
  }

  /** The device side: guest-physical address of [iova, iova + len), which must lie in one live mapping. */
  translate(iova: bigint, len: number): number {
    for (const m of this.live.values()) {
      if (iova >= m.iova && iova + BigInt(len) <= m.iova + BigInt(m.size)) return m.phys + Number(iova - m.iova);
    }
    throw new Error(`IOMMU fault at 0x${iova.toString(16)}+${len}`);
  }

  streamingLive(): number {
    return [...this.live.values()].filter((m) => m.dir !== 'coherent').length;
  }

  mapSg(): number {
    throw new Error('not used by virtio');
  }
  unmapSg(): void {
    throw new Error('not used by virtio');
  }
  syncForCpu(): void {}
  syncForDevice(): void {}
  maxMappingSize(): number {
    return 1 << 30;
  }

  private insert(phys: number, size: number, dir: Mapping['dir']): Addr {
    const iova = this.nextIova;
    // A page-sized gap after each mapping, so an overrun faults.
    this.nextIova += BigInt(Math.ceil(size / PAGE_SIZE) + 1) * BigInt(PAGE_SIZE);
    this.live.set(iova, { iova, phys, size, dir });
    return toAddr(iova);
  }
}
