// virtio-iommu figures. (1) MAP+UNMAP pairs per second through the device's
// real request queue, one pair per kick or 64 per kick. (2) The disk
// end to end: the same workload without an IOMMU, behind it in strict mode and
// in lazy mode, as modelled throughput (bytes per second of virtual time: what
// the guest would see) and as the simulator's own wall-clock speed.
import { benchGuest, guestImage, programQueue } from './guest.ts';
import { DEVICE_ID, F, STATUS, bit } from '../abi/virtio.ts';
import { VIRTIO_IOMMU_F, VIRTIO_IOMMU_T, VirtioIommuReqAttach, VirtioIommuReqMap, VirtioIommuReqUnmap, requestReadable } from '../abi/virtio-iommu.ts';
import type { Segment } from '../drivers/virtio/virtqueue.ts';
import { PhysicalSpace } from '../platform/address-space.ts';
import { EventLoop } from '../platform/events.ts';
import { VIOMMU_REQUEST_NS, VirtioIommu } from '../platform/iommu/virtio-iommu.ts';
import { type DeviceContext, VirtioDeviceModel } from '../platform/virtio/device.ts';
import type { DescriptorChain, SplitQueue } from '../platform/virtio/queue.ts';
import { InterruptController } from '../platform/irq.ts';
import { GuestMemory } from '../platform/memory.ts';
import { HostTrace } from '../platform/trace.ts';
import { type RunReport, runScenario } from '../cli/run.ts';
import { parseScenario } from '../cli/scenario.ts';

const PAGE = 4096;

export interface PairsResult {
  readonly pairs: number;
  readonly runs: number;
  /** From the median run. */
  readonly pairsPerSec: number;
  readonly nsPerPair: number;
  /** From the fastest run: on a shared VM whose CPU speed drifts, the closest to the code's own cost. */
  readonly bestPairsPerSec: number;
  readonly bestNsPerPair: number;
}

/**
 * Who answers the requests: the virtio-iommu device model, or a device that
 * writes OK into every request's tail without reading it. The second is the
 * floor: what the guest ring, the device-side queue and the event loop cost
 * with no request handling at all.
 */
export type PairsDevice = 'virtio-iommu' | 'null';

/**
 * A guest virtqueue (drivers/virtio/virtqueue.ts) on the device model's real
 * request queue: pre-encoded MAP and UNMAP requests of single 4 KiB pages are
 * added `batch` at a time, kicked once, served, and collected. Each MAP and
 * its UNMAP make a pair. This is the device's cost plus the ring's, without
 * the guest driver's bookkeeping. Each run has a ring of its own, warmed up
 * first, so that virtual time stays as short as in a real scenario.
 */
export function runPairs(pairs: number, batch: number, device: PairsDevice = 'virtio-iommu', runs = 5): PairsResult {
  pairs = Math.ceil(pairs / batch) * batch; // whole batches
  const times: number[] = [];
  for (let r = 0; r < runs; r++) {
    const driver = pairsDriver(batch, device);
    driver.drive(Math.min(pairs, 20_000));
    times.push(driver.drive(pairs));
    driver.check();
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(runs / 2)]!;
  const best = times[0]!;
  return {
    pairs,
    runs,
    pairsPerSec: Math.round((pairs / median) * 1e9),
    nsPerPair: Math.round(median / pairs),
    bestPairsPerSec: Math.round((pairs / best) * 1e9),
    bestNsPerPair: Math.round(best / pairs),
  };
}

/** The ring of runPairs, kept: drive(n) runs n pairs (whole batches, so rounded up) and returns the ns taken; check() throws unless every request was answered OK. */
export function pairsDriver(batch: number, device: PairsDevice = 'virtio-iommu'): { drive(n: number): number; check(): void } {
  const { vq, events, reqs, failed } = buildIommuRing(batch, device);
  let pairs = 0;
  const drive = (n: number) => {
    const t0 = process.hrtime.bigint();
    for (let done = 0; done < n; ) {
      for (let j = 0; j < batch; j++) vq.add(reqs.map[j]!, reqs.tail[j]!, 1);
      vq.kick();
      while (events.runOne());
      for (let j = 0; j < batch; j++) vq.add(reqs.unmap[j]!, reqs.tail[j]!, 2);
      vq.kick();
      while (events.runOne());
      for (let used = vq.getBuf(); used; used = vq.getBuf()) if (used.len !== TAIL_BYTES) throw new Error(`a benchmark request was used with length ${used.len}`);
      done += batch;
      pairs += batch;
    }
    return Number(process.hrtime.bigint() - t0);
  };
  const check = () => {
    const bad = failed(2 * pairs);
    if (bad) throw new Error(`benchmark requests failed: ${bad}`);
  };
  return { drive, check };
}

