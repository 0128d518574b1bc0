// The IOMMU core (Linux drivers/iommu/iommu.c, much reduced): IOMMU drivers
// register; a device that VIOT places behind one is probed, put in a group of
// its own and attached to the group's default domain (translated, or identity
// with iommu.passthrough=1); its DMA then goes through iommu-dma or dma-direct.
import type { IommuStats } from '../abi/report.ts';
import { hexAddr } from '../abi/addr.ts';
import type { FwViot } from '../abi/firmware.ts';
import type { Device } from '../kernel/device.ts';
import type { Kernel } from '../kernel/kernel.ts';
import { viotFwspec, type IommuFwspec } from '../kernel/viot.ts';
import { IommuDmaCookie, IommuDmaOps, type IommuDmaKernel } from './iommu-dma.ts';
import type { IommuDomain, IommuDriver, ResvRegion } from './iommu-ops.ts';
import type { DmaOps } from './ops.ts';

export type IommuKernel = IommuDmaKernel & Pick<Kernel, 'firmware'>;

interface IommuGroup {
  readonly id: number;
  readonly devices: Device[];
  readonly defaultDomain: IommuDomain;
  /** The translated domain's IOVA space; none for an identity domain. */
  readonly cookie: IommuDmaCookie | undefined;
}

/** dev->iommu: what the core keeps about a device behind an IOMMU. */
interface DevIommu {
  readonly driver: IommuDriver;
  readonly fwspec: IommuFwspec;
  readonly group: IommuGroup;
  readonly resvRegions: readonly ResvRegion[];
  readonly ops: DmaOps;
}



export class IommuCore {
  /** iommu.passthrough=1: identity default domains (iommu_def_domain_type). */
  readonly passthrough: boolean;
  /** iommu.strict=1: invalidate on every unmap. Lazy by default, as Linux on x86 (IOMMU_DEFAULT_DMA_LAZY). */
  readonly strict: boolean;
  private readonly drivers: IommuDriver[] = [];
  private readonly devs = new Map<Device, DevIommu>();
  private readonly groups: IommuGroup[] = [];

  constructor(
    private readonly k: IommuKernel,
    private readonly direct: DmaOps,
  ) {
    this.passthrough = k.cmdline.bool('iommu.passthrough', false);
    this.strict = k.cmdline.bool('iommu.strict', false);
    if (!k.firmware.viot?.length) return;
    const how = (key: string) => (k.cmdline.has(key) ? ' (set on the command line)' : '');
    k.log.info(`iommu: default domain type: ${this.passthrough ? 'identity' : 'translated'}${how('iommu.passthrough')}`);
    k.log.info(`iommu: DMA domain invalidation: ${this.strict ? 'strict' : 'lazy'}${how('iommu.strict')}`);
  }

  /** iommu_device_register. Devices deferred while waiting for it come back through deferred probe. */
  register(driver: IommuDriver): void {
    this.drivers.push(driver);
    this.k.log.info(`iommu: ${driver.name} registered`);
  }

  /**
   * Where the device's DMA goes: 'defer' while the IOMMU that VIOT puts it
   * behind has not registered, undefined when no IOMMU translates for it.
   */
  dmaOps(dev: Device): DmaOps | 'defer' | undefined {
    const known = this.devs.get(dev);
    if (known) return known.ops;
    const fwspec = viotFwspec(this.k, dev);
    if (!fwspec) return undefined;
    const driver = this.drivers.find((d) => sameIommu(d.fw, fwspec.iommu));
    if (!driver) return 'defer';
    return this.probeDevice(dev, driver, fwspec)?.ops;
  }

  stats(): IommuStats {
    return {
      defaultDomainType: this.passthrough ? 'identity' : 'dma',
      strict: this.strict,
      iommus: this.drivers.map((d) => d.name),
      devices: [...this.devs].map(([dev, st]) => ({
        device: dev.name,
        iommu: st.driver.name,
        endpoints: [...st.fwspec.endpoints],
        group: st.group.id,
        domain: st.group.defaultDomain.name,
        domainType: st.group.defaultDomain.type,
        resvRegions: st.resvRegions.map((r) => ({ start: hexAddr(r.start), end: hexAddr(r.end), type: r.type })),
      })),
      domains: this.groups.flatMap((g) => (g.cookie ? [g.cookie.stats()] : [])),
    };
  }

  /**
   * __iommu_probe_device + iommu_setup_default_domain + iommu_setup_dma_ops.
   * A device the IOMMU cannot take keeps dma-direct, as Linux's ACPI path
   * does: firmware errors never fail a driver's probe.
   */
  private probeDevice(dev: Device, driver: IommuDriver, fwspec: IommuFwspec): DevIommu | undefined {
    const fail = (why: string): undefined => {
      this.k.log.err(`iommu: ${dev.name}: ${why}; its DMA stays untranslated`);
      return undefined;
    };
    if (!driver.probeDevice(dev, fwspec.endpoints)) return fail(`${driver.name} cannot translate for it`);
    const resvRegions = driver.resvRegions(dev);
    const domain = this.allocDefaultDomain(dev, driver);
    if (!domain) {
      driver.releaseDevice(dev);
      return fail('no default domain');
    }
    const err = driver.attachDev(domain, dev);
    if (err) {
      driver.domainFree(domain);
      driver.releaseDevice(dev);
      return fail(`attaching to domain ${domain.name} failed (${err})`);
    }
    // Lazy needs the driver's word that a deferred flush is sound (IOMMU_CAP_DEFERRED_FLUSH).
    const lazy = !this.strict && driver.caps.deferredFlush;
    const cookie = domain.type === 'dma' ? new IommuDmaCookie(this.k, driver, domain, dev, resvRegions, lazy) : undefined;
    const group: IommuGroup = { id: this.groups.length, devices: [dev], defaultDomain: domain, cookie };
    this.groups.push(group);
    this.k.log.info(`${dev.name}: Adding to iommu group ${group.id}`);
    this.k.trace.emit('add_device_to_group', { device: dev.name, group: group.id, domain: domain.name, type: domain.type });
    const st: DevIommu = { driver, fwspec, group, resvRegions, ops: cookie ? new IommuDmaOps(cookie, dev) : this.direct };
    this.devs.set(dev, st);
    return st;
  }

  /** The configured type; a driver without identity domains gets a translated one, as Linux falls back. */
  private allocDefaultDomain(dev: Device, driver: IommuDriver): IommuDomain | undefined {
    const domain = driver.domainAlloc(this.passthrough ? 'identity' : 'dma');
    if (domain || !this.passthrough) return domain;
    this.k.log.warn(`iommu: ${dev.name}: ${driver.name} has no identity domain, using a translated one`);
    return driver.domainAlloc('dma');
  }
}

/** The IOMMU core of each kernel, for drivers that register with it. */
const cores = new WeakMap<object, IommuCore>();

export function iommuCoreInit(k: IommuKernel, direct: DmaOps): IommuCore {
  const core = new IommuCore(k, direct);
  cores.set(k, core);
  return core;
}

/** iommu_device_register: called by an IOMMU driver once its device is ready. */
export function iommuDeviceRegister(k: IommuKernel, driver: IommuDriver): void {
  const core = cores.get(k);
  if (!core) throw new Error(`iommu: ${driver.name}: no DMA subsystem to register with`);
  core.register(driver);
}

/** The driver's VIOT entry and the device's: the same table entry, or the same place. */
function sameIommu(a: FwViot, b: FwViot): boolean {
  return a === b || (a.mmioBase === b.mmioBase && a.pci?.segment === b.pci?.segment && a.pci?.bdf === b.pci?.bdf);
}
