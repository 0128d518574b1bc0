// The guest image's entry point: boots the kernel from the boot protocol the
// platform hands over (abi/boot.ts), runs the init program, and powers off
// with the guest's own account of the run. Bundled as dist/guest.mjs.
import type { BootProtocol, GuestExit } from '../abi/boot.ts';
import { decodeFirmware, virtioMmioName } from '../abi/firmware.ts';
import { decodeWorkload } from '../abi/workload.ts';
import type { InitResult } from '../abi/workload.ts';
import { createDmaSubsystem, type DmaSubsystem } from '../dma/index.ts';
import { iommuDmaGetMsiPage } from '../dma/iommu-dma.ts';
import { registerVirtioDrivers, type VirtioStack } from '../drivers/index.ts';
import { runInit } from './init.ts';
import { LOGLEVEL, formatLogLine } from './log.ts';
import { PhysMem } from './mem.ts';
import { PAGE_SIZE } from './page-alloc.ts';
import type { Kernel } from './kernel.ts';
import { enumeratePci } from './pci.ts';
import { PlatformDevice } from './platform-bus.ts';
import { buildGuestReport } from './report.ts';
import { createKernel } from './setup.ts';

export function boot(bp: BootProtocol): GuestExit {
  const firmware = decodeFirmware(new PhysMem(bp.memory.buffer, bp.memory.regions).read(bp.firmware.addr, bp.firmware.size));
  const k = createKernel(bp, firmware);
  const { log, pages, cpus } = k;
  log.info(`ivory kernel, command line: ${bp.cmdline}`);
  log.info(`smp: ${cpus.count} CPU(s); memory: ${(pages.totalPages * PAGE_SIZE) / 2 ** 20} MiB available`);

  let status = 0;
  let panic: string | undefined;
  let dma: DmaSubsystem | undefined;
  let drivers: VirtioStack | undefined;
  let init: InitResult | undefined;
  try {
    const subsystem = (dma = createDmaSubsystem(k));
    k.dmaConfigure = (dev) => subsystem.configure(dev);
    k.msiAddress = iommuDmaGetMsiPage;
    drivers = registerVirtioDrivers(k);
    probeDevices(k);
    for (const dev of k.deferredProbe.pending) log.err(`${dev.name}: probe deferred forever: its IOMMU never appeared`);
    init = runInit(k, drivers, decodeWorkload(k.mem.read(bp.initrd.addr, bp.initrd.size)));
    if (!init.ok) status = 1;
  } catch (e) {
    // Any error escaping the kernel is an oops we cannot recover from.
    if (!(e instanceof Error)) throw e;
    panic = e.message;
    log.printk(LOGLEVEL.EMERG, `Kernel panic - not syncing: ${e.message}`);
    status = 2;
  }
  const report = buildGuestReport(k, dma, drivers, init, panic);
  return { status, report: { ...report, dmesg: log.lines.map(formatLogLine), trace: k.trace.events } };
}

/** Finds every device the firmware describes or a bus scan reveals, and lets the drivers bind. */
function probeDevices(k: Kernel): void {
  for (const bridge of k.firmware.pci) {
    for (const dev of enumeratePci(k, bridge)) k.pci.addDevice(dev);
  }
  k.firmware.virtioMmio.forEach((fw) => {
    const dev = new PlatformDevice(virtioMmioName(fw.base), k.platform, 'virtio-mmio', fw.base, fw.size, fw.irq, fw.dmaBits ?? 64);
    k.log.info(`${dev.name}: [mem 0x${fw.base.toString(16)}-0x${(fw.base + fw.size - 1).toString(16)}] irq ${fw.irq}`);
    k.platform.addDevice(dev);
  });
}
