// The guest's account of a run, handed back at power-off (GuestExit.report)
// and printed by the CLI next to the host's. Plain JSON: 64-bit values are
// hex strings.
import type { TraceEvent } from './trace.ts';
import type { InitResult } from './workload.ts';

export interface StatusStep {
  readonly op: 'read' | 'write';
  readonly value: number;
  readonly names: readonly string[];
}

export interface GuestQueueReport {
  readonly name: string;
  readonly size: number;
  readonly added: number;
  readonly bytesOut: number;
  readonly bytesIn: number;
  readonly kicks: number;
  readonly kicksSuppressed: number;
  readonly interrupts: number;
  readonly broken: boolean;
}

export interface GuestVirtioReport {
  readonly name: string;
  readonly transport: string;
  /** The transport device: a PCI BDF or a virtio-mmio platform device. */
  readonly busDevice: string;
  readonly deviceId: number;
  readonly deviceType: string;
  readonly driver: string | null;
  readonly offered: string;
  readonly offeredNames: readonly string[];
  readonly accepted: string;
  readonly acceptedNames: readonly string[];
  readonly status: readonly StatusStep[];
  readonly usesDmaApi: boolean;
  readonly queues: readonly GuestQueueReport[];
  readonly stats: Readonly<Record<string, number>> | null;
  readonly errors: readonly string[];
}

export interface GuestBusDevice {
  readonly bus: string;
  readonly name: string;
  /** vendor:device for PCI, the firmware's kind for platform devices. */
  readonly id: string;
  readonly driver: string | null;
  readonly dmaBackend: string | null;
}

export interface GuestDmaDevice {
  readonly device: string;
  readonly backend: string;
  readonly maps: number;
  readonly unmaps: number;
  readonly bytesMapped: number;
  readonly mappingErrors: number;
  readonly bounces: number;
}

/** The bounce buffer pool, when the kernel set one up. */
export interface GuestSwiotlb {
  readonly start: number;
  /** 2 KiB slots in the pool. */
  readonly nslabs: number;
  readonly used: number;
  readonly hiwater: number;
  readonly bounces: number;
  readonly bytesBounced: number;
}

export interface GuestReport {
  readonly kernel: { readonly cmdline: string; readonly cpus: number; readonly memoryBytes: number; readonly panic: string | null };
  readonly busDevices: readonly GuestBusDevice[];
  readonly virtio: readonly GuestVirtioReport[];
  readonly dma: { readonly swiotlb: GuestSwiotlb | null; readonly devices: readonly GuestDmaDevice[] };
  readonly workload: InitResult | null;
  readonly interrupts: { readonly byHandler: Readonly<Record<string, number>>; readonly spurious: number };
  readonly errors: readonly string[];
  readonly dmesg: readonly string[];
  readonly trace: readonly TraceEvent[];
}
