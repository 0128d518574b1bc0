// The guest image's entry point: boots the kernel from the boot protocol the
// platform hands over (abi/boot.ts), runs the init program, and powers off
// with the guest's own account of the run. Bundled as dist/guest.mjs.
import type { BootProtocol, GuestExit } from '../abi/boot.ts';
import { decodeFirmware } from '../abi/firmware.ts';
import { decodeWorkload } from '../abi/workload.ts';
import type { InitResult } from '../abi/workload.ts';
import { createDmaSubsystem, type DmaSubsystem } from '../dma/index.ts';
import { registerVirtioDrivers, type VirtioStack } from '../drivers/index.ts';
import { Cmdline } from './cmdline.ts';
import { Bus } from './device.ts';
import { runInit } from './init.ts';
import { Interrupts, KernelPanic } from './irq.ts';
import type { Kernel } from './kernel.ts';
import { Kmalloc } from './kmalloc.ts';
import { Dmesg, LOGLEVEL, formatLogLine } from './log.ts';
import { PhysMem } from './mem.ts';
import { PAGE_SIZE, PageAllocator } from './page-alloc.ts';
import { enumeratePci, type PciDevice } from './pci.ts';
import { PlatformDevice } from './platform-bus.ts';
import { buildGuestReport } from './report.ts';
import { Cpus } from './smp.ts';
import { Timers } from './timer.ts';
import { GuestTrace } from './trace.ts';

export function boot(bp: BootProtocol): GuestExit {
  const cmdline = new Cmdline(bp.cmdline);
  const mem = new PhysMem(bp.memory.buffer, bp.memory.regions);
  const firmware = decodeFirmware(mem.read(bp.firmware.addr, bp.firmware.size));
  const cpus = new Cpus(Math.max(1, Math.min(firmware.cpus, cmdline.int('nr_cpus', firmware.cpus))));
  const log = new Dmesg(() => bp.clock.now(), (l) => bp.console.write(l), cmdline.bool('quiet', false) ? LOGLEVEL.WARNING : cmdline.int('loglevel', LOGLEVEL.WARNING));
  const trace = new GuestTrace(() => bp.clock.now(), () => cpus.current);
  trace.enabled = cmdline.bool('trace', true);
  const pages = new PageAllocator(bp.memory.regions);
  // Page 0 stays unused so that no buffer ever has address 0, as on Linux.
  pages.reserve(0, PAGE_SIZE);
  pages.reserve(bp.firmware.addr, bp.firmware.size);
  pages.reserve(bp.initrd.addr, bp.initrd.size);
  const irqs = new Interrupts(bp, cpus, trace);
  const k: Kernel = {
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
    pci: new Bus<PciDevice>('pci', (l) => log.err(l)),
    platform: new Bus<PlatformDevice>('platform', (l) => log.err(l)),
    dmaConfigure: () => {},
    now: () => bp.clock.now(),
  };
  log.info(`Linux-like ivory kernel, command line: ${bp.cmdline}`);
  log.info(`smp: ${cpus.count} CPU(s); memory: ${(pages.totalPages * PAGE_SIZE) / 2 ** 20} MiB available`);

  let status = 0;
  let panic: string | undefined;
  let dma: DmaSubsystem | undefined;
  let drivers: VirtioStack | undefined;
  let init: InitResult | undefined;
  try {
    const subsystem = (dma = createDmaSubsystem(k));
    (k as { dmaConfigure: Kernel['dmaConfigure'] }).dmaConfigure = (dev) => subsystem.configure(dev);
    drivers = registerVirtioDrivers(k);
    probeDevices(k);
    init = runInit(k, drivers, decodeWorkload(mem.read(bp.initrd.addr, bp.initrd.size)));
    if (!init.ok) status = 1;
  } catch (e) {
    if (!(e instanceof KernelPanic) && !(e instanceof Error)) throw e;
    panic = e.message;
    log.printk(LOGLEVEL.EMERG, `Kernel panic - not syncing: ${e.message}`);
    status = 2;
  }
  const report = buildGuestReport(k, dma, drivers, init, panic);
  return { status, report: { ...report, dmesg: log.lines.map(formatLogLine), trace: trace.events } };
}

/** Finds every device the firmware describes or a bus scan reveals, and lets the drivers bind. */
function probeDevices(k: Kernel): void {
  for (const bridge of k.firmware.pci) {
    for (const dev of enumeratePci(k, bridge)) {
      k.dmaConfigure(dev);
      k.pci.addDevice(dev);
    }
  }
  k.firmware.virtioMmio.forEach((fw, i) => {
    const dev = new PlatformDevice(`virtio-mmio.${i}`, k.platform, 'virtio-mmio', fw.base, fw.size, fw.irq, fw.dmaBits ?? 64);
    k.log.info(`virtio-mmio ${dev.name}: [mem 0x${fw.base.toString(16)}-0x${(fw.base + fw.size - 1).toString(16)}] irq ${fw.irq}`);
    k.dmaConfigure(dev);
    k.platform.addDevice(dev);
  });
}
