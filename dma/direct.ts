// dma-direct (Linux kernel/dma/direct.c): the bus address is the guest-physical
// address. A buffer the device cannot reach bounces through swiotlb when there
// is a pool, else the map fails with Linux's overflow warning; swiotlb=force
// bounces every streaming mapping. Devices are cache-coherent, so only bounce
// buffers need syncing.
import { DMA_MAPPING_ERROR, type Addr } from '../abi/addr.ts';
import { hex64 } from '../abi/virtio.ts';
import { DMA_BIT_MASK, type Device } from '../kernel/device.ts';
import type { Kernel } from '../kernel/kernel.ts';
import { PAGE_SIZE } from '../kernel/page-alloc.ts';
import { devWarn, dmaState } from './dev-state.ts';
import type { CoherentBuffer, DmaDirection, DmaOps, ScatterEntry } from './ops.ts';
import type { Swiotlb } from './swiotlb.ts';

/** dma_max_mapping_size() of a backend with no limit. */
export const SIZE_MAX = Number.MAX_SAFE_INTEGER;
/** x86's ZONE_DMA (16 MiB): a mask at least this wide can always be served from below it. */
const ZONE_DMA_LIMIT = DMA_BIT_MASK(24);

type DirectKernel = Pick<Kernel, 'mem' | 'pages' | 'trace'>;

/** min_not_zero(mask, bus_dma_limit): the highest bus address the device can reach. */
export function dmaLimit(dev: Device, mask: bigint = dev.dma.mask): bigint {
  const limit = dev.dma.busLimit;
  if (limit === 0n) return mask;
  return mask !== 0n && mask < limit ? mask : limit;
}

/** dma_capable. Exact: addresses here are below 2^53, and a limit that is not is above them all. */
function dmaCapable(dev: Device, addr: number, size: number): boolean {
  return addr + size - 1 <= Number(dmaLimit(dev));
}

export class DmaDirect implements DmaOps {
  readonly name: string;
  private readonly forceBounce: boolean;
  /** dma_direct_get_required_mask: all ones up to the top bit of the highest RAM address. */
  private readonly requiredMask: bigint;
  private readonly lastPage: bigint;
  /** dev_WARN_ONCE warns once per boot; once per device lets each device's first failure show. */
  private readonly warned = new WeakSet<Device>();

  constructor(
    private readonly k: DirectKernel,
    private readonly swiotlb: Swiotlb | undefined,
    force: boolean,
  ) {
    this.forceBounce = force && swiotlb !== undefined;
    this.name = this.forceBounce ? 'swiotlb' : 'direct';
    const top = Math.max(...k.mem.regions.map((r) => r.gpa + r.size)) - 1;
    this.requiredMask = DMA_BIT_MASK(top.toString(2).length);
    this.lastPage = BigInt(top - (top % PAGE_SIZE));
  }

  mapPhys(dev: Device, phys: number, size: number, dir: DmaDirection): Addr {
    if (!this.forceBounce && dmaCapable(dev, phys, size)) return phys;
    if (this.swiotlb) return this.swiotlbMap(dev, this.swiotlb, phys, size, dir);
    this.warnOnce(dev, overflow(dev, 'DMA addr', phys, size));
    return DMA_MAPPING_ERROR;
  }

  unmapPhys(dev: Device, addr: Addr, size: number, dir: DmaDirection): void {
    this.unmap(dev, addr, size, dir, false);
  }

  /** Maps entry by entry; on a failure undoes the entries already mapped and returns 0. */
  mapSg(dev: Device, sg: ScatterEntry[], dir: DmaDirection): number {
    for (let i = 0; i < sg.length; i++) {
      const e = sg[i]!;
      const addr = this.mapPhys(dev, e.phys, e.length, dir);
      if (addr === DMA_MAPPING_ERROR) {
        // The device never saw these, so nothing is copied back (DMA_ATTR_SKIP_CPU_SYNC).
        for (const done of sg.slice(0, i)) {
          this.unmap(dev, done.dmaAddress!, done.length, dir, true);
          done.dmaAddress = undefined;
          done.dmaLength = undefined;
        }
        return 0;
      }
      e.dmaAddress = addr;
      e.dmaLength = e.length;
    }
    return sg.length;
  }

