// virtio-rng driver (virtio 1.4 §5.4; Linux drivers/char/hw_random/virtio-rng.c):
// one queue of device-writable buffers that the device fills with entropy. One
// request at a time, as Linux's hwrng does; the caller sleeps until it is used.
import { DEVICE_ID } from '../abi/virtio.ts';
import { VIRTIO_RNG_QUEUE } from '../abi/virtio-rng.ts';
import type { Kernel } from '../kernel/kernel.ts';
import { PAGE_SIZE } from '../kernel/page-alloc.ts';
import { VirtioError, type VirtioDevice, type VirtioDriver } from './virtio/core.ts';
import type { Segment, Virtqueue } from './virtio/virtqueue.ts';

export interface RngStats {
  requests: number;
  bytes: number;
}

/** The guest buffer the device fills; larger reads take several requests. */
const RNG_BUF_BYTES = PAGE_SIZE;
const NO_SEGMENTS: readonly Segment[] = [];

export class VirtioRng {
  readonly stats: RngStats = { requests: 0, bytes: 0 };
  private readonly k: Kernel;
  private readonly vq: Virtqueue<VirtioRng>;
  private readonly buf: number;
  /** Bytes the device reported for the request in flight; undefined while it is outstanding. */
  private usedLen: number | undefined;

  constructor(readonly vdev: VirtioDevice) {
    this.k = vdev.k;
    const vqs = vdev.findVqs([{ name: 'input', callback: () => this.collect() }]);
    this.vq = vqs[VIRTIO_RNG_QUEUE] as Virtqueue<VirtioRng>;
    this.buf = this.k.slab.kzalloc(RNG_BUF_BYTES);
    if (this.buf < 0) throw new VirtioError('ENOMEM', `${vdev.name}: no memory for the entropy buffer`);
  }

  /** Returns `bytes` bytes of device entropy; throws when the device stops providing any. */
  read(bytes: number): Uint8Array {
    const out = new Uint8Array(bytes);
    for (let filled = 0; filled < bytes; ) {
      const want = Math.min(bytes - filled, RNG_BUF_BYTES);
      const got = this.request(want);
      if (got === 0) throw new VirtioError('EIO', `${this.vdev.name}: device returned no entropy`);
      out.set(this.k.mem.bytes(this.buf, got), filled);
      filled += got;
    }
    return out;
  }

  remove(): void {
    this.k.slab.kfree(this.buf);
  }

  /** One buffer to the device; sleeps until it comes back and returns how many bytes it holds. */
  private request(len: number): number {
    this.usedLen = undefined;
    const err = this.vq.add(NO_SEGMENTS, [{ phys: this.buf, len }], this);
    if (err) throw new VirtioError(err, `${this.vdev.name}: cannot queue a request: ${err}`);
    this.vq.kick();
    this.k.irqs.waitEvent(() => this.usedLen !== undefined || this.vq.broken, `${this.vdev.name} entropy`);
    if (this.usedLen === undefined) throw new VirtioError('EIO', `${this.vdev.name}: queue broken`);
    if (this.usedLen > len) throw new VirtioError('EIO', `${this.vdev.name}: device claims ${this.usedLen} bytes of a ${len}-byte buffer`);
    this.stats.requests++;
    this.stats.bytes += this.usedLen;
    return this.usedLen;
  }

  private collect(): void {
    const used = this.vq.getBuf();
    if (used) this.usedLen = used.len;
  }
}

export const virtioRngDriver: VirtioDriver = {
  name: 'virtio_rng',
  deviceId: DEVICE_ID.ENTROPY,
  featureTable: [],
  probe(vdev) {
    vdev.drvdata = new VirtioRng(vdev);
  },
  remove(vdev) {
    (vdev.drvdata as VirtioRng).remove();
    vdev.drvdata = undefined;
  },
};
