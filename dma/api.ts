// The DMA API drivers call (Linux include/linux/dma-mapping.h, kernel/dma/mapping.c):
// checks arguments where Linux does, counts per device, emits Linux's dma:*
// trace events, and dispatches to the backend the device was configured with.
import { DMA_MAPPING_ERROR, hexAddr, type Addr } from '../abi/addr.ts';
import { DMA_BIT_MASK, type Device } from '../kernel/device.ts';
import { devWarn, dmaState, traceOf, type DmaStats } from './dev-state.ts';
import { DmaDirection, type CoherentBuffer, type DmaOps, type ScatterEntry } from './ops.ts';

export { DMA_MAPPING_ERROR, DmaDirection };
export type { CoherentBuffer, DmaStats, ScatterEntry };

const DIR_NAMES = ['BIDIRECTIONAL', 'TO_DEVICE', 'FROM_DEVICE', 'NONE'];
const dirName = (dir: number): string => DIR_NAMES[dir] ?? String(dir);

function opsOf(dev: Device): DmaOps {
  const ops = dev.dma.ops;
  if (!ops) throw new Error(`${dev.name}: DMA API call on a device the DMA subsystem never configured (no dma ops)`);
  return ops;
}

/** valid_dma_direction: streaming DMA must say which way data moves (Linux BUG()s otherwise). */
function validDirection(dev: Device, dir: DmaDirection): boolean {
  if (dir === DmaDirection.BIDIRECTIONAL || dir === DmaDirection.TO_DEVICE || dir === DmaDirection.FROM_DEVICE) return true;
  devWarn(dev, `DMA-API: device driver uses invalid DMA direction [${dirName(dir)}]`);
  return false;
}

/** A mapping must also cover at least one byte: swiotlb and the IOVA allocators cannot take an empty one. */
function validMapping(dev: Device, size: number, dir: DmaDirection): boolean {
  if (!validDirection(dev, dir)) return false;
  if (Number.isSafeInteger(size) && size > 0) return true;
  devWarn(dev, `DMA-API: device driver maps a buffer of ${size} bytes`);
  return false;
}

/** dma_map_single / dma_map_page: the bus address for [phys, phys + size), or DMA_MAPPING_ERROR. */
export function dmaMapSingle(dev: Device, phys: number, size: number, dir: DmaDirection): Addr {
  const ops = opsOf(dev);
  const st = dmaState(dev);
  const addr = validMapping(dev, size, dir) ? ops.mapPhys(dev, phys, size, dir) : DMA_MAPPING_ERROR;
  if (addr === DMA_MAPPING_ERROR) {
    st.stats.mappingErrors++;
  } else {
    st.stats.maps++;
    st.stats.bytesMapped += size;
  }
  traceOf(st)?.emit('dma_map_page', { dev: dev.name, dir: dirName(dir), dma_addr: hexAddr(addr), size, phys_addr: hexAddr(phys) });
  return addr;
}

/** dma_unmap_single / dma_unmap_page, with the size and direction of the map. */
export function dmaUnmapSingle(dev: Device, addr: Addr, size: number, dir: DmaDirection): void {
  const ops = opsOf(dev);
  if (!validDirection(dev, dir)) return;
  ops.unmapPhys(dev, addr, size, dir);
  const st = dmaState(dev);
  st.stats.unmaps++;
  traceOf(st)?.emit('dma_unmap_page', { dev: dev.name, dir: dirName(dir), dma_addr: hexAddr(addr), size });
}

/** dma_map_sg: fills each entry's dmaAddress/dmaLength; returns the entries mapped, 0 on error with nothing left mapped. */
export function dmaMapSg(dev: Device, sg: ScatterEntry[], dir: DmaDirection): number {
  const ops = opsOf(dev);
  const st = dmaState(dev);
  if (sg.length === 0) devWarn(dev, 'DMA-API: device driver maps an empty scatterlist');
  const valid = sg.length > 0 && sg.every((e) => validMapping(dev, e.length, dir));
  const ents = valid ? ops.mapSg(dev, sg, dir) : 0;
  if (ents === 0) {
    st.stats.mappingErrors++;
  } else {
    st.stats.maps += sg.length;
    st.stats.bytesMapped += sg.reduce((sum, e) => sum + e.length, 0);
  }
  traceOf(st)?.emit('dma_map_sg', { dev: dev.name, dir: dirName(dir), nents: sg.length, ents });
  return ents;
}

