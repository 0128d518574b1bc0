// virtio-blk device model (virtio 1.4 §5.2) over a sparse RAM disk. Where the
// spec leaves room it does what QEMU's virtio_blk_handle_request does, except
// that the used length is exact: the bytes actually written (data + status).
import { fromHiLo } from '../../abi/addr.ts';
import { DEVICE_ID, bit } from '../../abi/virtio.ts';
import { SECTOR_SIZE, VIRTIO_BLK_F, VIRTIO_BLK_FEATURE_NAMES, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S, VIRTIO_BLK_STATUS_BYTES, VIRTIO_BLK_T, VirtioBlkConfig, VirtioBlkReqHeader } from '../../abi/virtio-blk.ts';
import { type DeviceContext, VirtioDeviceModel, type VirtioDeviceOptions } from '../virtio/device.ts';
import type { DescriptorChain, SplitQueue } from '../virtio/queue.ts';

/** Service time of one request: parsing, submission to the block layer and completion (a coroutine round trip in QEMU). */
export const BLK_REQUEST_NS = 4000;
/** Data copy at about 10 GB/s. */
export const BLK_NS_PER_KIB = 100;
/** size_max: advisory largest segment. A RAM disk has no real limit, so it is generous. */
export const BLK_SIZE_MAX = 1 << 20;

export interface VirtioBlkOptions extends VirtioDeviceOptions {
  /** Disk size in bytes, a multiple of 512. */
  readonly capacity: number;
  readonly readOnly?: boolean;
  /** What GET_ID returns: up to 20 bytes, zero-padded (QEMU's serial=). */
  readonly serial?: string;
}

/** A disk in RAM, allocated a chunk at a time on first write so that a large disk costs only what is written. */
export class RamDisk {
  static readonly CHUNK = 64 * 1024;
  private static readonly ZEROS = new Uint8Array(RamDisk.CHUNK);
  private readonly chunks = new Map<number, Uint8Array>();

  constructor(public bytes: number) {}

  /**
   * Visits [offset, offset + len) chunk by chunk with a view of the disk's bytes.
   * Unwritten chunks show as shared zeros unless `allocate`. Stops early when fn returns false.
   */
  each(offset: number, len: number, allocate: boolean, fn: (view: Uint8Array, pos: number) => boolean): void {
    for (let pos = 0; pos < len; ) {
      const at = offset + pos;
      const index = Math.floor(at / RamDisk.CHUNK);
      const start = at - index * RamDisk.CHUNK;
      const n = Math.min(len - pos, RamDisk.CHUNK - start);
      let chunk = this.chunks.get(index);
      if (!chunk && allocate) this.chunks.set(index, (chunk = new Uint8Array(RamDisk.CHUNK)));
      if (!fn((chunk ?? RamDisk.ZEROS).subarray(start, start + n), pos)) return;
      pos += n;
    }
  }

  read(offset: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.each(offset, len, false, (view, pos) => {
      out.set(view, pos);
      return true;
    });
    return out;
  }

  write(offset: number, src: Uint8Array): void {
    this.each(offset, src.length, true, (view, pos) => {
      view.set(src.subarray(pos, pos + view.length));
      return true;
    });
  }

  /** Bytes of host memory the disk holds. */
  get allocated(): number {
    return this.chunks.size * RamDisk.CHUNK;
  }

  /** Changes the size; bytes past a shrunken end are forgotten so that growing again shows zeros. */
  resize(bytes: number): void {
    for (const index of this.chunks.keys()) if (index * RamDisk.CHUNK >= bytes) this.chunks.delete(index);
    const tail = this.chunks.get(Math.floor(bytes / RamDisk.CHUNK));
    tail?.fill(0, bytes % RamDisk.CHUNK);
    this.bytes = bytes;
  }
}

const HDR = VirtioBlkReqHeader;
const S = VIRTIO_BLK_S;

export class VirtioBlk extends VirtioDeviceModel {
  readonly disk: RamDisk;
  readonly readOnly: boolean;
  private readonly id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  private readonly hdr = new Uint8Array(HDR.span);
  private readonly hdrView = new DataView(this.hdr.buffer);
  private readonly statusByte = new Uint8Array(VIRTIO_BLK_STATUS_BYTES);
  readonly counters = { in: 0, out: 0, flush: 0, getId: 0, unsupported: 0, sectorsRead: 0, sectorsWritten: 0, ioErrors: 0 };

