// virtio-blk driver (virtio 1.4 §5.2; Linux drivers/block/virtio_blk.c): one
// request queue; a request is a 16-byte header (device-readable), the data
// (readable for writes, writable for reads and GET_ID) and one status byte.
import { DEVICE_ID, has } from '../abi/virtio.ts';
import {
  SECTOR_SIZE,
  VIRTIO_BLK_F,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S,
  VIRTIO_BLK_STATUS_BYTES,
  VIRTIO_BLK_T,
  VirtioBlkConfig,
  VirtioBlkReqHeader,
} from '../abi/virtio-blk.ts';
import type { Kernel } from '../kernel/kernel.ts';
import { PAGE_SIZE } from '../kernel/page-alloc.ts';
import { VirtioError, type VirtioDevice, type VirtioDriver } from './virtio/core.ts';
import type { Segment, Virtqueue, VqError } from './virtio/virtqueue.ts';

export type BlkRequestType = 'read' | 'write' | 'flush' | 'get-id';
export type BlkStatus = 'OK' | 'IOERR' | 'UNSUPP';
/** Why submit() refused a request before the device saw it. */
export type BlkSubmitError = VqError | 'EROFS' | 'EINVAL' | 'EOPNOTSUPP';

export interface BlkRequest {
  readonly type: BlkRequestType;
  /** First 512-byte sector, for read and write. */
  readonly sector?: number;
  /** Guest-physical data buffer: none for flush, VIRTIO_BLK_ID_BYTES for get-id. */
  readonly phys?: number;
  readonly len?: number;
  readonly done?: (status: BlkStatus, req: BlkRequest) => void;
}

export interface BlkConfig {
  /** In 512-byte sectors, whatever the block size. */
  readonly capacity: bigint;
  /** Largest data segment (SIZE_MAX), 0 when not negotiated. */
  readonly sizeMax: number;
  /** Most data segments per request (SEG_MAX), 0 when not negotiated. */
  readonly segMax: number;
  /** Logical block size (BLK_SIZE), 512 when not negotiated. */
  readonly blkSize: number;
  readonly readOnly: boolean;
  readonly flush: boolean;
}

export interface BlkStats {
  requests: number;
  completed: number;
  errors: number;
  bytesRead: number;
  bytesWritten: number;
}

const HDR = VirtioBlkReqHeader.off;
const CFG = VirtioBlkConfig.off;
const TYPE_CODE: Readonly<Record<BlkRequestType, number>> = { read: VIRTIO_BLK_T.IN, write: VIRTIO_BLK_T.OUT, flush: VIRTIO_BLK_T.FLUSH, 'get-id': VIRTIO_BLK_T.GET_ID };
/** Each request slot holds its header and, after it, its status byte (rounded up to a kmalloc-friendly size). */
const SLOT_BYTES = 32;
const STATUS_OFF = VirtioBlkReqHeader.span;

export class VirtioBlk {
  readonly stats: BlkStats = { requests: 0, completed: 0, errors: 0, bytesRead: 0, bytesWritten: 0 };
  readonly config: BlkConfig;
  private readonly k: Kernel;
  private readonly vq: Virtqueue<number>;
  /** kzalloc'd header + status slots, one per descriptor: never more requests in flight than that. */
  private readonly slots: number;
  private readonly inflight: (BlkRequest | undefined)[];
  private readonly freeSlots: number[];
  private readonly hdrSegs: Segment[];
  private readonly statusSegs: Segment[];

