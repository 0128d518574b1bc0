// Builds the kernel context from the boot protocol: memory accessors and
// allocators, CPUs, interrupts, timers, dmesg, trace and the two firmware
// buses. Boot (main.ts) uses it, and so can a test or a benchmark that
// brings its own boot protocol.
import type { BootProtocol } from '../abi/boot.ts';
import type { FirmwareTables } from '../abi/firmware.ts';
import { Cmdline } from './cmdline.ts';
import { Bus, DeferredProbe } from './device.ts';
import { Interrupts } from './irq.ts';
import type { Kernel } from './kernel.ts';
import { Kmalloc } from './kmalloc.ts';
import { Dmesg, LOGLEVEL } from './log.ts';
import { PhysMem } from './mem.ts';
import { PAGE_SIZE, PageAllocator } from './page-alloc.ts';
import type { PciDevice } from './pci.ts';
import type { PlatformDevice } from './platform-bus.ts';
import { Cpus } from './smp.ts';
import { Timers } from './timer.ts';
import { GuestTrace } from './trace.ts';

/** `dmaConfigure` starts as a no-op; boot installs the DMA subsystem's once it exists. */
export type MutableKernel = { -readonly [K in keyof Kernel]: Kernel[K] };

export function createKernel(bp: BootProtocol, firmware: FirmwareTables): MutableKernel {
  const cmdline = new Cmdline(bp.cmdline);
  const now = () => bp.clock.now();
  const mem = new PhysMem(bp.memory.buffer, bp.memory.regions);
  const cpus = new Cpus(Math.max(1, Math.min(firmware.cpus, cmdline.int('nr_cpus', firmware.cpus))));
  const consoleLevel = cmdline.bool('quiet', false) ? LOGLEVEL.WARNING : cmdline.int('loglevel', LOGLEVEL.WARNING);
  const log = new Dmesg(now, (l) => bp.console.write(l), consoleLevel);
  const trace = new GuestTrace(now, () => cpus.current);
  trace.enabled = cmdline.bool('trace', true);
  const pages = new PageAllocator(bp.memory.regions);
  // Page 0 stays unused so that no buffer ever has address 0, as on Linux.
  pages.reserve(0, PAGE_SIZE);
  pages.reserve(bp.firmware.addr, bp.firmware.size);
  pages.reserve(bp.initrd.addr, bp.initrd.size);
  const irqs = new Interrupts(bp, cpus, trace);
  const deferredProbe = new DeferredProbe();
  const k: MutableKernel = {
    boot: bp,
    cmdline,
    firmware,
    mem,
    pages,
    slab: new Kmalloc(pages, mem),
    cpus,
    irqs,
    timers: new Timers(bp, cpus, irqs),
    log,
    trace,
    pci: new Bus<PciDevice>('pci', (l) => log.err(l), (dev) => k.dmaConfigure(dev), deferredProbe),
    platform: new Bus<PlatformDevice>('platform', (l) => log.err(l), (dev) => k.dmaConfigure(dev), deferredProbe),
    dmaConfigure: () => {},
    msiAddress: (_dev, doorbell) => doorbell,
    deferredProbe,
    now,
  };
  return k;
}
