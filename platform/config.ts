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
  /** Translated by the machine's virtio-iommu (when it has one). */
  readonly behindIommu: boolean;
  /** Makes the device an assigned one, with a host IOMMU under the guest's. */
  readonly hostIommu?: HostIommuConfig;
}

/** A host IOMMU behind an assigned (VFIO-like) endpoint: what the host can really map for it. */
export interface HostIommuConfig {
  /** Address width of the host IOMMU (39 on many x86 hosts, 48 on most). */
  readonly awBits: number;
  /** Usable IOVA ranges (inclusive ends); everything else fails on the host. Default: [0, 2^awBits - 1]. */
  readonly usableRanges?: readonly { readonly start: bigint; readonly end: bigint }[];
  /** QEMU 9.1+: tell the guest, as RESERVED probe regions, what the host cannot map. */
  readonly exposeReserved: boolean;
}

export type IommuProfile = 'spec' | 'qemu' | 'cloud-hypervisor' | 'crosvm';

/**
 * The virtio-iommu, with QEMU's property names where QEMU has them (aw-bits,
 * granule, boot-bypass, reserved-regions). What a scenario leaves unset comes
 * from the profile (cloud-hypervisor's page mask, crosvm's features, ...).
 */
export interface IommuConfig {
  readonly transport: Transport;
  readonly profile: IommuProfile;
  /** Input range width; the preset's default (q35 39, virt 48; 64 before QEMU 9.0). */
  readonly awBits: number;
  readonly granule?: '4k' | '8k' | '16k' | '64k';
  readonly bootBypass?: boolean;
  /** Extra reserved regions; the machine adds its hardware MSI window itself (x86: 0xfee00000-0xfeefffff). */
  readonly reservedRegions: readonly { readonly start: bigint; readonly end: bigint; readonly type: 'reserved' | 'msi' }[];
  readonly probeSize?: number;
  readonly domainRange?: readonly [number, number];
  /** Feature bits to offer or withhold, by the spec's names in lower case. */
  readonly features: Partial<Readonly<Record<IommuFeature, boolean>>>;
}

export const IOMMU_FEATURES = ['input_range', 'domain_range', 'map_unmap', 'bypass', 'probe', 'mmio', 'bypass_config'] as const;
export type IommuFeature = (typeof IOMMU_FEATURES)[number];

export interface MachineConfig {
  readonly preset: string;
  readonly ramBytes: number;
  readonly cpus: number;
  /** QEMU's max-ram-below-4g: caps RAM below the 32-bit hole, pushing the rest above 4 GiB. */
  readonly maxRamBelow4g?: number;
  /** Bus addressing limit the firmware reports for PCI and virtio-mmio (ACPI _DMA), in bits. */
  readonly dmaBits?: number;
  readonly devices: readonly DeviceConfig[];
  /** A virtio-iommu in front of the devices whose `behindIommu` is set. */
  readonly iommu?: IommuConfig;
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
  behindIommu: true,
});

