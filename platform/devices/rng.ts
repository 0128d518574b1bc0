// virtio-rng device model (virtio 1.4 §5.4): one queue whose device-writable
// buffers it fills from a seeded xoshiro128** generator, so a run is
// reproducible. A buffer with a device-readable part is a driver bug: DEVICE_NEEDS_RESET
// (stricter than QEMU, which ignores the readable part).
import { Xoshiro128 } from '../../abi/prng.ts';
import { DEVICE_ID } from '../../abi/virtio.ts';
import { type DeviceContext, VirtioDeviceModel, type VirtioDeviceOptions } from '../virtio/device.ts';
import type { DescriptorChain, SplitQueue } from '../virtio/queue.ts';

/** Service time of one request: the backend read (QEMU's rng-random from /dev/urandom). */
export const RNG_REQUEST_NS = 2000;
/** Entropy generation at about 4 GB/s. */
export const RNG_NS_PER_KIB = 250;

export interface VirtioRngOptions extends VirtioDeviceOptions {
  readonly seed: number;
}

export class VirtioRng extends VirtioDeviceModel {
  private readonly prng: Xoshiro128;
  private scratch = new Uint8Array(4096);
  bytesProduced = 0;

  constructor(ctx: DeviceContext, opts: VirtioRngOptions) {
    super(ctx, { deviceId: DEVICE_ID.ENTROPY, numQueues: 1, features: 0n, configSize: 0 }, opts);
    this.prng = new Xoshiro128(opts.seed);
  }

  protected serve(_queue: SplitQueue, chain: DescriptorChain): number {
    if (chain.readable.length > 0) {
      this.virtioError('RNG_READABLE_BUFFER', `request head ${chain.head}: device-readable descriptor in an entropy request`);
      return 0;
    }
    const n = chain.writableBytes;
    if (this.scratch.length < n) this.scratch = new Uint8Array(n);
    const bytes = this.scratch.subarray(0, n);
    this.prng.fill(bytes);
    this.bytesProduced += chain.write(0, bytes);
    return RNG_REQUEST_NS + (n / 1024) * RNG_NS_PER_KIB;
  }

  protected deviceStats(): Record<string, number> {
    return { bytesProduced: this.bytesProduced };
  }
}
