// The split ring in the single-threaded mode: ivory's guest virtqueue
// (drivers/virtio/virtqueue.ts) against its device-side queue
// (platform/virtio/queue.ts) over one guest RAM, with a trivial device that
// uses each buffer as soon as it is kicked. The counterpart of Linux's
// tools/virtio/ringtest: buffers per second and ns per buffer round trip
// (add, kick, pop, push, get_buf), in batches of 1 and 64.
import { benchGuest, programQueue } from './guest.ts';
import { DEVICE_ID, F, bit } from '../abi/virtio.ts';
import type { Virtqueue } from '../drivers/virtio/virtqueue.ts';
import { PhysicalSpace } from '../platform/address-space.ts';
import { EventLoop } from '../platform/events.ts';
import { InterruptController } from '../platform/irq.ts';
import { GuestMemory } from '../platform/memory.ts';
import { HostTrace } from '../platform/trace.ts';
import { DeviceDma, QueueError, SplitQueue } from '../platform/virtio/queue.ts';

export interface RingCase {
  readonly batch: number;
  readonly queueSize: number;
  /** Negotiate ACCESS_PLATFORM: every buffer is mapped and unmapped through the DMA API (direct backend). */
  readonly accessPlatform: boolean;
}

export interface RingResult extends RingCase {
  readonly buffers: number;
  readonly runs: number;
  /** From the median run. */
  readonly buffersPerSec: number;
  readonly nsPerBuffer: number;
  /** From the fastest run: on a shared VM whose CPU speed drifts, the closest to the code's own cost. */
  readonly bestBuffersPerSec: number;
  readonly bestNsPerBuffer: number;
  readonly kicks: number;
}

const MSI = { base: 0xfee0_0000, size: 0x10_0000, destShift: 12 };
const BUFFER_BYTES = 64;

/** A guest virtqueue wired straight to a device queue: a kick runs the device at once. */
function buildRing(c: RingCase): { vq: Virtqueue<number>; bufs: number[] } {
  const mem = new GuestMemory([{ gpa: 0, size: 64 * 2 ** 20 }]);
  const events = new EventLoop();
  const trace = new HostTrace(events);
  trace.enabled = false;
  const space = new PhysicalSpace(mem, new InterruptController(events, trace, MSI, 1), trace, 'bench');
  const devq = new SplitQueue(0, c.queueSize, new DeviceDma(mem, space));

  // The trivial device: drain the ring, use every buffer with nothing written, then re-arm the kick.
  const device = () => {
    do {
      for (let r = devq.pop(); r !== undefined; r = devq.pop()) {
        if (r instanceof QueueError) throw new Error(r.detail);
        devq.push(r, 0);
      }
    } while (devq.enableNotification());
  };
  const features = bit(F.VERSION_1) | bit(F.EVENT_IDX) | (c.accessPlatform ? bit(F.ACCESS_PLATFORM) : 0n);
  const { k, vq } = benchGuest(mem, DEVICE_ID.ENTROPY, features, c.queueSize, device);
  programQueue(devq, vq);
  devq.eventIdx = true;
  devq.enable();
  const bufs = Array.from({ length: c.batch }, () => k.slab.kzalloc(BUFFER_BYTES));
  return { vq, bufs };
}

/** Runs `buffers` round trips in batches; returns elapsed ns. */
function drive(vq: Virtqueue<number>, bufs: number[], buffers: number): number {
  const segs = bufs.map((phys) => [{ phys, len: BUFFER_BYTES }]);
  const none: { phys: number; len: number }[] = [];
  const batch = bufs.length;
  const t0 = process.hrtime.bigint();
  for (let done = 0; done < buffers; ) {
    for (let i = 0; i < batch; i++) if (vq.add(none, segs[i]!, i + 1)) throw new Error('ring full');
    vq.kick();
    for (let got = vq.getBuf(); got !== undefined; got = vq.getBuf()) done++;
  }
  return Number(process.hrtime.bigint() - t0);
}

export function runRing(c: RingCase, buffers: number, runs = 7): RingResult {
  const { vq, bufs } = buildRing(c);
  drive(vq, bufs, Math.min(buffers, 200_000)); // warm-up: let the JIT settle
  const kicks0 = vq.stats.kicks;
  const times: number[] = [];
  for (let r = 0; r < runs; r++) times.push(drive(vq, bufs, buffers));
  times.sort((a, b) => a - b);
  const median = times[Math.floor(runs / 2)]!;
  const best = times[0]!;
  return {
    ...c,
    buffers,
    runs,
    buffersPerSec: Math.round((buffers / median) * 1e9),
    nsPerBuffer: Math.round((median / buffers) * 10) / 10,
    bestBuffersPerSec: Math.round((buffers / best) * 1e9),
    bestNsPerBuffer: Math.round((best / buffers) * 10) / 10,
    kicks: Math.round((vq.stats.kicks - kicks0) / runs),
  };
}
