// A trace event as both worlds record it. Names follow QEMU for the device
// models (virtio_queue_notify, virtio_blk_handle_write) and Linux for the
// guest (virtio_ring: vring_add, dma_map_page). Timestamps are virtual ns.
export type TraceArgs = Readonly<Record<string, string | number | boolean>>;

export interface TraceEvent {
  readonly ts: number;
  readonly side: 'guest' | 'host';
  readonly cpu?: number;
  readonly name: string;
  readonly args?: TraceArgs;
}
