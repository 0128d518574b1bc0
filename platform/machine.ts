// A machine: RAM, the MMIO bus, the interrupt controller, a PCI host bridge,
// virtio-mmio slots and the device models, all on one virtual clock. It
// writes the firmware tables and the init program into RAM and offers the
// boot protocol the guest image is entered with.
import type { BootProtocol } from '../abi/boot.ts';
import { encodeFirmware, type FirmwareTables, type FwPciHostBridge, type FwViot, type FwVirtioMmio } from '../abi/firmware.ts';
import { F, has } from '../abi/virtio.ts';
import { encodeWorkload, type Workload } from '../abi/workload.ts';
import { toAddr } from '../abi/addr.ts';
import { PhysicalSpace } from './address-space.ts';
import { MmioBus } from './bus.ts';
import type { DeviceConfig, IommuConfig, MachineConfig } from './config.ts';
import { EventLoop } from './events.ts';
import { InterruptController } from './irq.ts';
import { GuestMemory } from './memory.ts';
import { PciHostBridge } from './pci/host-bridge.ts';
import { PRESETS, ramLayout, type Preset } from './presets.ts';
import { HostTrace } from './trace.ts';
import { VirtioIommu } from './iommu/virtio-iommu.ts';
import { attachVirtioDevice, placeVirtioDevice, type AttachedDevice, type Placement } from './virtio/attach.ts';

const PAGE = 4096;
/** virtio-mmio endpoints get IDs above every PCI requester ID (which are 16-bit). */
const MMIO_ENDPOINT_BASE = 0x1_0000;
const alignUp = (v: number, a: number) => Math.ceil(v / a) * a;

export class Machine {
  readonly preset: Preset;
  readonly events = new EventLoop();
  readonly trace = new HostTrace(this.events);
  readonly bus = new MmioBus(this.trace);
  readonly mem: GuestMemory;
  readonly irq: InterruptController;
  readonly pciHost: PciHostBridge;
  readonly devices: AttachedDevice[] = [];
  /** The virtio-iommu, when the machine has one; it is also in `devices`. */
  readonly iommu: VirtioIommu | undefined;
  private readonly viot: { pciRanges: FwViot['pciRanges'][number][]; mmioEndpoints: FwViot['mmioEndpoints'][number][]; pci?: FwViot['pci']; mmioBase?: number } = { pciRanges: [], mmioEndpoints: [] };
  private readonly mmioSlots: FwVirtioMmio[] = [];
  private nextPciSlot = 1;
  console: string[] = [];

  constructor(readonly config: MachineConfig) {
    const preset = PRESETS[config.preset];
    if (!preset) throw new Error(`unknown machine preset ${config.preset}`);
    this.preset = preset;
    this.mem = new GuestMemory(ramLayout(preset, config.ramBytes, config.maxRamBelow4g));
    this.irq = new InterruptController(this.events, this.trace, { ...preset.msi.doorbell, destShift: preset.msi.destShift }, config.cpus);
    const ramEnd = Math.max(...this.mem.regions.map((r) => r.gpa + r.size));
    const bridge: FwPciHostBridge = {
      segment: 0,
      ecam: preset.ecam,
      busStart: 0,
      busEnd: Math.floor(preset.ecam.size / 2 ** 20) - 1,
      mmio32: preset.mmio32,
      mmio64: preset.mmio64(ramEnd),
      ...(config.dmaBits !== undefined ? { dmaBits: config.dmaBits } : {}),
    };
    this.pciHost = new PciHostBridge(this.bus, bridge);
    this.iommu = config.iommu && this.createIommu(config.iommu);
    config.devices.forEach((d) => this.addDevice(d));
    if (this.iommu) this.plugIommu(this.iommu, config.iommu!);
  }

  /** Guest-physical memory as a device on this machine's buses reaches it. */
  physicalSpace(name: string): PhysicalSpace {
    return new PhysicalSpace(this.mem, this.irq, this.trace, name, this.config.dmaBits);
  }

  endpointFor(name: string, cfg: DeviceConfig, where: Placement): { space: PhysicalSpace | ReturnType<VirtioIommu['addEndpoint']>; featuresFinal?: (features: bigint) => void } {
    const physical = this.physicalSpace(name);
    if (!this.iommu || !cfg.behindIommu) return { space: physical };
    // A PCI endpoint is known by its requester ID (bus 0, function 0), a virtio-mmio one by an ID the VIOT table gives it.
    const id = where.kind === 'pci' ? where.slot << 3 : MMIO_ENDPOINT_BASE + this.mmioSlots.length - 1;
    if (where.kind === 'pci') this.viot.pciRanges.push({ segment: 0, bdfStart: id, bdfEnd: id, endpointStart: id });
    else this.viot.mmioEndpoints.push({ base: where.base, endpoint: id });
    const host = cfg.hostIommu && {
      host: { awBits: cfg.hostIommu.awBits, ...(cfg.hostIommu.usableRanges ? { usableRanges: cfg.hostIommu.usableRanges.map((r) => ({ start: toAddr(r.start), end: toAddr(r.end) })) } : {}) },
      exposeHostReserved: cfg.hostIommu.exposeReserved,
    };
    const space = this.iommu.addEndpoint(id, { name, physical, ...host });
    return { space, featuresFinal: (features) => space.setTranslated(has(features, F.ACCESS_PLATFORM)) };
  }

