// Platform devices: devices the firmware describes by address and interrupt
// line rather than by a discoverable bus (virtio-mmio here), as Linux's
// platform_device.
import { Device } from './device.ts';
import type { Bus } from './device.ts';

export class PlatformDevice extends Device {
  constructor(
    name: string,
    bus: Bus<PlatformDevice>,
    readonly kind: string,
    readonly base: number,
    readonly size: number,
    readonly irq: number,
    busLimitBits = 64,
  ) {
    super(name, bus as Bus, undefined, busLimitBits);
  }
}
