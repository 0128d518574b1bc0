// The driver model: devices sit on buses, drivers register with a bus, and
// the bus binds each device to the first driver that matches it (Linux's
// bus_type / device_driver / driver_core, much reduced).
import type { DmaOps } from '../dma/ops.ts';

export interface DmaParams {
  /** Streaming DMA mask (dma_set_mask); Linux defaults to 32 bits until a driver sets it. */
  mask: bigint;
  coherentMask: bigint;
  /** What the bus can address, from firmware (ACPI _DMA / DT dma-ranges): bus_dma_limit. */
  busLimit: bigint;
  /** The DMA backend chosen for this device when it was added (dma/). */
  ops: DmaOps | undefined;
}

export const DMA_BIT_MASK = (n: number): bigint => (n >= 64 ? 0xffff_ffff_ffff_ffffn : (1n << BigInt(n)) - 1n);

export class Device {
  readonly children: Device[] = [];
  driver: Driver | undefined;
  /** What the bound driver keeps about this device (dev_get_drvdata). */
  drvdata: unknown;
  readonly dma: DmaParams;

  constructor(
    readonly name: string,
    readonly bus: Bus,
    readonly parent?: Device,
    busLimitBits = 64,
  ) {
    this.dma = { mask: DMA_BIT_MASK(32), coherentMask: DMA_BIT_MASK(32), busLimit: DMA_BIT_MASK(busLimitBits), ops: undefined };
    parent?.children.push(this);
  }
}

export interface Driver<D extends Device = Device> {
  readonly name: string;
  match(dev: D): boolean;
  /** Throws (or returns false) when the device cannot be driven; the bus then leaves it unbound. */
  probe(dev: D): boolean;
  remove(dev: D): void;
}

export interface ProbeFailure {
  readonly device: string;
  readonly driver: string;
  readonly error: string;
}

/** What a bus asks before probing a device: configure its DMA, or defer it until its IOMMU exists (-EPROBE_DEFER). */
export type ProbePrepare = (dev: Device) => 'defer' | void;

/**
 * Deferred probe, as Linux's drivers/base/dd.c: a device whose IOMMU has not
 * been probed yet waits, and every successful bind anywhere retries the
 * waiting devices.
 */
export class DeferredProbe {
  private readonly waiting: { dev: Device; retry: () => boolean }[] = [];

  defer(dev: Device, retry: () => boolean): void {
    if (!this.waiting.some((w) => w.dev === dev)) this.waiting.push({ dev, retry });
  }

  /** Retries until a pass binds nothing more. */
  trigger(): void {
    for (let progress = true; progress; ) {
      progress = false;
      for (const w of [...this.waiting]) {
        this.waiting.splice(this.waiting.indexOf(w), 1);
        if (w.retry()) progress = true;
      }
    }
  }

  get pending(): readonly Device[] {
    return this.waiting.map((w) => w.dev);
  }
}

export class Bus<D extends Device = Device> {
  readonly devices: D[] = [];
  readonly drivers: Driver<D>[] = [];
  readonly failures: ProbeFailure[] = [];

  constructor(
    readonly name: string,
    private readonly log: (line: string) => void,
    private readonly prepare: ProbePrepare = () => {},
    private readonly deferred = new DeferredProbe(),
  ) {}

  registerDriver(drv: Driver<D>): void {
    this.drivers.push(drv);
    for (const dev of this.devices) if (!dev.driver) this.bind(dev);
  }

  addDevice(dev: D): void {
    this.devices.push(dev);
    this.bind(dev);
  }

  removeDevice(dev: D): void {
    for (const child of [...dev.children]) child.bus.removeDevice(child as never);
    if (dev.driver) (dev.driver as Driver<D>).remove(dev);
    dev.driver = undefined;
    this.devices.splice(this.devices.indexOf(dev), 1);
  }

  /** really_probe: the first matching driver; DMA configured first, which may defer the device. */
  private bind(dev: D): boolean {
    const drv = this.drivers.find((d) => d.match(dev));
    if (!drv) return false;
    if (this.prepare(dev) === 'defer') {
      this.deferred.defer(dev, () => !dev.driver && this.devices.includes(dev) && this.bind(dev));
      return false;
    }
    const ok = this.probe(dev, drv);
    if (ok) this.deferred.trigger();
    return ok;
  }

  private probe(dev: D, drv: Driver<D>): boolean {
    dev.driver = drv as Driver;
    let ok = false;
    try {
      ok = drv.probe(dev);
      if (!ok) this.failures.push({ device: dev.name, driver: drv.name, error: 'probe refused the device' });
    } catch (e) {
      const error = e instanceof Error ? e.message : String(e);
      this.failures.push({ device: dev.name, driver: drv.name, error });
      this.log(`${drv.name} ${dev.name}: probe failed: ${error}`);
    }
    if (!ok) dev.driver = undefined;
    return ok;
  }
}