const TAIL_BYTES = 4;

/** See PairsDevice: answers OK, counts, reads nothing. */
class NullRequestDevice extends VirtioDeviceModel {
  served = 0;
  private readonly ok = new Uint8Array(TAIL_BYTES);

  constructor(ctx: DeviceContext, features: bigint) {
    super(ctx, { deviceId: DEVICE_ID.IOMMU, numQueues: 1, features, configSize: 0 }, {});
  }

  protected serve(_queue: SplitQueue, chain: DescriptorChain): number {
    chain.write(0, this.ok);
    this.served++;
    return VIOMMU_REQUEST_NS;
  }

  protected deviceStats(): Record<string, number> {
    return { served: this.served };
  }
}

function buildIommuRing(batch: number, kind: PairsDevice) {
  const mem = new GuestMemory([{ gpa: 0, size: 64 * 2 ** 20 }]);
  const events = new EventLoop();
  const trace = new HostTrace(events);
  trace.enabled = false;
  const irq = new InterruptController(events, trace, { base: 0xfee0_0000, size: 0x10_0000, destShift: 12 }, 1);
  const physical = new PhysicalSpace(mem, irq, trace, 'bench');
  const features = bit(F.VERSION_1) | bit(F.EVENT_IDX) | bit(VIRTIO_IOMMU_F.MAP_UNMAP) | bit(VIRTIO_IOMMU_F.INPUT_RANGE);
  const ctx = { name: 'virtio-iommu', mem, space: physical, events, trace };
  let device: VirtioDeviceModel;
  let failed: (requests: number) => string | undefined;
  if (kind === 'null') {
    const d = new NullRequestDevice(ctx, features & 0xff_ffffn);
    // The ATTACH below is one more request.
    failed = (requests) => (d.served === requests + 1 ? undefined : `${d.served - 1} of ${requests} served`);
    device = d;
  } else {
    const d = new VirtioIommu(ctx, { profile: 'spec', awBits: 48 });
    d.addEndpoint(8, { physical, name: 'bench' });
    failed = () => {
      const requests = d.iommuReport().requests;
      const notOk = (type: string) => Object.keys(requests[type] ?? {}).filter((s) => s !== 'OK');
      const bad = [...notOk('MAP'), ...notOk('UNMAP')];
      return bad.length > 0 ? bad.join(', ') : undefined;
    };
    device = d;
  }
  device.attach({ signalUsed: () => {}, signalConfig: () => {} });
  const { k, vq } = benchGuest(mem, DEVICE_ID.IOMMU, features, 256, () => device.queueNotify(0), () => events.runOne());

  // The device side, programmed as a transport would: features, the queue, DRIVER_OK.
  device.setDriverFeatureWord(0, Number(features & 0xffff_ffffn));
  device.setDriverFeatureWord(1, Number(features >> 32n));
  device.setStatus(STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK);
  programQueue(device.queues[0]!, vq);
  device.enableQueue(0);
  device.setStatus(STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK);

  // Requests are written once; the ring carries them again and again.
  const place = (bytes: Uint8Array): Segment[] => {
    const gpa = k.slab.kzalloc(bytes.length);
    k.mem.write(gpa, bytes);
    return [{ phys: gpa, len: requestReadable(bytes.length) }];
  };
  const tail = (): Segment[] => [{ phys: k.slab.kzalloc(TAIL_BYTES), len: TAIL_BYTES }];
  const attach = VirtioIommuReqAttach.encode({ type: VIRTIO_IOMMU_T.ATTACH, domain: 1, endpoint: 8, flags: 0, status: 0 });
  vq.add(place(attach), tail(), 0);
  vq.kick();
  events.runUntil(() => false);
  vq.getBuf();
  const reqs = { map: [] as Segment[][], unmap: [] as Segment[][], tail: [] as Segment[][] };
  for (let j = 0; j < batch; j++) {
    const iova = BigInt(j * PAGE);
    reqs.map.push(place(VirtioIommuReqMap.encode({ type: VIRTIO_IOMMU_T.MAP, domain: 1, virt_start: iova, virt_end: iova + BigInt(PAGE - 1), phys_start: 0x10_0000n + iova, flags: 3, status: 0 })));
    reqs.unmap.push(place(VirtioIommuReqUnmap.encode({ type: VIRTIO_IOMMU_T.UNMAP, domain: 1, virt_start: iova, virt_end: iova + BigInt(PAGE - 1), status: 0 })));
    // A request's status tail is free again once it is used, so its MAP and its UNMAP share one.
    reqs.tail.push(tail());
  }
  return { vq, events, reqs, failed };
}

