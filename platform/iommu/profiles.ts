// Behaviour profiles of the virtio-iommu device model: `spec` follows every
// normative rule of virtio 1.4 §5.13; `qemu`, `cloud-hypervisor` and `crosvm`
// reproduce those hosts where they differ (shared/reference/virtio-iommu.md
// §5, §6, §8). Each deviation is one named switch; docs/virtio-iommu-profiles.md
// gives the source of each. The device reads switches, never the profile name.
import { VIRTIO_IOMMU_S } from '../../abi/virtio-iommu.ts';

export type ProfileName = 'spec' | 'qemu' | 'cloud-hypervisor' | 'crosvm';
export const PROFILE_NAMES: readonly ProfileName[] = ['spec', 'qemu', 'cloud-hypervisor', 'crosvm'];

export type Granule = '4k' | '8k' | '16k' | '64k';
export const GRANULE_SHIFT: Readonly<Record<Granule, number>> = Object.freeze({ '4k': 12, '8k': 13, '16k': 14, '64k': 16 });

/** Device feature bits by their spec names, lower case, without VIRTIO_IOMMU_F_. */
export const FEATURE_NAMES = ['input_range', 'domain_range', 'map_unmap', 'bypass', 'probe', 'mmio', 'bypass_config'] as const;
export type FeatureName = (typeof FEATURE_NAMES)[number];
export type FeatureSwitches = Readonly<Record<FeatureName, boolean>>;

/** What a request the device cannot answer normally gets: a status in the tail, or nothing written and used length 0. */
export type Answer = 'UNWRITTEN' | keyof typeof VIRTIO_IOMMU_S;

export interface ViommuProfile {
  readonly name: ProfileName;

  // ---- what the device offers (defaults; the device options override them) ----
  readonly features: FeatureSwitches;
  /** INPUT_RANGE only when aw-bits < 64 (cloud-hypervisor's iommu_address_width). */
  readonly inputRangeOnlyBelow64: boolean;
  /** A fixed page_size_mask; undefined: every size from the granule up (QEMU's -granule). */
  readonly pageSizeMask: bigint | undefined;
  readonly granule: Granule;
  readonly awBits: number;
  readonly probeSize: number;
  readonly domainRange: readonly [number, number];
  /** Config space ends before `bypass` (crosvm's 36-byte struct). */
  readonly configHasBypass: boolean;
  /** Initial `bypass` (QEMU's boot-bypass). */
  readonly bootBypass: boolean;
  /** Unattached endpoints bypass until the driver writes `bypass`, whatever it reads (cloud-hypervisor). */
  readonly bypassUntilConfigWrite: boolean;
  /** A `bypass` write without BYPASS_CONFIG negotiated, or of a value above 1, is a driver error (virtio_error) instead of ignored / masked to bit 0. */
  readonly bypassWriteErrors: boolean;

  // ---- request framing ----
  /** Fewer than 4 readable or writable bytes: virtio_error (QEMU) instead of returning the buffers unwritten. */
  readonly badHeadTailIsError: boolean;
  /** A readable part shorter than the request type needs. */
  readonly shortRequest: Answer;
  /** The readable part must be exactly head + body (cloud-hypervisor); else INVAL. */
  readonly exactRequestLength: boolean;
  /** An unknown type, or PROBE / MAP / UNMAP without their feature. */
  readonly unknownType: Answer;
  /** Every failed request completes with used length 0 after its status is written (cloud-hypervisor). */
  readonly errorUsedLengthZero: boolean;

  // ---- ATTACH / DETACH ----
  readonly attachChecksReserved: boolean;
  /** ATTACH_F_BYPASS is an unknown flag unless BYPASS_CONFIG was negotiated. */
  readonly attachBypassNeedsFeature: boolean;
  /** ATTACH of an endpoint the device does not know: NOENT, or attach it anyway (cloud-hypervisor). */
  readonly attachUnknownEndpoint: 'NOENT' | 'attach';
  /** An attached endpoint is detached before the bypass flag is checked, and stays detached if that check fails (QEMU). */
  readonly attachDetachesFirst: boolean;
  /** Re-ATTACH to the domain the endpoint is already in detaches it first, destroying the domain if it was the last (QEMU). */
  readonly reattachSameDomainDetaches: boolean;
  /** ATTACH of an endpoint whose reserved regions overlap mappings of the domain: UNSUPP (spec: incompatible probe properties). */
  readonly attachChecksReservedConflict: boolean;
  /** DETACH and re-ATTACH only of an endpoint alone in its domain, else UNSUPP (crosvm). */
  readonly detachSoleMemberOnly: boolean;
  readonly detachUnknownEndpoint: Answer;
  /** DETACH of a known endpoint that is not attached. */
  readonly detachUnattached: Answer;
  /** DETACH naming a domain the endpoint is not attached to: INVAL (else the domain field is ignored). */
  readonly detachChecksDomain: boolean;
  readonly maxDomains: number;

