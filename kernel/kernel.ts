// The kernel context handed to every subsystem and driver: Linux's globals,
// gathered in one object so that a test can build a kernel of its own.
import type { Addr } from '../abi/addr.ts';
import type { BootProtocol } from '../abi/boot.ts';
import type { FirmwareTables } from '../abi/firmware.ts';
import type { Cmdline } from './cmdline.ts';
import type { Bus, DeferredProbe, Device } from './device.ts';
import type { Interrupts } from './irq.ts';
import type { Kmalloc } from './kmalloc.ts';
import type { Dmesg } from './log.ts';
import type { PhysMem } from './mem.ts';
import type { PageAllocator } from './page-alloc.ts';
import type { PciDevice } from './pci.ts';
import type { PlatformDevice } from './platform-bus.ts';
import type { Cpus } from './smp.ts';
import type { Timers } from './timer.ts';
import type { GuestTrace } from './trace.ts';

export interface Kernel {
  readonly boot: BootProtocol;
  readonly cmdline: Cmdline;
  readonly firmware: FirmwareTables;
  readonly mem: PhysMem;
  readonly pages: PageAllocator;
  readonly slab: Kmalloc;
  readonly cpus: Cpus;
  readonly irqs: Interrupts;
  readonly timers: Timers;
  readonly log: Dmesg;
  readonly trace: GuestTrace;
  readonly pci: Bus<PciDevice>;
  readonly platform: Bus<PlatformDevice>;
  /** Called before a device is probed: picks its DMA backend, or defers the device until its IOMMU is ready. */
  readonly dmaConfigure: (dev: Device) => 'defer' | void;
  /**
   * The bus address a device must write to reach an MSI doorbell: the doorbell
   * itself, or the IOVA its IOMMU domain maps it at (iommu_dma_compose_msi_msg).
   */
  readonly msiAddress: (dev: Device, doorbell: number) => Addr;
  /** Devices waiting for their IOMMU; every successful bind retries them. */
  readonly deferredProbe: DeferredProbe;
  now(): number;
}
