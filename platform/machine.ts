// A machine: RAM, the MMIO bus, the interrupt controller, a PCI host bridge,
// virtio-mmio slots and the device models, all on one virtual clock. It
// writes the firmware tables and the init program into RAM and offers the
// boot protocol the guest image is entered with.
import type { BootProtocol } from '../abi/boot.ts';
import { encodeFirmware, type FirmwareTables, type FwPciHostBridge, type FwVirtioMmio } from '../abi/firmware.ts';
import { encodeWorkload, type Workload } from '../abi/workload.ts';
import { PhysicalSpace } from './address-space.ts';
import { MmioBus } from './bus.ts';
import type { DeviceConfig, MachineConfig } from './config.ts';
import { EventLoop } from './events.ts';
import { InterruptController } from './irq.ts';
import { GuestMemory } from './memory.ts';
import { PciHostBridge } from './pci/host-bridge.ts';
import { PRESETS, ramLayout, type Preset } from './presets.ts';
import { HostTrace } from './trace.ts';
import { attachVirtioDevice, type AttachedDevice } from './virtio/attach.ts';

const PAGE = 4096;
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
    config.devices.forEach((d) => this.addDevice(d));
  }

  /** The DMA view of a new endpoint. Without an IOMMU every endpoint sees guest-physical memory. */
  addressSpaceFor(name: string): PhysicalSpace {
    return new PhysicalSpace(this.mem, this.irq, this.trace, name, this.config.dmaBits);
  }

  private addDevice(cfg: DeviceConfig): void {
    const index = this.devices.length;
    if (cfg.transport === 'pci') {
      const slot = this.nextPciSlot++;
      this.devices.push(attachVirtioDevice(this, cfg, index, { kind: 'pci', slot }));
    } else {
      const m = this.preset.virtioMmio;
      const i = this.mmioSlots.length;
      if (i >= m.slots) throw new Error(`no free virtio-mmio slot (the ${this.preset.name} preset has ${m.slots})`);
      const slot: FwVirtioMmio = { base: m.base + i * m.stride, size: m.stride, irq: m.firstIrq + i, ...(this.config.dmaBits !== undefined ? { dmaBits: this.config.dmaBits } : {}) };
      this.mmioSlots.push(slot);
      this.devices.push(attachVirtioDevice(this, cfg, index, { kind: 'mmio', ...slot }));
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
      },
      console: { write: (line) => void this.console.push(line) },
      cmdline,
      firmware: { addr: fwAddr, size: fw.length },
      initrd: { addr: initAddr, size: init.length },
    };
  }
}