  constructor(readonly vdev: VirtioDevice) {
    this.k = vdev.k;
    this.config = readConfig(vdev);
    const [vq] = vdev.findVqs([{ name: 'requests', callback: () => this.complete() }]);
    this.vq = vq as Virtqueue<number>;
    const n = this.vq.num;
    this.slots = this.k.slab.kzalloc(n * SLOT_BYTES);
    if (this.slots < 0) throw new VirtioError('ENOMEM', `${vdev.name}: no memory for request headers`);
    this.inflight = new Array<BlkRequest | undefined>(n).fill(undefined);
    this.freeSlots = Array.from({ length: n }, (_, i) => n - 1 - i);
    this.hdrSegs = Array.from({ length: n }, (_, i) => ({ phys: this.slots + i * SLOT_BYTES, len: VirtioBlkReqHeader.span }));
    this.statusSegs = Array.from({ length: n }, (_, i) => ({ phys: this.slots + i * SLOT_BYTES + STATUS_OFF, len: VIRTIO_BLK_STATUS_BYTES }));
    const c = this.config;
    this.k.log.info(`${vdev.name}: ${c.capacity} ${SECTOR_SIZE}-byte logical blocks${c.readOnly ? ' (read-only)' : ''}, ${n} request slots`);
  }

  /** Requests that can be submitted right now without ENOSPC from the slot pool. */
  get freeRequests(): number {
    return this.freeSlots.length;
  }

  /** Queues `req` and kicks the device; `req.done` runs from the interrupt handler. */
  submit(req: BlkRequest): BlkSubmitError | undefined {
    const err = this.check(req);
    if (err) return err;
    const slot = this.freeSlots.pop();
    if (slot === undefined) return 'ENOSPC';
    const hdr = this.slots + slot * SLOT_BYTES;
    const dv = this.k.mem.dv;
    const o = this.k.mem.off(hdr, SLOT_BYTES);
    dv.setUint32(o + HDR.type, TYPE_CODE[req.type], true);
    dv.setUint32(o + HDR.reserved, 0, true);
    dv.setBigUint64(o + HDR.sector, BigInt(req.sector ?? 0), true);
    const data: Segment[] = req.len ? [{ phys: req.phys!, len: req.len }] : [];
    const out = req.type === 'write' ? [this.hdrSegs[slot]!, ...data] : [this.hdrSegs[slot]!];
    const ins = req.type === 'write' ? [this.statusSegs[slot]!] : [...data, this.statusSegs[slot]!];
    const vqErr = this.vq.add(out, ins, slot);
    if (vqErr) {
      this.freeSlots.push(slot);
      return vqErr;
    }
    this.inflight[slot] = req;
    this.stats.requests++;
    this.vq.kick();
    return undefined;
  }

  /** Submits and sleeps until the request completes. */
  submitAndWait(req: Omit<BlkRequest, 'done'>): BlkStatus | BlkSubmitError {
    let status: BlkStatus | undefined;
    const err = this.submit({ ...req, done: (s) => (status = s) });
    if (err) return err;
    this.k.irqs.waitEvent(() => status !== undefined || this.vq.broken, `${this.vdev.name} ${req.type}`);
    return status ?? 'EIO';
  }

  /** After the device was reset: requests it never completed fail. */
  remove(): void {
    for (let slot = this.vq.detachUnusedBuf(); slot !== undefined; slot = this.vq.detachUnusedBuf()) this.finish(slot, 'IOERR');
    this.k.slab.kfree(this.slots);
  }

  /** Checks made before the device sees a request (it checks again). */
  private check(req: BlkRequest): BlkSubmitError | undefined {
    const c = this.config;
    const len = req.len ?? 0;
    switch (req.type) {
      case 'flush':
        return !c.flush ? 'EOPNOTSUPP' : len !== 0 ? 'EINVAL' : undefined;
      case 'get-id':
        return len === VIRTIO_BLK_ID_BYTES ? undefined : 'EINVAL';
      case 'write':
      case 'read': {
        if (req.type === 'write' && c.readOnly) return 'EROFS';
        const sector = req.sector ?? 0;
        if (len === 0 || len % c.blkSize !== 0 || (sector * SECTOR_SIZE) % c.blkSize !== 0) return 'EINVAL';
        if (c.sizeMax !== 0 && len > c.sizeMax) return 'EINVAL';
        if (!Number.isSafeInteger(sector) || sector < 0 || BigInt(sector + len / SECTOR_SIZE) > c.capacity) return 'EINVAL';
        return undefined;
      }
    }
  }