  unmapSg(dev: Device, sg: ScatterEntry[], dir: DmaDirection): void {
    for (const e of sg) if (e.dmaAddress !== undefined) this.unmap(dev, e.dmaAddress, e.dmaLength ?? e.length, dir, false);
  }

  /** Zeroed pages below the coherent mask, aligned to their page order as DMA-API.rst promises. */
  allocCoherent(dev: Device, size: number): CoherentBuffer | undefined {
    const count = Math.ceil(size / PAGE_SIZE);
    const limit = dmaLimit(dev, dev.dma.coherentMask);
    const maxAddr = limit < BigInt(Number.MAX_SAFE_INTEGER) ? Number(limit) : Number.MAX_SAFE_INTEGER;
    const gpa = this.k.pages.alloc(count, maxAddr, 2 ** Math.ceil(Math.log2(count)));
    if (gpa < 0) return undefined;
    this.k.mem.fill(gpa, count * PAGE_SIZE);
    return { cpuAddr: gpa, dmaAddr: gpa, size };
  }

  freeCoherent(_dev: Device, buf: CoherentBuffer): void {
    this.k.pages.freePagesAt(buf.cpuAddr, Math.ceil(buf.size / PAGE_SIZE));
  }

  syncForCpu(dev: Device, addr: Addr, size: number, dir: DmaDirection): void {
    if (typeof addr === 'number' && this.swiotlb?.contains(addr)) this.swiotlb.syncForCpu(dev, addr, size, dir);
  }

  syncForDevice(dev: Device, addr: Addr, size: number, dir: DmaDirection): void {
    if (typeof addr === 'number' && this.swiotlb?.contains(addr)) this.swiotlb.syncForDevice(dev, addr, size, dir);
  }

  /** dma_direct_max_mapping_size: bounded by swiotlb only where bouncing may happen. */
  maxMappingSize(dev: Device): number {
    if (this.swiotlb && (this.forceBounce || this.addressingLimited(dev))) return this.swiotlb.maxMappingSize(dev);
    return SIZE_MAX;
  }

  /** dma_direct_supported: 32 bits always; less only if it still covers RAM or ZONE_DMA. */
  dmaSupported(_dev: Device, mask: bigint): boolean {
    if (mask >= DMA_BIT_MASK(32)) return true;
    return mask >= (this.lastPage < ZONE_DMA_LIMIT ? this.lastPage : ZONE_DMA_LIMIT);
  }

  /** dma_addressing_limited: some RAM lies beyond what the device reaches. */
  private addressingLimited(dev: Device): boolean {
    return dmaLimit(dev) < this.requiredMask;
  }

  /** Only a bounce buffer has anything to undo: a direct mapping is the buffer itself. */
  private unmap(dev: Device, addr: Addr, size: number, dir: DmaDirection, skipCpuSync: boolean): void {
    if (typeof addr === 'number' && this.swiotlb?.contains(addr)) this.swiotlb.unmap(dev, addr, size, dir, skipCpuSync);
  }

  /** swiotlb_map: bounce, then make sure the device reaches the bounce buffer itself. */
  private swiotlbMap(dev: Device, pool: Swiotlb, phys: number, size: number, dir: DmaDirection): Addr {
    this.k.trace.emit('swiotlb_bounced', { dev: dev.name, dev_addr: hex64(BigInt(phys)), size, force: this.forceBounce });
    const tlbAddr = pool.map(dev, phys, size);
    if (tlbAddr < 0) return DMA_MAPPING_ERROR;
    if (!dmaCapable(dev, tlbAddr, size)) {
      pool.unmap(dev, tlbAddr, size, dir, true);
      this.warnOnce(dev, overflow(dev, 'swiotlb addr', tlbAddr, size));
      return DMA_MAPPING_ERROR;
    }
    dmaState(dev).stats.bounces++;
    return tlbAddr;
  }

  private warnOnce(dev: Device, text: string): void {
    if (this.warned.has(dev)) return;
    this.warned.add(dev);
    devWarn(dev, text);
  }
}

const overflow = (dev: Device, what: string, addr: number, size: number): string =>
  `${what} ${hex64(BigInt(addr))}+${size} overflow (mask ${dev.dma.mask.toString(16)}, bus limit ${dev.dma.busLimit.toString(16)}).`;
