// The real kernel (kernel/setup.ts) over a boot protocol the DMA tests drive:
// RAM in a SharedArrayBuffer (low memory, and optionally some above 4 GiB), a
// clock the test moves with its timer interrupts, and firmware tables that may
// place devices behind a virtual IOMMU.
import { VECTOR, type BootProtocol, type RamRegion } from '../../abi/boot.ts';
import type { FirmwareTables, FwPciHostBridge, FwViot } from '../../abi/firmware.ts';
import { createDmaSubsystem, type DmaSubsystem } from '../../dma/index.ts';
import { Bus, Device } from '../../kernel/device.ts';
import type { Kernel } from '../../kernel/kernel.ts';
import { PciDevice } from '../../kernel/pci.ts';
import { PlatformDevice } from '../../kernel/platform-bus.ts';
import { createKernel } from '../../kernel/setup.ts';

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

export interface TestKernel extends Kernel {
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
  const cpus = opts.cpus ?? 1;
  const clock = { ns: 0 };
  // Each CPU's one-shot timer; advance() raises the timer interrupt when it falls due.
  const deadlines = new Array<number | undefined>(cpus).fill(undefined);
  let deliver: (cpu: number, vector: number) => void = () => {};
  const boot: BootProtocol = {
    memory: { buffer: new SharedArrayBuffer(low + high), regions },
    // PCI functions made here read an all-zero config space: no BARs, no capabilities.
    mmio: { read: () => 0, write: () => {} },
    interrupts: { connect: (fn) => (deliver = fn) },
    clock: { now: () => clock.ns, armTimer: (cpu, t) => (deadlines[cpu] = t), halt: () => false, relax: () => false },
    console: { write: () => {} },
    cmdline: opts.cmdline ?? '',
    firmware: { addr: 0, size: 0 },
    initrd: { addr: 0, size: 0 },
  };
  const firmware: FirmwareTables = {
    version: 1,
    machine: 'test',
    cpus,
    msi: { doorbell: { base: 0xfee0_0000, size: 0x10_0000 }, destShift: 12 },
    pci: [TEST_BRIDGE],
    virtioMmio: [],
    viot: opts.viot,
  };
  const k = createKernel(boot, firmware);
  const bus = new Bus('test', () => {});
  let n = 0;
  const advance = (ns: number) => {
    const end = clock.ns + ns;
    for (;;) {
      let cpu = -1;
      deadlines.forEach((d, i) => {
        if (d !== undefined && d <= end && (cpu < 0 || d < deadlines[cpu]!)) cpu = i;
      });
      if (cpu < 0) break;
      clock.ns = Math.max(clock.ns, deadlines[cpu]!);
      deadlines[cpu] = undefined;
      deliver(cpu, VECTOR.TIMER);
      k.irqs.poll();
    }
    clock.ns = end;
  };
  const tk: TestKernel = Object.assign(k, {
    clock,
    dma: createDmaSubsystem(k),
    dmesg: () => k.log.lines.map((l) => l.text),
    advance,
    device(name = `dev${n++}`, busLimitBits = 64) {
      const dev = new Device(name, bus, undefined, busLimitBits);
      tk.dma.configure(dev);
      return dev;
    },
    platformDevice: (base: number, busLimitBits = 64, onBus = k.platform) =>
      new PlatformDevice(`${base.toString(16)}.virtio_mmio`, onBus, 'virtio-mmio', base, 0x200, 0, busLimitBits),
    pciDevice: (slot: number, fn = 0, onBus = k.pci) => new PciDevice(k, onBus, TEST_BRIDGE, 0, slot, fn),
  });
  return tk;
}

export function pattern(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (seed + i * 7) & 0xff;
  return out;
}