/** dma_unmap_sg, with the list as it was mapped. */
export function dmaUnmapSg(dev: Device, sg: ScatterEntry[], dir: DmaDirection): void {
  const ops = opsOf(dev);
  if (!validDirection(dev, dir)) return;
  ops.unmapSg(dev, sg, dir);
  const st = dmaState(dev);
  st.stats.unmaps += sg.length;
  traceOf(st)?.emit('dma_unmap_sg', { dev: dev.name, dir: dirName(dir), nents: sg.length });
}

export function dmaMappingError(addr: Addr): boolean {
  // The error is a bigint: a number is never it, and the typeof test spares the mixed compare a runtime call.
  return typeof addr === 'bigint' && addr === DMA_MAPPING_ERROR;
}

/** dma_alloc_coherent: zeroed memory both sides see at once, or undefined. */
export function dmaAllocCoherent(dev: Device, size: number): CoherentBuffer | undefined {
  const ops = opsOf(dev);
  if (!Number.isSafeInteger(size) || size <= 0) {
    devWarn(dev, `DMA-API: coherent allocation of ${size} bytes`);
    return undefined;
  }
  const buf = ops.allocCoherent(dev, size);
  traceOf(dmaState(dev))?.emit('dma_alloc', { dev: dev.name, dma_addr: buf ? hexAddr(buf.dmaAddr) : 'none', size });
  return buf;
}

export function dmaFreeCoherent(dev: Device, buf: CoherentBuffer): void {
  opsOf(dev).freeCoherent(dev, buf);
  traceOf(dmaState(dev))?.emit('dma_free', { dev: dev.name, dma_addr: hexAddr(buf.dmaAddr), size: buf.size });
}

/** Before the CPU reads what the device wrote into a live mapping. */
export function dmaSyncSingleForCpu(dev: Device, addr: Addr, size: number, dir: DmaDirection): void {
  const ops = opsOf(dev);
  if (!validDirection(dev, dir)) return;
  ops.syncForCpu(dev, addr, size, dir);
  traceOf(dmaState(dev))?.emit('dma_sync_single_for_cpu', { dev: dev.name, dir: dirName(dir), dma_addr: hexAddr(addr), size });
}

/** Before the device reads what the CPU wrote into a live mapping. */
export function dmaSyncSingleForDevice(dev: Device, addr: Addr, size: number, dir: DmaDirection): void {
  const ops = opsOf(dev);
  if (!validDirection(dev, dir)) return;
  ops.syncForDevice(dev, addr, size, dir);
  traceOf(dmaState(dev))?.emit('dma_sync_single_for_device', { dev: dev.name, dir: dirName(dir), dma_addr: hexAddr(addr), size });
}

/** dma_supported: a backend without the hook takes any mask, as Linux. */
function dmaSupported(dev: Device, mask: bigint): boolean {
  return opsOf(dev).dmaSupported?.(dev, mask) ?? true;
}

/** dma_set_mask(DMA_BIT_MASK(bits)): false (Linux -EIO) when the backend cannot honour it. */
export function dmaSetMask(dev: Device, bits: number): boolean {
  const mask = DMA_BIT_MASK(bits);
  if (!dmaSupported(dev, mask)) return false;
  dev.dma.mask = mask;
  return true;
}

export function dmaSetCoherentMask(dev: Device, bits: number): boolean {
  const mask = DMA_BIT_MASK(bits);
  if (!dmaSupported(dev, mask)) return false;
  dev.dma.coherentMask = mask;
  return true;
}

/** dma_set_mask_and_coherent: the coherent mask follows only if the streaming one was accepted. */
export function dmaSetMaskAndCoherent(dev: Device, bits: number): boolean {
  if (!dmaSetMask(dev, bits)) return false;
  dmaSetCoherentMask(dev, bits);
  return true;
}

/** dma_get_mask: 32 bits when none was set. */
export function dmaGetMask(dev: Device): bigint {
  return dev.dma.mask !== 0n ? dev.dma.mask : DMA_BIT_MASK(32);
}

/** dma_set_min_align_mask: bounce buffers keep the original's address bits under `mask` (NVMe needs 4 KiB). */
export function dmaSetMinAlignMask(dev: Device, mask: number): void {
  dmaState(dev).minAlignMask = mask;
}

/** dma_max_mapping_size: the largest single mapping; drivers cap their segments with it. */
export function dmaMaxMappingSize(dev: Device): number {
  return opsOf(dev).maxMappingSize(dev);
}

/** ivory's per-device counters, read by the report. */
export function dmaStats(dev: Device): Readonly<DmaStats> {
  return dmaState(dev).stats;
}
