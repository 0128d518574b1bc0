// A kernel just big enough for the DMA layer: RAM in a SharedArrayBuffer (low
// memory, and optionally some above 4 GiB), the page allocator, kmalloc, a
// command line, virtual CPUs, timers and dmesg/trace on a clock the test
// moves, and firmware tables that may place devices behind a virtual IOMMU.
import type { RamRegion } from '../../abi/boot.ts';
import type { FirmwareTables, FwPciHostBridge, FwViot } from '../../abi/firmware.ts';
import { createDmaSubsystem, type DmaKernel, type DmaSubsystem } from '../../dma/index.ts';
import { Cmdline } from '../../kernel/cmdline.ts';
import { Bus, Device } from '../../kernel/device.ts';
import type { Kernel } from '../../kernel/kernel.ts';
import { Kmalloc } from '../../kernel/kmalloc.ts';
import { Dmesg } from '../../kernel/log.ts';
import { PhysMem } from '../../kernel/mem.ts';
import { PAGE_SIZE, PageAllocator } from '../../kernel/page-alloc.ts';
import { PciDevice } from '../../kernel/pci.ts';
import { PlatformDevice } from '../../kernel/platform-bus.ts';
import { Cpus } from '../../kernel/smp.ts';
import type { Timer } from '../../kernel/timer.ts';
import { GuestTrace } from '../../kernel/trace.ts';

export const MiB = 1 << 20;
export const GiB4 = 2 ** 32;

/** The test machine's host bridge: 32-bit BARs at 0xe0000000, 64-bit ones at 0x8000000000. */
export const TEST_BRIDGE: FwPciHostBridge = {
  segment: 0,
  ecam: { base: 0xb000_0000, size: 0x10_0000 },
  busStart: 0,
  busEnd: 0,
  mmio32: { base: 0xe000_0000, size: 0x1000_0000 },
  mmio64: { base: 0x80_0000_0000, size: 0x10_0000_0000 },
};

export interface TestKernel extends DmaKernel {
  readonly slab: Kmalloc;
  readonly clock: { ns: number };
  readonly dma: DmaSubsystem;
  /** dmesg text, one line per message. */
  dmesg(): string[];
  /** Moves the virtual clock by `ns`, running each timer as it falls due on the CPU that armed it. */
  advance(ns: number): void;
  /** A device on a test bus, configured by the DMA subsystem. */
  device(name?: string, busLimitBits?: number): Device;
  /** A virtio-mmio-like platform device at `base`; not configured yet, nor added to its bus. */
  platformDevice(base: number, busLimitBits?: number, bus?: Bus<PlatformDevice>): PlatformDevice;
  /** A PCI function 00:slot.fn on TEST_BRIDGE with an empty config space; not configured yet, nor added to its bus. */
  pciDevice(slot: number, fn?: number, bus?: Bus<PciDevice>): PciDevice;
}

export interface TestKernelOptions {
  cmdline?: string;
  lowMiB?: number;
  highMiB?: number;
  cpus?: number;
  viot?: readonly FwViot[];
}

export function testKernel(opts: TestKernelOptions = {}): TestKernel {
  const low = (opts.lowMiB ?? 16) * MiB;
  const high = (opts.highMiB ?? 0) * MiB;
  const regions: RamRegion[] = [{ gpa: 0, size: low, offset: 0 }];
  if (high) regions.push({ gpa: GiB4, size: high, offset: low });
  const clock = { ns: 0 };
  const mem = new PhysMem(new SharedArrayBuffer(low + high), regions);
  const pages = new PageAllocator(regions);
  pages.reserve(0, PAGE_SIZE); // as the kernel does: no buffer at address 0
  const cpus = new Cpus(opts.cpus ?? 1);
  const timers = new VirtualTimers(clock, cpus);
  const firmware: FirmwareTables = {
    version: 1,
    machine: 'test',
    cpus: cpus.count,
    msi: { doorbell: { base: 0xfee0_0000, size: 0x10_0000 }, destShift: 12 },
    pci: [TEST_BRIDGE],
    virtioMmio: [],
    viot: opts.viot,
  };
  const log = new Dmesg(() => clock.ns, () => {}, 0);
  const bus = new Bus('test', () => {});
  const pciBus = new Bus<PciDevice>('pci', () => {});
  const platformBus = new Bus<PlatformDevice>('platform', () => {});
  // What PciDevice reads at construction: an all-zero config space (no BARs, no capabilities).
  const cfgSpace = { boot: { mmio: { read: () => 0, write: () => {} } } } as unknown as Kernel;
  let n = 0;
  const k = {
    cmdline: new Cmdline(opts.cmdline ?? ''),
    firmware,
    mem,
    pages,
    cpus,
    timers,
    log,
    trace: new GuestTrace(() => clock.ns, () => cpus.current),
    now: () => clock.ns,
    slab: new Kmalloc(pages, mem),
    clock,
    dmesg: () => log.lines.map((l) => l.text),
    advance: (ns: number) => timers.advance(ns),
    device(name = `dev${n++}`, busLimitBits = 64) {
      const dev = new Device(name, bus, undefined, busLimitBits);
      tk.dma.configure(dev);
      return dev;
    },
    platformDevice: (base: number, busLimitBits = 64, onBus = platformBus) =>
      new PlatformDevice(`${base.toString(16)}.virtio_mmio`, onBus, 'virtio-mmio', base, 0x200, 0, busLimitBits),
    pciDevice: (slot: number, fn = 0, onBus = pciBus) => new PciDevice(cfgSpace, onBus, TEST_BRIDGE, 0, slot, fn),
  } satisfies Omit<TestKernel, 'dma'>;
  // The DMA subsystem is keyed by this very object, as IOMMU drivers register with the kernel they were given.
  const tk: TestKernel = Object.assign(k, { dma: createDmaSubsystem(k) });
  return tk;
}

/** Kernel timers on the test clock: one list for all CPUs, each timer run on the CPU that armed it. */
class VirtualTimers {
  private readonly pending: { timer: Timer; cpu: number }[] = [];

  constructor(
    private readonly clock: { ns: number },
    private readonly cpus: Cpus,
  ) {}

  add(delayNs: number, fn: () => void): Timer {
    const timer: Timer = { deadline: this.clock.ns + delayNs, fn, cancelled: false };
    this.pending.push({ timer, cpu: this.cpus.current });
    return timer;
  }

  advance(ns: number): void {
    const end = this.clock.ns + ns;
    for (;;) {
      let next = -1;
      this.pending.forEach((p, i) => {
        if (p.timer.deadline <= end && (next < 0 || p.timer.deadline < this.pending[next]!.timer.deadline)) next = i;
      });
      if (next < 0) break;
      const [{ timer, cpu }] = this.pending.splice(next, 1) as [{ timer: Timer; cpu: number }];
      this.clock.ns = Math.max(this.clock.ns, timer.deadline);
      if (!timer.cancelled) this.cpus.runOn(cpu, timer.fn);
    }
    this.clock.ns = end;
  }
}

export function pattern(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (seed + i * 7) & 0xff;
  return out;
}
