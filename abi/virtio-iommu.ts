// virtio-iommu (virtio 1.4 §5.13; the v0.12 header QEMU ships): feature bits,
// configuration, requests, statuses, probe properties and fault records. All
// little-endian; `virt_end` and `end` fields are inclusive.
import { defineStruct, reserved, u8, u16, u32, u64 } from './layout.ts';

export const VIRTIO_IOMMU_F = Object.freeze({
  INPUT_RANGE: 0,
  DOMAIN_RANGE: 1,
  MAP_UNMAP: 2,
  BYPASS: 3,
  PROBE: 4,
  MMIO: 5,
  BYPASS_CONFIG: 6,
});
export const VIRTIO_IOMMU_FEATURE_NAMES: Readonly<Record<number, string>> = Object.freeze(
  Object.fromEntries(Object.entries(VIRTIO_IOMMU_F).map(([n, b]) => [b, n])),
);

export const VIRTIO_IOMMU_T = Object.freeze({ ATTACH: 1, DETACH: 2, MAP: 3, UNMAP: 4, PROBE: 5 });

export const VIRTIO_IOMMU_S = Object.freeze({ OK: 0, IOERR: 1, UNSUPP: 2, DEVERR: 3, INVAL: 4, RANGE: 5, NOENT: 6, FAULT: 7, NOMEM: 8 });
export const VIRTIO_IOMMU_STATUS_NAMES: readonly string[] = Object.freeze(Object.keys(VIRTIO_IOMMU_S));

export const VIRTIO_IOMMU_ATTACH_F_BYPASS = 1;
export const VIRTIO_IOMMU_MAP_F = Object.freeze({ READ: 1, WRITE: 2, MMIO: 4 });
export const VIRTIO_IOMMU_MAP_F_MASK = 0x7;

export const VIRTIO_IOMMU_PROBE_T = Object.freeze({ NONE: 0, RESV_MEM: 1 });
export const VIRTIO_IOMMU_PROBE_T_MASK = 0xfff;
export const VIRTIO_IOMMU_RESV_MEM_T = Object.freeze({ RESERVED: 0, MSI: 1 });

export const VIRTIO_IOMMU_FAULT_R = Object.freeze({ UNKNOWN: 0, DOMAIN: 1, MAPPING: 2 });
export const VIRTIO_IOMMU_FAULT_F = Object.freeze({ READ: 1, WRITE: 2, ADDRESS: 0x100 });

export const VIRTIO_IOMMU_REQUEST_QUEUE = 0;
export const VIRTIO_IOMMU_EVENT_QUEUE = 1;

export const VirtioIommuConfig = defineStruct<{
  page_size_mask: bigint;
  input_start: bigint;
  input_end: bigint;
  domain_start: number;
  domain_end: number;
  probe_size: number;
  bypass: number;
}>('virtio_iommu_config', [u64('page_size_mask'), u64('input_start'), u64('input_end'), u32('domain_start'), u32('domain_end'), u32('probe_size'), u8('bypass'), reserved(3)]);

/** The request head (type) and tail (status): 4 bytes each. */
export const VirtioIommuReqHead = defineStruct<{ type: number }>('virtio_iommu_req_head', [u8('type'), reserved(3)]);
export const VirtioIommuReqTail = defineStruct<{ status: number }>('virtio_iommu_req_tail', [u8('status'), reserved(3)]);

export const VirtioIommuReqAttach = defineStruct<{ type: number; domain: number; endpoint: number; flags: number; status: number }>('virtio_iommu_req_attach', [
  u8('type'),
  reserved(3, 'head_reserved'),
  u32('domain'),
  u32('endpoint'),
  u32('flags'),
  reserved(4),
  u8('status'),
  reserved(3, 'tail_reserved'),
]);

export const VirtioIommuReqDetach = defineStruct<{ type: number; domain: number; endpoint: number; status: number }>('virtio_iommu_req_detach', [
  u8('type'),
  reserved(3, 'head_reserved'),
  u32('domain'),
  u32('endpoint'),
  reserved(8),
  u8('status'),
  reserved(3, 'tail_reserved'),
]);

export const VirtioIommuReqMap = defineStruct<{ type: number; domain: number; virt_start: bigint; virt_end: bigint; phys_start: bigint; flags: number; status: number }>(
  'virtio_iommu_req_map',
  [u8('type'), reserved(3, 'head_reserved'), u32('domain'), u64('virt_start'), u64('virt_end'), u64('phys_start'), u32('flags'), u8('status'), reserved(3, 'tail_reserved')],
);

export const VirtioIommuReqUnmap = defineStruct<{ type: number; domain: number; virt_start: bigint; virt_end: bigint; status: number }>('virtio_iommu_req_unmap', [
  u8('type'),
  reserved(3, 'head_reserved'),
  u32('domain'),
  u64('virt_start'),
  u64('virt_end'),
  reserved(4),
  u8('status'),
  reserved(3, 'tail_reserved'),
]);

/** The device-readable part of a PROBE; `probe_size` bytes of properties and the tail follow. */
export const VirtioIommuReqProbe = defineStruct<{ type: number; endpoint: number }>('virtio_iommu_req_probe', [u8('type'), reserved(3, 'head_reserved'), u32('endpoint'), reserved(64)]);

export const VirtioIommuProbeProperty = defineStruct<{ type: number; length: number }>('virtio_iommu_probe_property', [u16('type'), u16('length')]);

/** RESV_MEM: `length` counts the bytes after the 4-byte property header (20). */
export const VirtioIommuProbeResvMem = defineStruct<{ type: number; length: number; subtype: number; start: bigint; end: bigint }>('virtio_iommu_probe_resv_mem', [
  u16('type'),
  u16('length'),
  u8('subtype'),
  reserved(3),
  u64('start'),
  u64('end'),
]);

export const VirtioIommuFault = defineStruct<{ reason: number; flags: number; endpoint: number; address: bigint }>('virtio_iommu_fault', [
  u8('reason'),
  reserved(3),
  u32('flags'),
  u32('endpoint'),
  reserved(4, 'reserved1'),
  u64('address'),
]);

/** Bytes of a request the device reads (everything but the 4-byte tail). */
export const requestReadable = (span: number): number => span - VirtioIommuReqTail.span;