  /** The virtio-iommu model; its endpoints are added as the devices are, and it is plugged in after them. */
  private createIommu(c: IommuConfig): VirtioIommu {
    const name = 'virtio-iommu';
    // The machine declares its hardware MSI window as an MSI region, as QEMU's pc machine does; arm's ITS doorbell is the guest's to map.
    const msi = this.preset.msiIsSoftware ? [] : [{ start: toAddr(BigInt(this.preset.msi.doorbell.base)), end: toAddr(BigInt(this.preset.msi.doorbell.base + this.preset.msi.doorbell.size - 1)), type: 'msi' as const }];
    return new VirtioIommu(
      { name, mem: this.mem, space: this.physicalSpace(name), events: this.events, trace: this.trace },
      {
        profile: c.profile,
        features: c.features,
        awBits: c.awBits,
        reservedRegions: [...msi, ...c.reservedRegions.map((r) => ({ start: toAddr(r.start), end: toAddr(r.end), type: r.type }))],
        ...(c.granule ? { granule: c.granule } : {}),
        ...(c.bootBypass !== undefined ? { bootBypass: c.bootBypass } : {}),
        ...(c.probeSize !== undefined ? { probeSize: c.probeSize } : {}),
        ...(c.domainRange ? { domainRange: c.domainRange } : {}),
      },
    );
  }

  private plugIommu(model: VirtioIommu, c: IommuConfig): void {
    let where: Placement;
    if (c.transport === 'pci') {
      where = { kind: 'pci', slot: this.nextPciSlot++ };
      this.viot.pci = { segment: 0, bdf: where.slot << 3 };
    } else {
      where = { kind: 'mmio', ...this.takeMmioSlot() };
      this.viot.mmioBase = where.base;
    }
    this.devices.push(placeVirtioDevice(this, model, where));
  }

  private takeMmioSlot(): FwVirtioMmio {
    const m = this.preset.virtioMmio;
    const i = this.mmioSlots.length;
    if (i >= m.slots) throw new Error(`no free virtio-mmio slot (the ${this.preset.name} preset has ${m.slots})`);
    const slot: FwVirtioMmio = { base: m.base + i * m.stride, size: m.stride, irq: m.firstIrq + i, ...(this.config.dmaBits !== undefined ? { dmaBits: this.config.dmaBits } : {}) };
    this.mmioSlots.push(slot);
    return slot;
  }

  private addDevice(cfg: DeviceConfig): void {
    const index = this.devices.length;
    if (cfg.transport === 'pci') {
      const slot = this.nextPciSlot++;
      this.devices.push(attachVirtioDevice(this, cfg, index, { kind: 'pci', slot }));
    } else {
      this.devices.push(attachVirtioDevice(this, cfg, index, { kind: 'mmio', ...this.takeMmioSlot() }));
    }
  }

  firmware(): FirmwareTables {
    return {
      version: 1,
      machine: this.preset.name,
      cpus: this.config.cpus,
      msi: this.preset.msi,
      pci: [this.pciHost.fw],
      virtioMmio: this.mmioSlots,
      viot: this.iommu ? [{ kind: 'virtio-iommu', ...this.viot }] : [],
    };
  }

  /**
   * Places the firmware tables and the init program at the top of RAM below
   * 4 GiB, as QEMU places ACPI tables and -initrd, and returns the boot protocol.
   */
  bootProtocol(cmdline: string, workload: Workload): BootProtocol {
    const fw = encodeFirmware(this.firmware());
    const init = encodeWorkload(workload);
    const low = this.mem.regions[0]!;
    const fwAddr = alignUp(low.gpa + low.size - alignUp(fw.length, PAGE) - PAGE, PAGE);
    const initAddr = fwAddr - alignUp(init.length, PAGE);
    this.mem.load(fwAddr, fw);
    this.mem.load(initAddr, init);
    const { events, irq, bus } = this;
    return {
      memory: { buffer: this.mem.buffer, regions: this.mem.regions },
      mmio: { read: (addr, size) => bus.read(addr, size), write: (addr, size, value) => bus.write(addr, size, value) },
      interrupts: { connect: (deliver) => irq.connect(deliver) },
      clock: {
        now: () => events.now,
        armTimer: (cpu, deadline) => irq.armTimer(cpu, deadline),
        halt: () => {
          irq.raised = false;
          return events.runUntil(() => irq.raised);
        },
        relax: () => events.runOne(),
      },
      console: { write: (line) => void this.console.push(line) },
      cmdline,
      firmware: { addr: fwAddr, size: fw.length },
      initrd: { addr: initAddr, size: init.length },
    };
  }
}
