// Modern virtio-pci (virtio 1.4 §4.1): the vendor capabilities that locate the
// configuration structures in BARs, and the common configuration structure.
import { defineStruct, reserved, u8, u16, u32 } from './layout.ts';

export const VIRTIO_PCI_VENDOR_ID = 0x1af4;
/** Non-transitional devices use 0x1040 + virtio device ID. */
export const VIRTIO_PCI_DEVICE_ID_BASE = 0x1040;
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

export const VIRTIO_PCI_CAP = Object.freeze({
  COMMON_CFG: 1,
  NOTIFY_CFG: 2,
  ISR_CFG: 3,
  DEVICE_CFG: 4,
  PCI_CFG: 5,
  SHARED_MEMORY_CFG: 8,
  VENDOR_CFG: 9,
});

/** struct virtio_pci_cap: the fields every virtio vendor capability starts with. */
const capFields = () => [u8('cap_vndr'), u8('cap_next'), u8('cap_len'), u8('cfg_type'), u8('bar'), u8('id'), reserved(2, 'padding'), u32('offset'), u32('length')];

export const VirtioPciCap = defineStruct<Record<string, number>>('virtio_pci_cap', capFields());

export const VirtioPciNotifyCap = defineStruct<Record<string, number>>('virtio_pci_notify_cap', [...capFields(), u32('notify_off_multiplier')]);

export const VirtioPciCommonCfg = defineStruct<Record<string, number>>('virtio_pci_common_cfg', [
  u32('device_feature_select'),
  u32('device_feature'),
  u32('driver_feature_select'),
  u32('driver_feature'),
  u16('config_msix_vector'),
  u16('num_queues'),
  u8('device_status'),
  u8('config_generation'),
  u16('queue_select'),
  u16('queue_size'),
  u16('queue_msix_vector'),
  u16('queue_enable'),
  u16('queue_notify_off'),
  u32('queue_desc_lo'),
  u32('queue_desc_hi'),
  u32('queue_driver_lo'),
  u32('queue_driver_hi'),
  u32('queue_device_lo'),
  u32('queue_device_hi'),
  u16('queue_notif_config_data'),
  u16('queue_reset'),
  u16('admin_queue_index'),
  u16('admin_queue_num'),
]);
export const COMMON = VirtioPciCommonCfg.off;

/** ISR status bits (read-to-clear; used only without MSI-X). */
export const VIRTIO_PCI_ISR = Object.freeze({ QUEUE: 1, CONFIG: 2 });
