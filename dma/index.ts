// The DMA subsystem at boot: reads swiotlb= from the command line, sets up the
// bounce pool and the IOMMU core, and gives each device its backend before its
// driver probes (Linux's swiotlb_init, and the dma-direct / iommu-dma choice
// of dma_configure, which defers a device whose IOMMU is not there yet).
//
// When there is a pool (Linux allocates it where it may be needed):
//   swiotlb=noforce         never (swiotlb_force_disable);
//   swiotlb=force           always, and every streaming mapping bounces;
//   RAM above 4 GiB         always, as x86's pci_swiotlb_detect: a 32-bit device
//                           may be handed memory it cannot reach;
//   swiotlb=<nslabs>        always, at that size. Linux only sizes the pool with
//                           it; ivory also takes it as a request, so a scenario
//                           on a small machine can study bouncing.
// Syntax as Linux: swiotlb=<nslabs>[,<nareas>][,force|noforce]; <nslabs> counts
// 2 KiB slots (rounded up to whole segments). <nareas> is accepted and ignored:
// ivory runs one CPU at a time, so one area has nothing to contend on.
import type { Device } from '../kernel/device.ts';
import { dmaState, type DmaStats } from './dev-state.ts';
import { DmaDirect } from './direct.ts';
import type { IommuStats } from '../abi/report.ts';
import { iommuCoreInit, type IommuKernel } from './iommu.ts';
import { IO_TLB_DEFAULT_SIZE, IO_TLB_SHIFT, Swiotlb, type SwiotlbStats } from './swiotlb.ts';

export type DmaKernel = IommuKernel;

export interface DmaDeviceStats extends DmaStats {
  readonly device: string;
  readonly backend: string;
}

export interface DmaSubsystemStats {
  readonly swiotlb: SwiotlbStats | undefined;
  readonly devices: readonly DmaDeviceStats[];
  readonly iommu: IommuStats;
}

export interface DmaSubsystem {
  readonly swiotlb: Swiotlb | undefined;
  /**
   * Kernel.dmaConfigure, before a driver probes the device: 'defer' while the
   * IOMMU the firmware puts it behind has not registered (deferred probe tries
   * again after every bind); otherwise its backend is chosen.
   */
  configure(dev: Device): 'defer' | void;
  stats(): DmaSubsystemStats;
}

export interface SwiotlbOption {
  /** Slots asked for; undefined for the default size. */
  readonly nslabs: number | undefined;
  readonly force: boolean;
  readonly noforce: boolean;
  /** Text after the options that means nothing to swiotlb (Linux ignores it silently). */
  readonly unparsed: string;
}

/** setup_io_tlb_npages: `<nslabs>[,<nareas>][,force|noforce]`, each part optional. */
export function parseSwiotlbOption(value: string): SwiotlbOption {
  const m = /^(0x[0-9a-f]+|\d+)?,?(?:\d+)?,?(.*)$/i.exec(value)!;
  const nslabs = m[1] === undefined ? 0 : Number(m[1]);
  const rest = m[2]!;
  return {
    nslabs: nslabs > 0 ? nslabs : undefined,
    force: rest === 'force',
    noforce: rest === 'noforce',
    unparsed: rest === 'force' || rest === 'noforce' ? '' : rest,
  };
}

export function createDmaSubsystem(k: DmaKernel): DmaSubsystem {
  const opt = parseSwiotlbOption(k.cmdline.str('swiotlb', ''));
  if (opt.unparsed) k.log.warn(`swiotlb: ignoring '${opt.unparsed}' in swiotlb=${k.cmdline.str('swiotlb', '')}`);
  const ramAbove4G = k.mem.regions.some((r) => r.gpa + r.size > 2 ** 32);
  const wanted = !opt.noforce && (opt.force || opt.nslabs !== undefined || ramAbove4G);
  const swiotlb = wanted ? Swiotlb.init(k, opt.nslabs ?? IO_TLB_DEFAULT_SIZE >> IO_TLB_SHIFT) : undefined;
  const direct = new DmaDirect(k, swiotlb, opt.force);
  const iommu = iommuCoreInit(k, direct);
  const devices = new Set<Device>();

  return {
    swiotlb,
    configure(dev) {
      const ops = iommu.dmaOps(dev);
      if (ops === 'defer') return 'defer';
      dev.dma.ops = ops ?? direct;
      dmaState(dev).kernel = k;
      devices.add(dev);
    },
    stats: () => ({
      swiotlb: swiotlb?.stats(),
      devices: [...devices].map((dev) => ({ device: dev.name, backend: dev.dma.ops?.name ?? 'none', ...dmaState(dev).stats })),
      iommu: iommu.stats(),
    }),
  };
}
