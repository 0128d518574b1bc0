// The guest half every ring benchmark shares: the real kernel over a minimal
// boot protocol, and a guest virtqueue on a virtio device whose transport is
// one function (notify), so a kick runs the device model at once.
import { fileURLToPath } from 'node:url';
import type { Addr } from '../abi/addr.ts';
import { hi32, lo32 } from '../abi/addr.ts';
import type { BootProtocol } from '../abi/boot.ts';
import { createDmaSubsystem } from '../dma/index.ts';
import { VirtioBus, VirtioDevice, type VirtioTransport } from '../drivers/virtio/core.ts';
import { createVirtqueue, type Virtqueue } from '../drivers/virtio/virtqueue.ts';
import type { Kernel } from '../kernel/kernel.ts';
import { PlatformDevice } from '../kernel/platform-bus.ts';
import { createKernel } from '../kernel/setup.ts';
import type { GuestMemory } from '../platform/memory.ts';
import type { SplitQueue } from '../platform/virtio/queue.ts';

const MSI = { doorbell: { base: 0xfee0_0000, size: 0x10_0000 }, destShift: 12 };

export interface BenchGuest {
  readonly k: Kernel;
  readonly vq: Virtqueue<number>;
}

/** A kernel on `mem` and one virtqueue of `size` entries of a device with `deviceId` and `features`. */
export function benchGuest(mem: GuestMemory, deviceId: number, features: bigint, size: number, notify: () => void, relax: () => boolean = () => false): BenchGuest {
  const bp: BootProtocol = {
    memory: { buffer: mem.buffer, regions: mem.regions },
    mmio: { read: () => 0xffff_ffff, write: () => {} },
    interrupts: { connect: () => {} },
    clock: { now: () => 0, armTimer: () => {}, halt: () => false, relax },
    console: { write: () => {} },
    cmdline: 'trace=0',
    firmware: { addr: 0, size: 0 },
    initrd: { addr: 0, size: 0 },
  };
  const k = createKernel(bp, { version: 1, machine: 'bench', cpus: 1, msi: MSI, pci: [], virtioMmio: [] });
  const dma = createDmaSubsystem(k);
  k.dmaConfigure = (dev) => dma.configure(dev);
  const parent = new PlatformDevice('bench', k.platform, 'bench', 0, 0, 0);
  k.dmaConfigure(parent);
  parent.dma.mask = parent.dma.coherentMask = 0xffff_ffff_ffff_ffffn;
  const transport = { name: 'bench', notify } as unknown as VirtioTransport;
  const vdev = new VirtioDevice(k, new VirtioBus(k), transport, deviceId, parent);
  vdev.features = features;
  return { k, vq: createVirtqueue(vdev, 0, size, { name: 'bench' }) as Virtqueue<number> };
}

/** Programs a device-side queue with the guest queue's size and areas, as a transport would. */
export function programQueue(q: SplitQueue, vq: { num: number; descAddr: Addr; availAddr: Addr; usedAddr: Addr }): void {
  q.setSize(vq.num);
  for (const [area, addr] of [['desc', vq.descAddr], ['driver', vq.availAddr], ['device', vq.usedAddr]] as const) {
    q.setAddressWord(area, false, lo32(addr));
    q.setAddressWord(area, true, hi32(addr));
  }
}

/** The guest image: the built one when running from the bundle, the source under tsx (tests). */
export function guestImage(): string {
  const self = fileURLToPath(import.meta.url);
  return self.endsWith('.mjs') ? fileURLToPath(new URL('./guest.mjs', import.meta.url)) : fileURLToPath(new URL('../kernel/main.ts', import.meta.url));
}
