// What a machine is built from: the preset, memory, CPUs and the devices
// with their options. Scenario files (cli/scenario.ts) are parsed into this.

export type DeviceType = 'virtio-blk' | 'virtio-rng';
export type Transport = 'pci' | 'mmio';

export interface DeviceConfig {
  readonly type: DeviceType;
  readonly transport: Transport;
  /** Offer VIRTIO_F_ACCESS_PLATFORM and refuse FEATURES_OK without it (QEMU's iommu_platform=on). */
  readonly iommuPlatform: boolean;
  /** PCI only: a modern-only device (0x1040 + id). false makes it transitional (0x1000 + n IDs); no legacy I/O BAR is modelled. */
  readonly disableLegacy: boolean;
  /** Offer VIRTIO_F_VERSION_1. A device without it is legacy-only, which ivory's modern drivers refuse. */
  readonly version1: boolean;
  readonly queueSize: number;
  readonly indirectDesc: boolean;
  readonly eventIdx: boolean;
  /** virtio-blk: disk size in bytes (a multiple of 512), read-only flag. */
  readonly capacity: number;
  readonly readOnly: boolean;
  /** virtio-rng: PRNG seed (defaults to the scenario seed). */
  readonly seed: number;
}

export interface MachineConfig {
  readonly preset: string;
  readonly ramBytes: number;
  readonly cpus: number;
  /** QEMU's max-ram-below-4g: caps RAM below the 32-bit hole, pushing the rest above 4 GiB. */
  readonly maxRamBelow4g?: number;
  /** Bus addressing limit the firmware reports for PCI and virtio-mmio (ACPI _DMA), in bits. */
  readonly dmaBits?: number;
  readonly devices: readonly DeviceConfig[];
}

export const DEVICE_DEFAULTS: Omit<DeviceConfig, 'type' | 'transport' | 'seed'> = Object.freeze({
  iommuPlatform: false,
  disableLegacy: true,
  version1: true,
  queueSize: 256,
  indirectDesc: true,
  eventIdx: true,
  capacity: 16 * 2 ** 20,
  readOnly: false,
});