  constructor(ctx: DeviceContext, opts: VirtioBlkOptions) {
    if (!Number.isSafeInteger(opts.capacity) || opts.capacity < 0 || opts.capacity % SECTOR_SIZE) throw new Error(`${ctx.name}: capacity ${opts.capacity} is not a multiple of ${SECTOR_SIZE}`);
    const readOnly = opts.readOnly ?? false;
    const features = bit(VIRTIO_BLK_F.SIZE_MAX) | bit(VIRTIO_BLK_F.SEG_MAX) | bit(VIRTIO_BLK_F.BLK_SIZE) | bit(VIRTIO_BLK_F.FLUSH) | (readOnly ? bit(VIRTIO_BLK_F.RO) : 0n);
    super(ctx, { deviceId: DEVICE_ID.BLOCK, numQueues: 1, features, featureNames: VIRTIO_BLK_FEATURE_NAMES, configSize: VirtioBlkConfig.span }, opts);
    this.readOnly = readOnly;
    this.disk = new RamDisk(opts.capacity);
    this.id.set(new TextEncoder().encode(opts.serial ?? '').subarray(0, VIRTIO_BLK_ID_BYTES));
    const C = VirtioBlkConfig.off;
    const cfg = this.configView;
    cfg.setBigUint64(C.capacity, BigInt(opts.capacity / SECTOR_SIZE), true);
    cfg.setUint32(C.size_max, BLK_SIZE_MAX, true);
    // Room for the header and the status descriptors in a full-size chain (QEMU's seg_max_adjust).
    cfg.setUint32(C.seg_max, this.queues[0]!.maxSize - 2, true);
    cfg.setUint32(C.blk_size, SECTOR_SIZE, true);
    cfg.setUint16(C.num_queues, 1, true);
  }

  get capacitySectors(): number {
    return this.disk.bytes / SECTOR_SIZE;
  }

  /** block_resize: the new capacity shows in config space with a new generation and a config interrupt. */
  resize(bytes: number): void {
    this.disk.resize(bytes);
    this.configView.setBigUint64(VirtioBlkConfig.off.capacity, BigInt(bytes / SECTOR_SIZE), true);
    this.configChanged();
  }

  /**
   * One request: a 16-byte header at the start of the readable part, data, and
   * the status byte as the last writable byte, in any framing (§2.6.4). A request
   * without them is a driver bug that QEMU answers with virtio_error, and so does this.
   */
  protected serve(_queue: SplitQueue, chain: DescriptorChain): number {
    if (chain.readableBytes < HDR.span) {
      this.virtioError('BLK_OUTHDR_TOO_SHORT', `request head ${chain.head}: ${chain.readableBytes} readable bytes, header needs ${HDR.span}`);
      return 0;
    }
    if (chain.writableBytes < VIRTIO_BLK_STATUS_BYTES) {
      this.virtioError('BLK_NO_STATUS', `request head ${chain.head}: no writable byte for the status`);
      return 0;
    }
    const statusPos = chain.writableBytes - VIRTIO_BLK_STATUS_BYTES;
    let moved = 0;
    let status: number = S.IOERR;
    if (chain.read(0, this.hdr) === HDR.span) {
      const type = this.hdrView.getUint32(HDR.off.type, true);
      const sector = fromHiLo(this.hdrView.getUint32(HDR.off.sector + 4, true), this.hdrView.getUint32(HDR.off.sector, true));
      switch (type) {
        case VIRTIO_BLK_T.IN:
          this.counters.in++;
          status = this.transfer(chain, sector, statusPos, false);
          if (status === S.OK) moved = statusPos;
          break;
        case VIRTIO_BLK_T.OUT:
          this.counters.out++;
          // A read-only disk fails writes with IOERR, as QEMU's block layer does.
          status = this.readOnly ? S.IOERR : this.transfer(chain, sector, chain.readableBytes - HDR.span, true);
          if (status === S.OK) moved = chain.readableBytes - HDR.span;
          break;
        case VIRTIO_BLK_T.FLUSH:
          // RAM-backed: every write is already stable.
          this.counters.flush++;
          status = S.OK;
          break;
        case VIRTIO_BLK_T.GET_ID:
          this.counters.getId++;
          chain.write(0, this.id.subarray(0, Math.min(VIRTIO_BLK_ID_BYTES, statusPos)));
          status = chain.faulted ? S.IOERR : S.OK;
          break;
        default:
          this.counters.unsupported++;
          status = S.UNSUPP;
      }
    }
    if (status === S.IOERR) this.counters.ioErrors++;
    this.statusByte[0] = status;
    chain.write(statusPos, this.statusByte);
    return BLK_REQUEST_NS + (moved / 1024) * BLK_NS_PER_KIB;
  }

  protected deviceStats(): Record<string, number> {
    return { ...this.counters, diskBytesAllocated: this.disk.allocated };
  }

  /** Moves `len` bytes between the disk at `sector` and the chain's data; OUT reads the guest, IN writes it. */
  private transfer(chain: DescriptorChain, sector: number | bigint, len: number, out: boolean): number {
    const sectors = len / SECTOR_SIZE;
    // Checked before any data moves, as QEMU's virtio_blk_sect_range_ok.
    if (!Number.isInteger(sectors) || typeof sector === 'bigint' || sector + sectors > this.capacitySectors) return S.IOERR;
    this.disk.each(sector * SECTOR_SIZE, len, out, (view, pos) => {
      const n = out ? chain.read(HDR.span + pos, view) : chain.write(pos, view);
      return n === view.length;
    });
    if (chain.faulted) return S.IOERR;
    if (out) this.counters.sectorsWritten += sectors;
    else this.counters.sectorsRead += sectors;
    return S.OK;
  }
}