  // ---- MAP / UNMAP ----
  readonly checkAlignment: boolean;
  readonly checkInputRange: boolean;
  readonly checkDomainRange: boolean;
  /** MAP with virt_end <= virt_start: INVAL (a driver MUST NOT send it). An inverted range is INVAL under every profile. */
  readonly mapRejectsEmptyRange: boolean;
  /** MAP_F_MMIO is an unknown flag unless F_MMIO was negotiated (else every bit of MAP_F_MASK is known). */
  readonly mmioFlagNeedsFeature: boolean;
  /** MAP overlapping a RESV_MEM region of an endpoint in the domain: rejected with this status. */
  readonly mapOverReserved: Answer | 'allow';
  readonly maxMappingsPerDomain: number;
  /** Every mapping is readable, WRITE adds writes (crosvm's Protection::read() / read_write()); else READ and WRITE are enforced as sent. */
  readonly readAlwaysAllowed: boolean;
  /** UNMAP removes nothing when it would split a mapping (the spec's SHOULD); false: removes mappings lowest first until the split one (QEMU). */
  readonly unmapAtomic: boolean;
  /** UNMAP with non-zero reserved bytes: INVAL and nothing removed (the spec's MAY). */
  readonly unmapChecksReserved: boolean;

  // ---- PROBE ----
  readonly probeChecksEndpoint: boolean;
  /** Where the tail goes: the end of the writable part (spec, crosvm) or right after probe_size bytes of properties (QEMU, cloud-hypervisor). */
  readonly probeTail: 'end' | 'after-properties';
  /** A writable part too small for probe_size bytes and the tail. */
  readonly probeShortBuffer: Answer;

  // ---- translation, faults, assigned devices ----
  /** Faults go to the event queue (QEMU); cloud-hypervisor and crosvm never use it. */
  readonly faultReports: boolean;
  /** F_READ / F_WRITE on every fault; false: only on permission faults (QEMU). */
  readonly faultAccessFlags: boolean;
  /** What a MAP gets when an assigned endpoint's host IOMMU refuses it: OK with the error only logged (QEMU), DEVERR (cloud-hypervisor), the closest status RANGE / NOMEM (spec), or no answer (crosvm). */
  readonly hostMapFailure: Answer | 'STATUS';
  /** Host IOMMU geometry outside the usable ranges is probed as RESERVED regions (QEMU 9.1+). */
  readonly hostReservedRegions: boolean;
  /** input_range ends at the lowest usable IOVA limit of the assigned endpoints (crosvm's get_max_iova). */
  readonly inputRangeFromHost: boolean;
}

const U32_MAX = 0xffff_ffff;

const SPEC: ViommuProfile = Object.freeze({
  name: 'spec',
  features: Object.freeze({ input_range: true, domain_range: true, map_unmap: true, bypass: false, probe: true, mmio: true, bypass_config: true }),
  inputRangeOnlyBelow64: false,
  pageSizeMask: undefined,
  granule: '4k',
  awBits: 64,
  probeSize: 512,
  domainRange: Object.freeze([0, U32_MAX] as const),
  configHasBypass: true,
  bootBypass: false,
  bypassUntilConfigWrite: false,
  bypassWriteErrors: false,
  badHeadTailIsError: false,
  shortRequest: 'UNWRITTEN',
  exactRequestLength: false,
  unknownType: 'UNWRITTEN',
  errorUsedLengthZero: false,
  attachChecksReserved: true,
  attachBypassNeedsFeature: true,
  attachUnknownEndpoint: 'NOENT',
  attachDetachesFirst: false,
  reattachSameDomainDetaches: false,
  attachChecksReservedConflict: true,
  detachSoleMemberOnly: false,
  detachUnknownEndpoint: 'NOENT',
  detachUnattached: 'INVAL',
  detachChecksDomain: true,
  maxDomains: Infinity,
  checkAlignment: true,
  checkInputRange: true,
  checkDomainRange: true,
  mapRejectsEmptyRange: true,
  mmioFlagNeedsFeature: true,
  mapOverReserved: 'INVAL',
  maxMappingsPerDomain: Infinity,
  readAlwaysAllowed: false,
  unmapAtomic: true,
  unmapChecksReserved: true,
  probeChecksEndpoint: true,
  probeTail: 'end',
  probeShortBuffer: 'INVAL',
  faultReports: true,
  faultAccessFlags: true,
  hostMapFailure: 'STATUS',
  hostReservedRegions: true,
  inputRangeFromHost: false,
});

