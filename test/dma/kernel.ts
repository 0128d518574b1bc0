// A kernel just big enough for the DMA layer: RAM in a SharedArrayBuffer (low
// memory, and optionally some above 4 GiB), the page allocator, kmalloc, a
// command line, and dmesg/trace on a clock the test moves.
import type { RamRegion } from '../../abi/boot.ts';
import { createDmaSubsystem, type DmaKernel, type DmaSubsystem } from '../../dma/index.ts';
import { Cmdline } from '../../kernel/cmdline.ts';
import { Bus, Device } from '../../kernel/device.ts';
import { Kmalloc } from '../../kernel/kmalloc.ts';
import { Dmesg } from '../../kernel/log.ts';
import { PhysMem } from '../../kernel/mem.ts';
import { PAGE_SIZE, PageAllocator } from '../../kernel/page-alloc.ts';
import { GuestTrace } from '../../kernel/trace.ts';

export const MiB = 1 << 20;
export const GiB4 = 2 ** 32;

export interface TestKernel extends DmaKernel {
  readonly slab: Kmalloc;
  readonly clock: { ns: number };
  readonly dma: DmaSubsystem;
  /** dmesg text, one line per message. */
  dmesg(): string[];
  /** A device on a test bus, configured by the DMA subsystem. */
  device(name?: string, busLimitBits?: number): Device;
}

export function testKernel(opts: { cmdline?: string; lowMiB?: number; highMiB?: number } = {}): TestKernel {
  const low = (opts.lowMiB ?? 16) * MiB;
  const high = (opts.highMiB ?? 0) * MiB;
  const regions: RamRegion[] = [{ gpa: 0, size: low, offset: 0 }];
  if (high) regions.push({ gpa: GiB4, size: high, offset: low });
  const clock = { ns: 0 };
  const mem = new PhysMem(new SharedArrayBuffer(low + high), regions);
  const pages = new PageAllocator(regions);
  pages.reserve(0, PAGE_SIZE); // as the kernel does: no buffer at address 0
  const base: DmaKernel = {
    cmdline: new Cmdline(opts.cmdline ?? ''),
    mem,
    pages,
    log: new Dmesg(() => clock.ns, () => {}, 0),
    trace: new GuestTrace(() => clock.ns, () => 0),
    now: () => clock.ns,
  };
  const dma = createDmaSubsystem(base);
  const bus = new Bus('test', () => {});
  let n = 0;
  return {
    ...base,
    slab: new Kmalloc(pages, mem),
    clock,
    dma,
    dmesg: () => base.log.lines.map((l) => l.text),
    device(name = `dev${n++}`, busLimitBits = 64) {
      const dev = new Device(name, bus, undefined, busLimitBits);
      dma.configure(dev);
      return dev;
    },
  };
}

export function pattern(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (seed + i * 7) & 0xff;
  return out;
}