export interface DiskResult {
  readonly mode: string;
  readonly bytes: number;
  /** What the modelled guest sees: bytes moved per second of virtual time. */
  readonly virtualMBps: number;
  /** How fast the simulator runs it. */
  readonly wallMBps: number;
  readonly mapRequests: number;
  readonly unmapRequests: number;
}

const MODES = [
  { mode: 'no IOMMU', iommu: false, cmdline: '' },
  { mode: 'IOMMU strict', iommu: true, cmdline: 'iommu.strict=1 trace=0' },
  { mode: 'IOMMU lazy', iommu: true, cmdline: 'iommu.strict=0 trace=0' },
];

/** Request sizes the disk runs at: the headline 64 KiB, then larger ones. */
export const DISK_REQUEST_SIZES = [64 * 1024, 256 * 1024];

/** Request sizes of the sweep: where the IOMMU's per-buffer round trips stop mattering. */
export const DISK_SWEEP_SIZES = [16, 32, 64, 96, 128, 192, 256, 512].map((kib) => kib * 1024);

export async function runDisk(bytes: number, requestBytes: number): Promise<DiskResult[]> {
  const out: DiskResult[] = [];
  for (const m of MODES) {
    const s = diskScenario(m, bytes, requestBytes);
    await runScenario(s, guestImage()); // warm-up
    const t0 = process.hrtime.bigint();
    const { report, machine } = await runScenario(s, guestImage());
    const wall = Number(process.hrtime.bigint() - t0);
    machine.trace.enabled = false;
    const req = report.host.iommu?.requests ?? {};
    out.push({
      mode: m.mode,
      bytes,
      virtualMBps: modelledMBps(m, report, bytes),
      wallMBps: movedMBps(bytes, wall),
      mapRequests: Object.values(req['MAP'] ?? {}).reduce((a, b) => a + b, 0),
      unmapRequests: Object.values(req['UNMAP'] ?? {}).reduce((a, b) => a + b, 0),
    });
  }
  return out;
}

export interface DiskSweepRow {
  readonly requestBytes: number;
  /** Modelled MB/s without the IOMMU, and strict and lazy as a share of it. */
  readonly noIommuMBps: number;
  readonly strictShare: number;
  readonly lazyShare: number;
}

/** The modelled figures only (virtual time does not depend on the host), one run per mode and size. */
export async function runDiskSweep(bytes: number, sizes: readonly number[] = DISK_SWEEP_SIZES): Promise<DiskSweepRow[]> {
  const rows: DiskSweepRow[] = [];
  for (const requestBytes of sizes) {
    const mbps: number[] = [];
    for (const m of MODES) mbps.push(modelledMBps(m, (await runScenario(diskScenario(m, bytes, requestBytes), guestImage())).report, bytes));
    const [none, strict, lazy] = mbps;
    rows.push({ requestBytes, noIommuMBps: none!, strictShare: strict! / none!, lazyShare: lazy! / none! });
  }
  return rows;
}

type DiskMode = (typeof MODES)[number];

function diskScenario(m: DiskMode, bytes: number, requestBytes: number) {
  return parseScenario({
    name: `disk ${m.mode}`,
    machine: { preset: 'q35', ram: '512M' },
    cmdline: m.cmdline || 'trace=0',
    ...(m.iommu ? { iommu: {} } : {}),
    devices: [{ type: 'virtio-blk', capacity: bytes, iommu_platform: m.iommu, queue_size: 256 }],
    workload: { seed: 1, disk: { bytes, request_bytes: requestBytes, queue_depth: 16 } },
  });
}

/** The modelled throughput: MB/s of virtual time; throws unless the data verified. */
function modelledMBps(m: DiskMode, report: RunReport, bytes: number): number {
  if (!report.guest.workload?.disk?.verified) throw new Error(`${m.mode}: the disk data did not verify`);
  return movedMBps(bytes, report.virtualTimeNs);
}

/** MB/s, to 0.1, for `bytes` written and then read back in `ns`. */
const movedMBps = (bytes: number, ns: number): number => Math.round(((2 * bytes) / ns) * 1e4) / 10;