const QEMU: ViommuProfile = Object.freeze({
  ...SPEC,
  name: 'qemu',
  bootBypass: true,
  bypassWriteErrors: true,
  badHeadTailIsError: true,
  shortRequest: 'INVAL',
  unknownType: 'UNSUPP',
  attachChecksReserved: false,
  attachBypassNeedsFeature: false,
  attachDetachesFirst: true,
  reattachSameDomainDetaches: true,
  attachChecksReservedConflict: false,
  detachUnattached: 'NOENT',
  checkAlignment: false,
  checkInputRange: false,
  checkDomainRange: false,
  mapRejectsEmptyRange: false,
  mmioFlagNeedsFeature: false,
  mapOverReserved: 'allow',
  unmapAtomic: false,
  unmapChecksReserved: false,
  probeTail: 'after-properties',
  probeShortBuffer: 'DEVERR',
  faultAccessFlags: false,
  hostMapFailure: 'OK',
} satisfies ViommuProfile);

const CLOUD_HYPERVISOR: ViommuProfile = Object.freeze({
  ...SPEC,
  name: 'cloud-hypervisor',
  features: Object.freeze({ input_range: true, domain_range: false, map_unmap: true, bypass: false, probe: true, mmio: false, bypass_config: true }),
  inputRangeOnlyBelow64: true,
  pageSizeMask: 0x20_1000n,
  probeSize: 24,
  bypassUntilConfigWrite: true,
  shortRequest: 'INVAL',
  exactRequestLength: true,
  errorUsedLengthZero: true,
  attachBypassNeedsFeature: false,
  attachUnknownEndpoint: 'attach',
  attachChecksReservedConflict: false,
  detachUnknownEndpoint: 'OK',
  detachUnattached: 'OK',
  detachChecksDomain: false,
  maxDomains: 65536,
  checkDomainRange: false,
  mapRejectsEmptyRange: false,
  mmioFlagNeedsFeature: false,
  mapOverReserved: 'allow',
  maxMappingsPerDomain: 1 << 20,
  unmapChecksReserved: false,
  probeChecksEndpoint: false,
  probeTail: 'after-properties',
  probeShortBuffer: 'UNWRITTEN',
  faultReports: false,
  hostMapFailure: 'DEVERR',
  hostReservedRegions: false,
} satisfies ViommuProfile);

const CROSVM: ViommuProfile = Object.freeze({
  ...SPEC,
  name: 'crosvm',
  features: Object.freeze({ input_range: true, domain_range: false, map_unmap: true, bypass: false, probe: true, mmio: true, bypass_config: false }),
  probeSize: 24,
  configHasBypass: false,
  attachChecksReservedConflict: false,
  detachSoleMemberOnly: true,
  detachUnattached: 'OK',
  detachChecksDomain: false,
  checkInputRange: false,
  checkDomainRange: false,
  mmioFlagNeedsFeature: false,
  mapOverReserved: 'allow',
  unmapChecksReserved: false,
  readAlwaysAllowed: true,
  faultReports: false,
  hostMapFailure: 'UNWRITTEN',
  hostReservedRegions: false,
  inputRangeFromHost: true,
} satisfies ViommuProfile);

export const PROFILES: Readonly<Record<ProfileName, ViommuProfile>> = Object.freeze({
  spec: SPEC,
  qemu: QEMU,
  'cloud-hypervisor': CLOUD_HYPERVISOR,
  crosvm: CROSVM,
});

export const isProfileName = (s: string): s is ProfileName => (PROFILE_NAMES as readonly string[]).includes(s);
