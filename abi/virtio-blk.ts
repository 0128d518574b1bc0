// virtio-blk (virtio 1.4 §5.2): feature bits, configuration layout, request
// header and status.
import { defineStruct, reserved, u8, u16, u32, u64 } from './layout.ts';

export const SECTOR_SIZE = 512;
export const VIRTIO_BLK_ID_BYTES = 20;

export const VIRTIO_BLK_F = Object.freeze({
  SIZE_MAX: 1,
  SEG_MAX: 2,
  GEOMETRY: 4,
  RO: 5,
  BLK_SIZE: 6,
  FLUSH: 9,
  TOPOLOGY: 10,
  CONFIG_WCE: 11,
  MQ: 12,
  DISCARD: 13,
  WRITE_ZEROES: 14,
});
export const VIRTIO_BLK_FEATURE_NAMES: Readonly<Record<number, string>> = Object.freeze(
  Object.fromEntries(Object.entries(VIRTIO_BLK_F).map(([n, b]) => [b, n])),
);

export const VIRTIO_BLK_T = Object.freeze({ IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8, DISCARD: 11, WRITE_ZEROES: 13 });
export const VIRTIO_BLK_S = Object.freeze({ OK: 0, IOERR: 1, UNSUPP: 2 });

export const VirtioBlkConfig = defineStruct<Record<string, number | bigint>>('virtio_blk_config', [
  u64('capacity'),
  u32('size_max'),
  u32('seg_max'),
  u16('cylinders'),
  u8('heads'),
  u8('sectors'),
  u32('blk_size'),
  u8('physical_block_exp'),
  u8('alignment_offset'),
  u16('min_io_size'),
  u32('opt_io_size'),
  u8('writeback'),
  reserved(1, 'unused0'),
  u16('num_queues'),
  u32('max_discard_sectors'),
  u32('max_discard_seg'),
  u32('discard_sector_alignment'),
  u32('max_write_zeroes_sectors'),
  u32('max_write_zeroes_seg'),
  u8('write_zeroes_may_unmap'),
  reserved(3, 'unused1'),
]);

/** The device-readable header that starts every request. */
export const VirtioBlkReqHeader = defineStruct<{ type: number; reserved: number; sector: bigint }>('virtio_blk_outhdr', [
  u32('type'),
  u32('reserved'),
  u64('sector'),
]);
/** The one status byte the device writes last. */
export const VIRTIO_BLK_STATUS_BYTES = 1;
