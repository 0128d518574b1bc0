// The kernel context handed to every subsystem and driver: Linux's globals,
// gathered in one object so that a test can build a kernel of its own.
import type { BootProtocol } from '../abi/boot.ts';
import type { FirmwareTables } from '../abi/firmware.ts';
import type { Cmdline } from './cmdline.ts';
import type { Bus, Device } from './device.ts';
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
  /** Called for every device as it is added, before drivers bind: picks its DMA backend. */
  readonly dmaConfigure: (dev: Device) => void;
  now(): number;
}
