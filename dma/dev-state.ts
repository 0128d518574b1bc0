// Per-device DMA state that Linux keeps in struct device and kernel/device.ts
// does not carry: dma_parms->min_align_mask, where the device's DMA warnings and
// trace events go, and ivory's per-device counters for the report.
import type { Device } from '../kernel/device.ts';
import type { Kernel } from '../kernel/kernel.ts';
import { LOGLEVEL } from '../kernel/log.ts';

export interface DmaStats {
  /** Successful streaming mappings (one per scatterlist entry). */
  maps: number;
  unmaps: number;
  bytesMapped: number;
  mappingErrors: number;
  /** Streaming mappings that went through a swiotlb bounce buffer. */
  bounces: number;
}

export interface DmaDevState {
  readonly stats: DmaStats;
  /** dma_get_min_align_mask(): low address bits a bounce buffer must keep from the original. */
  minAlignMask: number;
  /** Set when the DMA subsystem configures the device; a bare test device has none. */
  kernel: Pick<Kernel, 'log' | 'trace'> | undefined;
}

const states = new WeakMap<Device, DmaDevState>();

export function dmaState(dev: Device): DmaDevState {
  let st = states.get(dev);
  if (!st) {
    st = { stats: { maps: 0, unmaps: 0, bytesMapped: 0, mappingErrors: 0, bounces: 0 }, minAlignMask: 0, kernel: undefined };
    states.set(dev, st);
  }
  return st;
}

/** dev_printk(): the message prefixed with the driver and device name, as Linux prints it. */
function devPrintk(dev: Device, level: number, text: string): void {
  const who = dev.driver ? `${dev.driver.name} ${dev.name}` : dev.name;
  dmaState(dev).kernel?.log.printk(level, `${who}: ${text}`);
}

export const devWarn = (dev: Device, text: string): void => devPrintk(dev, LOGLEVEL.WARNING, text);
export const devNotice = (dev: Device, text: string): void => devPrintk(dev, LOGLEVEL.NOTICE, text);

/** The trace, only while it records: `traceOf(st)?.emit(...)` then builds no arguments when tracing is off. */
export function traceOf(st: DmaDevState): Kernel['trace'] | undefined {
  const t = st.kernel?.trace;
  return t?.enabled ? t : undefined;
}