  /** virtblk_done: callbacks stay off while draining, and the re-enable re-checks for late completions. */
  private complete(): void {
    do {
      this.vq.disableCb();
      for (let b = this.vq.getBuf(); b; b = this.vq.getBuf()) this.finish(b.token, this.result(b.token, b.len));
    } while (!this.vq.enableCb());
  }

  /** The status byte, trusted only when the used length shows the device wrote it and no more than it was given. */
  private result(slot: number, usedLen: number): BlkStatus {
    const req = this.inflight[slot]!;
    const dataIn = req.type === 'read' || req.type === 'get-id' ? req.len! : 0;
    const expected = dataIn + VIRTIO_BLK_STATUS_BYTES;
    const code = this.k.mem.dv.getUint8(this.k.mem.off(this.slots + slot * SLOT_BYTES + STATUS_OFF));
    const status: BlkStatus = code === VIRTIO_BLK_S.OK ? 'OK' : code === VIRTIO_BLK_S.UNSUPP ? 'UNSUPP' : 'IOERR';
    const short = status === 'OK' && req.type === 'read' && usedLen !== expected;
    if (usedLen === 0 || usedLen > expected || short) {
      this.vdev.fail(`${this.vdev.name}: ${req.type} completed with used length ${usedLen}, expected ${expected}`);
      return 'IOERR';
    }
    return status;
  }

  private finish(slot: number, status: BlkStatus): void {
    const req = this.inflight[slot]!;
    this.inflight[slot] = undefined;
    this.freeSlots.push(slot);
    this.stats.completed++;
    if (status !== 'OK') this.stats.errors++;
    else if (req.type === 'read') this.stats.bytesRead += req.len!;
    else if (req.type === 'write') this.stats.bytesWritten += req.len!;
    req.done?.(status, req);
  }
}

/**
 * Reads every field in one generation-stable pass: capacity may change under
 * us (a resize). SEG_MAX is recorded only, as a request never has more than one data segment.
 */
function readConfig(vdev: VirtioDevice): BlkConfig {
  const f = vdev.features;
  const u32 = (off: number, feature: number, dflt: number) => (has(f, feature) ? vdev.configRead(off, 4) : dflt);
  const config = vdev.configReadStable(() => ({
    capacity: (BigInt(vdev.configRead(CFG.capacity + 4, 4)) << 32n) | BigInt(vdev.configRead(CFG.capacity, 4)),
    sizeMax: u32(CFG.size_max, VIRTIO_BLK_F.SIZE_MAX, 0),
    segMax: u32(CFG.seg_max, VIRTIO_BLK_F.SEG_MAX, 0),
    blkSize: u32(CFG.blk_size, VIRTIO_BLK_F.BLK_SIZE, SECTOR_SIZE),
    readOnly: has(f, VIRTIO_BLK_F.RO),
    flush: has(f, VIRTIO_BLK_F.FLUSH),
  }));
  // blk_validate_block_size: a power of two from the sector size up to a page.
  const b = config.blkSize;
  if (b < SECTOR_SIZE || b > PAGE_SIZE || (b & (b - 1)) !== 0) throw new VirtioError('EINVAL', `${vdev.name}: virtio_blk: invalid block size: 0x${b.toString(16)}`);
  return config;
}

export const virtioBlkDriver: VirtioDriver = {
  name: 'virtio_blk',
  deviceId: DEVICE_ID.BLOCK,
  featureTable: [VIRTIO_BLK_F.SIZE_MAX, VIRTIO_BLK_F.SEG_MAX, VIRTIO_BLK_F.BLK_SIZE, VIRTIO_BLK_F.FLUSH, VIRTIO_BLK_F.RO],
  probe(vdev) {
    vdev.drvdata = new VirtioBlk(vdev);
  },
  remove(vdev) {
    (vdev.drvdata as VirtioBlk).remove();
    vdev.drvdata = undefined;
  },
};
