// Virtio common constants: device status bits, reserved feature bits and
// device IDs (virtio 1.4, "Device Status Field", "Reserved Feature Bits",
// "Device Types").

export const STATUS = Object.freeze({
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 0x40,
  FAILED: 0x80,
});

/** Reserved (transport and ring) feature bit numbers. */
export const F = Object.freeze({
  NOTIFY_ON_EMPTY: 24,
  ANY_LAYOUT: 27,
  INDIRECT_DESC: 28,
  EVENT_IDX: 29,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
  IN_ORDER: 35,
  ORDER_PLATFORM: 36,
  SR_IOV: 37,
  NOTIFICATION_DATA: 38,
  NOTIF_CONFIG_DATA: 39,
  RING_RESET: 40,
  ADMIN_VQ: 41,
});

export const DEVICE_ID = Object.freeze({
  NET: 1,
  BLOCK: 2,
  CONSOLE: 3,
  ENTROPY: 4,
  IOMMU: 23,
});

export const DEVICE_NAME: Readonly<Record<number, string>> = Object.freeze({
  1: 'virtio-net',
  2: 'virtio-blk',
  3: 'virtio-console',
  4: 'virtio-rng',
  23: 'virtio-iommu',
});

/** Feature bits 24..41 (minus the device-type range): names common to every device. */
export const RESERVED_FEATURE_NAMES: Readonly<Record<number, string>> = Object.freeze(
  Object.fromEntries(Object.entries(F).map(([name, bit]) => [bit, name])),
);

/** A 64-bit feature set is a bigint; these helpers keep bit tests readable. */
export const bit = (n: number): bigint => 1n << BigInt(n);
export const has = (features: bigint, n: number): boolean => (features & bit(n)) !== 0n;

export function featureNames(features: bigint, deviceNames: Readonly<Record<number, string>> = {}): string[] {
  const names: string[] = [];
  for (let n = 0; n < 64; n++) {
    if (has(features, n)) names.push(deviceNames[n] ?? RESERVED_FEATURE_NAMES[n] ?? `bit${n}`);
  }
  return names;
}

export function statusNames(status: number): string[] {
  if (status === 0) return ['RESET'];
  return Object.entries(STATUS)
    .filter(([, v]) => (status & v) !== 0)
    .map(([k]) => k);
}

export const hex64 = (v: bigint): string => '0x' + v.toString(16).padStart(16, '0');
