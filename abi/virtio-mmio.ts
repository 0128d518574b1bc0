// virtio-mmio version 2 register map (virtio 1.4 §4.2.2). Every control
// register is a 32-bit little-endian word; device config starts at 0x100.
import { defineStruct, reserved, u32 } from './layout.ts';

export const VIRTIO_MMIO_MAGIC = 0x74726976; // "virt"
export const VIRTIO_MMIO_VERSION = 2;
export const VIRTIO_MMIO_INT_VRING = 1;
export const VIRTIO_MMIO_INT_CONFIG = 2;

export const VirtioMmioRegs = defineStruct<Record<string, number>>('virtio_mmio_regs', [
  u32('magic'),
  u32('version'),
  u32('device_id'),
  u32('vendor_id'),
  u32('device_features'),
  u32('device_features_sel'),
  reserved(8, 'reserved0'),
  u32('driver_features'),
  u32('driver_features_sel'),
  reserved(8, 'reserved1'),
  u32('queue_sel'),
  u32('queue_num_max'),
  u32('queue_num'),
  reserved(8, 'reserved2'),
  u32('queue_ready'),
  reserved(8, 'reserved3'),
  u32('queue_notify'),
  reserved(12, 'reserved4'),
  u32('interrupt_status'),
  u32('interrupt_ack'),
  reserved(8, 'reserved5'),
  u32('status'),
  reserved(12, 'reserved6'),
  u32('queue_desc_low'),
  u32('queue_desc_high'),
  reserved(8, 'reserved7'),
  u32('queue_driver_low'),
  u32('queue_driver_high'),
  reserved(8, 'reserved8'),
  u32('queue_device_low'),
  u32('queue_device_high'),
  reserved(4, 'reserved9'),
  u32('shm_sel'),
  u32('shm_len_low'),
  u32('shm_len_high'),
  u32('shm_base_low'),
  u32('shm_base_high'),
  u32('queue_reset'),
  reserved(0x38, 'reserved10'),
  u32('config_generation'),
]);

/** Register offsets, e.g. MMIO.queue_notify === 0x50. */
export const MMIO = VirtioMmioRegs.off;
/** Device-specific configuration starts right after the register block. */
export const VIRTIO_MMIO_CONFIG = VirtioMmioRegs.span;
