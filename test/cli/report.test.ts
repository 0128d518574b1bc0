import { describe, expect, it } from 'vitest';
import { formatBytes, formatStatus } from '../../cli/report.ts';

const st = (op: 'read' | 'write', value: number) => ({ op, value, names: [] });

describe('report formatting', () => {
  it('shows each status write by the bits it adds, and a read-back only when the device changed something', () => {
    expect(formatStatus([st('write', 0), st('read', 0), st('write', 1), st('write', 3), st('write', 11), st('read', 11), st('write', 15)])).toBe(
      'reset → ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK',
    );
    expect(formatStatus([st('write', 3), st('write', 11), st('read', 3), st('read', 3), st('write', 0x83)])).toBe(
      'ACKNOWLEDGE|DRIVER → FEATURES_OK → read back ACKNOWLEDGE|DRIVER (device dropped FEATURES_OK) → FAILED',
    );
    expect(formatStatus([st('write', 15), st('read', 0x4f)])).toBe('ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK → read back ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK|DEVICE_NEEDS_RESET');
  });

  it('formats byte counts exactly when whole', () => {
    expect(formatBytes(300)).toBe('300 bytes');
    expect(formatBytes(4096)).toBe('4 KiB');
    expect(formatBytes(2 ** 20)).toBe('1 MiB');
    expect(formatBytes(1049088)).toBe('1.00 MiB');
    expect(formatBytes(1536)).toBe('1.50 KiB');
  });
});
