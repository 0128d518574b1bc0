// The DMA subsystem at boot: reads swiotlb= from the command line, sets up the
// bounce pool, and gives each device its backend as it is added (Linux's
// swiotlb_init plus the dma-direct / iommu-dma choice of dma_go_direct).
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
import type { Kernel } from '../kernel/kernel.ts';
import { dmaState, type DmaStats } from './dev-state.ts';
import { DmaDirect } from './direct.ts';
import type { DmaOps } from './ops.ts';
import { IO_TLB_DEFAULT_SIZE, IO_TLB_SHIFT, Swiotlb, type SwiotlbStats } from './swiotlb.ts';

export type DmaKernel = Pick<Kernel, 'cmdline' | 'mem' | 'pages' | 'log' | 'trace' | 'now'>;

/**
 * The seam for an IOMMU layer (iommu_setup_dma_ops): it says, device by device,
 * whether DMA goes through iommu-dma. undefined (no IOMMU in front of the
 * device, or an identity domain) leaves the device on dma-direct.
 */
export interface IommuDmaSetup {
  dmaOps(dev: Device): DmaOps | undefined;
}

export interface DmaDeviceStats extends DmaStats {
  readonly device: string;
  readonly backend: string;
}

export interface DmaSubsystemStats {
  readonly swiotlb: SwiotlbStats | undefined;
  readonly devices: readonly DmaDeviceStats[];
}

export interface DmaSubsystem {
  readonly swiotlb: Swiotlb | undefined;
  /** Called for every device as it is added, before drivers bind (Kernel.dmaConfigure). */
  configure(dev: Device): void;
  /**
   * The IOMMU layer registers once it is up. Devices configured before that and
   * not yet driven are configured again, as Linux's bus_iommu_probe() does for
   * endpoints whose probe waited for their IOMMU; a bound device keeps its
   * backend, since its mappings live there.
   */
  registerIommu(setup: IommuDmaSetup): void;
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
  const devices = new Set<Device>();
  let iommu: IommuDmaSetup | undefined;

  function configure(dev: Device): void {
    dev.dma.ops = iommu?.dmaOps(dev) ?? direct;
    dmaState(dev).kernel = k;
    devices.add(dev);
  }

  return {
    swiotlb,
    configure,
    registerIommu(setup) {
      iommu = setup;
      for (const dev of devices) if (!dev.driver) configure(dev);
    },
    stats: () => ({
      swiotlb: swiotlb?.stats(),
      devices: [...devices].map((dev) => ({ device: dev.name, backend: dev.dma.ops?.name ?? 'none', ...dmaState(dev).stats })),
    }),
  };
}
