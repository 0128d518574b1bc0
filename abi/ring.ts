// Split virtqueue layout (virtio 1.4 §2.7): descriptor table, driver area
// (available ring) and device area (used ring). All fields little-endian.
import { defineStruct, u16, u32, u64 } from './layout.ts';

export const VIRTQ_DESC_F = Object.freeze({ NEXT: 1, WRITE: 2, INDIRECT: 4 });
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** Largest split queue: the largest power of two a 16-bit index can tell full from empty. */
export const VIRTQ_MAX_SIZE = 32768;

export const VirtqDesc = defineStruct<{ addr: bigint; len: number; flags: number; next: number }>('virtq_desc', [
  u64('addr'),
  u32('len'),
  u16('flags'),
  u16('next'),
]);

/** Header of the available ring; ring[] follows, then used_event with EVENT_IDX. */
export const VirtqAvailHeader = defineStruct<{ flags: number; idx: number }>('virtq_avail', [u16('flags'), u16('idx')]);
export const VirtqUsedElem = defineStruct<{ id: number; len: number }>('virtq_used_elem', [u32('id'), u32('len')]);
/** Header of the used ring; ring[] of virtq_used_elem follows, then avail_event with EVENT_IDX. */
export const VirtqUsedHeader = defineStruct<{ flags: number; idx: number }>('virtq_used', [u16('flags'), u16('idx')]);

const AVAIL_ENTRY = 2;

/** Byte offsets inside the three areas of a split queue of `size` entries. */
export const splitRing = Object.freeze({
  descBytes: (size: number) => VirtqDesc.span * size,
  availBytes: (size: number) => VirtqAvailHeader.span + AVAIL_ENTRY * size + 2,
  usedBytes: (size: number) => VirtqUsedHeader.span + VirtqUsedElem.span * size + 2,
  availRing: (i: number) => VirtqAvailHeader.span + AVAIL_ENTRY * i,
  usedEvent: (size: number) => VirtqAvailHeader.span + AVAIL_ENTRY * size,
  usedRing: (i: number) => VirtqUsedHeader.span + VirtqUsedElem.span * i,
  availEvent: (size: number) => VirtqUsedHeader.span + VirtqUsedElem.span * size,
  descAlign: 16,
  availAlign: 2,
  usedAlign: 4,
});

/** virtio's vring_need_event: has new_idx passed event_idx since old? (all u16) */
export function needEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}
