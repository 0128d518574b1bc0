// The DMA workload of the init program: one of the IOVA benchmark's operation
// streams replayed through the real DMA API on a bound device, so every
// allocation is a dma_map_page (IOVA allocation, then MAP through the IOMMU
// driver) and every free a dma_unmap_page. Set beside `ivory bench iova`, it
// shows the allocator's share of the whole cost.
//
// What differs from the allocator-only replay, on purpose:
//   - the domain is the machine's: its aperture, granule and the reserved
//     regions the IOMMU reported, not the stream's own reservations;
//   - each op's device mask is set with dma_set_mask on the one real device,
//     so pci_32bit_workaround is that device's, as in Linux;
//   - buffers are real guest pages from one pool. Slots whose buffers would
//     not fit in it share pages, so `identity` falls back more often here.
import type { DmaResult, DmaWorkload } from '../abi/workload.ts';
import { DmaDirection, dmaGetMask, dmaMapSingle, dmaMappingError, dmaSetMask, dmaUnmapSingle } from '../dma/api.ts';
import { OP_ALLOC, resolveWorkload } from '../bench/iova/workloads.ts';
import type { Addr } from '../abi/addr.ts';
import type { Device } from './device.ts';
import type { Kernel } from './kernel.ts';
import { PAGE_SIZE } from './page-alloc.ts';

/** At most this much guest RAM backs the buffers. */
const POOL_BYTES = 64 * 2 ** 20;

export function runDmaWorkload(k: Kernel, dev: Device, w: DmaWorkload, seed: number): DmaResult {
  const workload = resolveWorkload(w.stream);
  const s = workload.generate(seed, w.ops);
  const pool = allocPool(k, s.phys, s.pages);
  const iova: Addr[] = new Array<Addr>(s.slots).fill(-1);
  /** Bytes each slot's live mapping covers. */
  const mapped = new Float64Array(s.slots);
  const savedMask = dmaGetMask(dev);
  const counts = { maps: 0, unmaps: 0, failedMaps: 0 };
  let maskDev = -1;
  let measureStart = k.now();
  const nrCpus = k.cpus.count;

  for (let i = 0; i < s.length; i++) {
    if (i === s.measureFrom) measureStart = k.now();
    if (s.dev[i] !== maskDev) {
      maskDev = s.dev[i]!;
      dmaSetMask(dev, Math.min(64, workload.devices[maskDev]!.dmaBits));
    }
    const slot = s.slot[i]!;
    const size = s.pages[i]! * PAGE_SIZE;
    k.cpus.runOn(s.cpu[i]! % nrCpus, () => {
      if (s.kind[i] === OP_ALLOC) {
        const addr = dmaMapSingle(dev, pool.bufferOf(s.phys[i]!, s.pages[i]!), size, DmaDirection.BIDIRECTIONAL);
        const ok = !dmaMappingError(addr);
        if (ok) counts.maps++;
        else counts.failedMaps++;
        iova[slot] = ok ? addr : -1;
        mapped[slot] = size;
      } else if (iova[slot] !== -1) {
        dmaUnmapSingle(dev, iova[slot]!, size, DmaDirection.BIDIRECTIONAL);
        counts.unmaps++;
        iova[slot] = -1;
      }
    });
  }
  const measuredVirtualNs = k.now() - measureStart;
  // What the stream left mapped goes back, so the device ends as it began.
  for (let slot = 0; slot < s.slots; slot++) {
    if (iova[slot] === -1) continue;
    dmaUnmapSingle(dev, iova[slot]!, mapped[slot]!, DmaDirection.BIDIRECTIONAL);
    counts.unmaps++;
  }
  dmaSetMask(dev, maskBits(savedMask));
  pool.free();
  return { device: dev.name, stream: workload.name, ops: s.length, measuredOps: s.length - s.measureFrom, ...counts, measuredVirtualNs };
}

/**
 * Guest pages for the buffers: as many as the stream's slots span, up to
 * POOL_BYTES; a slot's buffer is its place in the stream's layout, folded into the pool.
 */
function allocPool(k: Kernel, phys: Float64Array, pages: Uint32Array) {
  let lo = Infinity;
  let hi = 0;
  for (let i = 0; i < phys.length; i++) {
    lo = Math.min(lo, phys[i]!);
    hi = Math.max(hi, phys[i]! + pages[i]!);
  }
  const span = phys.length === 0 ? 1 : hi - lo;
  let count = Math.min(span, POOL_BYTES / PAGE_SIZE);
  let base = k.pages.alloc(count);
  while (base < 0 && count > 64) base = k.pages.alloc((count >>= 1));
  if (base < 0) throw new Error('init: workload.dma: no memory for the buffer pool');
  const poolPages = count;
  return {
    /** The buffer of `n` pages at the stream's pfn `pfn`: wrapped into the pool, never past its end. */
    bufferOf(pfn: number, n: number): number {
      const room = Math.max(1, poolPages - n + 1);
      return base + ((pfn - lo) % room) * PAGE_SIZE;
    },
    free: () => k.pages.freePagesAt(base, poolPages),
  };
}

function maskBits(mask: bigint): number {
  return mask.toString(2).length;
}
