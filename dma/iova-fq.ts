// The flush queue of lazy invalidation (Linux dma-iommu.c: struct iova_fq,
// queue_iova, fq_flush_timeout): an unmapped IOVA range waits for one flush of
// the whole IOTLB before it is freed for reuse. Until the range is invalidated
// the device can still reach it; that exposure window is measured here. The
// flush invalidates it, or earlier, with a driver whose UNMAP request is the
// invalidation (virtio-iommu), the sync point that delivered the request.
import type { ExposureStats, FlushQueueConfig } from '../abi/report.ts';
import type { Kernel } from '../kernel/kernel.ts';
import type { Timers } from '../kernel/timer.ts';
import type { IommuDomain, IommuDriver } from './iommu-ops.ts';
import type { IovaDomain } from './iova.ts';

/** Per-CPU queues: 256 entries (one slot stays empty, as Linux's ring), flushed at the latest after 10 ms. */
export const IOVA_DEFAULT_FQ_SIZE = 256;
export const IOVA_DEFAULT_FQ_TIMEOUT_NS = 10e6;
/** One queue for IOMMUs whose every flush a hypervisor shadows (shadow_on_flush): fewer, bigger flushes. */
export const IOVA_SINGLE_FQ_SIZE = 32768;
export const IOVA_SINGLE_FQ_TIMEOUT_NS = 1000e6;

export type FqKernel = Pick<Kernel, 'cpus' | 'trace' | 'now'> & { readonly timers: Pick<Timers, 'add'> };


/** Strict invalidation: nothing stays reachable after its unmap returns. */
export const NO_EXPOSURE: ExposureStats = Object.freeze({ rangesExposed: 0, maxWindowNs: 0, meanWindowNs: 0, maxStale: 0, staleNow: 0 });

/**
 * The exposure window in O(1) per unmap and per invalidation: every range
 * unmapped since the last invalidation is stale, and the next ends all their
 * windows at once. Times are kept relative to the last invalidation so the
 * sums stay exact.
 */
class ExposureMeter {
  private stale = 0;
  private epoch = 0;
  private oldest = 0;
  private offsetSum = 0;
  private ranges = 0;
  private windowSum = 0;
  private maxWindow = 0;
  private maxStale = 0;

  unmapped(now: number): void {
    if (this.stale++ === 0) this.oldest = now;
    this.offsetSum += now - this.epoch;
  }

  /** Returns how many stale ranges this invalidation ended. */
  invalidated(now: number): number {
    const n = this.stale;
    if (n > 0) {
      this.ranges += n;
      this.windowSum += n * (now - this.epoch) - this.offsetSum;
      this.maxWindow = Math.max(this.maxWindow, now - this.oldest);
      this.maxStale = Math.max(this.maxStale, n);
    }
    this.stale = this.offsetSum = 0;
    this.epoch = now;
    return n;
  }

  stats(): ExposureStats {
    const { ranges, maxWindow, maxStale, stale } = this;
    return { rangesExposed: ranges, maxWindowNs: maxWindow, meanWindowNs: ranges ? this.windowSum / ranges : 0, maxStale, staleNow: stale };
  }
}

/** struct iova_fq: a ring of IOVA ranges, each with the flush count it must see finish. */
class IovaFq {
  head = 0;
  tail = 0;
  readonly modMask: number;
  readonly pfns: Float64Array;
  readonly pages: Float64Array;
  /** fq_flush_start_cnt when queued: the range may be reused once a flush started later has finished. */
  readonly counters: Float64Array;

  constructor(size: number) {
    this.modMask = size - 1;
    this.pfns = new Float64Array(size);
    this.pages = new Float64Array(size);
    this.counters = new Float64Array(size);
  }

  full(): boolean {
    return ((this.tail + 1) & this.modMask) === this.head;
  }
}


/** A domain's flush queues: one per CPU, or one for all when the IOMMU shadows flushes. */
export class FlushQueue {
  readonly config: FlushQueueConfig;
  flushes = 0;
  private readonly rings: IovaFq[];
  private readonly single: boolean;
  private timerOn = false;
  private flushStartCnt = 0;
  private flushFinishCnt = 0;
  private readonly exposure = new ExposureMeter();

  constructor(
    private readonly k: FqKernel,
    private readonly iovad: IovaDomain,
    private readonly driver: IommuDriver,
    private readonly domain: IommuDomain,
  ) {
    this.single = driver.caps.shadowOnFlush;
    const size = this.single ? IOVA_SINGLE_FQ_SIZE : IOVA_DEFAULT_FQ_SIZE;
    this.rings = Array.from({ length: this.single ? 1 : k.cpus.count }, () => new IovaFq(size));
    this.config = { queues: this.rings.length, size, timeoutNs: this.single ? IOVA_SINGLE_FQ_TIMEOUT_NS : IOVA_DEFAULT_FQ_TIMEOUT_NS };
    driver.onUnmapsDelivered?.(() => this.exposure.invalidated(this.k.now()));
  }

  /** queue_iova: after the driver unmapped it without syncing. */
  queue(pfn: number, pages: number): void {
    const fq = this.rings[this.single ? 0 : this.k.cpus.current]!;
    // Ranges another CPU's flush already covered go first, so the ring is rarely full.
    this.ringFree(fq);
    if (fq.full()) {
      this.flushIotlb('full');
      this.ringFree(fq);
    }
    const idx = fq.tail;
    fq.tail = (idx + 1) & fq.modMask;
    fq.pfns[idx] = pfn;
    fq.pages[idx] = pages;
    fq.counters[idx] = this.flushStartCnt;
    this.exposure.unmapped(this.k.now());
    if (!this.timerOn) {
      this.timerOn = true;
      this.k.timers.add(this.config.timeoutNs, this.timeout);
    }
  }

  exposureStats(): ExposureStats {
    return this.exposure.stats();
  }

  /** fq_flush_timeout: one flush, then every ring gives its ranges back. */
  private readonly timeout = (): void => {
    this.timerOn = false;
    this.flushIotlb('timeout');
    for (const fq of this.rings) this.ringFree(fq);
  };

  private flushIotlb(reason: 'full' | 'timeout'): void {
    this.flushStartCnt++;
    this.driver.flushIotlbAll(this.domain);
    this.flushFinishCnt++;
    this.flushes++;
    const stale = this.exposure.invalidated(this.k.now());
    if (this.k.trace.enabled) this.k.trace.emit('iommu_dma_fq_flush', { domain: this.domain.name, reason, stale });
  }

  /** Frees every range a finished flush covers. */
  private ringFree(fq: IovaFq): void {
    while (fq.head !== fq.tail && fq.counters[fq.head]! < this.flushFinishCnt) {
      this.iovad.freeFast(fq.pfns[fq.head]!, fq.pages[fq.head]!);
      fq.head = (fq.head + 1) & fq.modMask;
    }
  }
}
