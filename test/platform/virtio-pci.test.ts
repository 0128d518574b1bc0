import { describe, expect, it } from 'vitest';
import type { Addr } from '../../abi/addr.ts';
import type { AccessSize } from '../../abi/boot.ts';
import { VECTOR } from '../../abi/boot.ts';
import { MSIX_CTRL, MsixCap, MsixEntry, PCI_BAR, PCI_CAP_ID, PCI_CFG, PCI_COMMAND, PCI_STATUS_CAP_LIST, ecamOffset, pciBarOffset } from '../../abi/pci.ts';
import { VIRTQ_DESC_F } from '../../abi/ring.ts';
import { VIRTIO_BLK_S, VIRTIO_BLK_T, VirtioBlkConfig, VirtioBlkReqHeader } from '../../abi/virtio-blk.ts';
import { COMMON, VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_CAP, VirtioPciCap, VirtioPciNotifyCap } from '../../abi/virtio-pci.ts';
import { STATUS } from '../../abi/virtio.ts';
import type { AddressSpace } from '../../platform/address-space.ts';
import { VirtioBlk } from '../../platform/devices/blk.ts';
import { VirtioRng } from '../../platform/devices/rng.ts';
import { PciHostBridge } from '../../platform/pci/host-bridge.ts';
import { createVirtioPci } from '../../platform/virtio/attach.ts';
import type { VirtioPciOptions } from '../../platform/virtio/pci.ts';
import { Host, MSI_WINDOW, TestRing } from './virtio-harness.ts';

const MiB = 2 ** 20;
const ECAM = 0xb000_0000;
const SLOT = 3;
const INTX_LINE = 11;
const QUEUE_VECTOR_DATA = 0x45;
const CONFIG_VECTOR_DATA = 0x44;

/** A guest's view of one virtio-pci function: config space through ECAM, BAR 4 regions through the bus. */
class PciDriver {
  readonly h = new Host();
  readonly bridge = new PciHostBridge(this.h.bus, {
    segment: 0,
    ecam: { base: ECAM, size: 16 * MiB },
    busStart: 0,
    busEnd: 15,
    mmio32: { base: 0xc000_0000, size: 0x1000_0000 },
    mmio64: { base: 0x8_0000_0000, size: 2 ** 32 },
  });
  readonly blk: VirtioBlk;
  readonly transport;
  readonly bdf: string;
  /** MSI writes the device made through its address space. */
  readonly msiWrites: [Addr, number][] = [];

  constructor(opts: Partial<VirtioPciOptions> = {}) {
    const h = this.h;
    const spy: AddressSpace = {
      generation: 0,
      resolve: (a, l, acc) => h.space.resolve(a, l, acc),
      read: (a, d) => h.space.read(a, d),
      write: (a, s) => h.space.write(a, s),
      write32: (a, v) => (this.msiWrites.push([a, v]), h.space.write32(a, v)),
    };
    this.blk = new VirtioBlk({ ...h.ctx('virtio-blk.0'), space: spy }, { capacity: MiB });
    ({ transport: this.transport, bdf: this.bdf } = createVirtioPci(this.blk, this.bridge, SLOT, { irq: h.irq, intxLine: INTX_LINE, ...opts }));
  }

  cfg(off: number, size: AccessSize = 4): number {
    return this.h.bus.read(ECAM + ecamOffset(0, SLOT, 0) + off, size);
  }

  setCfg(off: number, size: AccessSize, v: number): void {
    this.h.bus.write(ECAM + ecamOffset(0, SLOT, 0) + off, size, v);
  }

  enable(): void {
    this.setCfg(PCI_CFG.command, 2, PCI_COMMAND.MEMORY | PCI_COMMAND.MASTER);
  }

  /** Vendor capabilities by cfg_type and the MSI-X capability offset, found by walking the list. */
  caps(): { vendor: Map<number, Record<string, number>>; msix: number; visited: number[] } {
    const vendor = new Map<number, Record<string, number>>();
    const visited: number[] = [];
    let msix = 0;
    const raw = new Uint8Array(256);
    for (let i = 0; i < 256; i++) raw[i] = this.cfg(i, 1);
    for (let at = raw[PCI_CFG.cap_ptr]!; at !== 0; at = raw[at + 1]!) {
      if (visited.includes(at)) throw new Error('capability list loops');
      visited.push(at);
      if (raw[at] === PCI_CAP_ID.MSIX) msix = at;
      if (raw[at] === PCI_CAP_ID.VNDR) {
        const type = raw[at + VirtioPciCap.off.cfg_type]!;
        vendor.set(type, (type === VIRTIO_PCI_CAP.NOTIFY_CFG ? VirtioPciNotifyCap : VirtioPciCap).decode(raw, at));
      }
    }
    return { vendor, msix, visited };
  }

  bar(n: number): number {
    return this.transport.fn.barAddress(n);
  }

  /** A region of BAR 4, located through its capability as a driver does. */
  region(type: number): number {
    return this.bar(4) + this.caps().vendor.get(type)!.offset!;
  }

  common(field: keyof typeof COMMON, size: AccessSize = 4): number {
    return this.h.bus.read(this.region(VIRTIO_PCI_CAP.COMMON_CFG) + COMMON[field], size);
  }

  setCommon(field: keyof typeof COMMON, size: AccessSize, v: number): void {
    this.h.bus.write(this.region(VIRTIO_PCI_CAP.COMMON_CFG) + COMMON[field], size, v);
  }

  msixEntry(i: number, data: number, masked = false): void {
    const base = this.bar(1) + i * MsixEntry.span;
    this.h.bus.write(base + MsixEntry.off.addr_lo, 4, MSI_WINDOW.base);
    this.h.bus.write(base + MsixEntry.off.addr_hi, 4, 0);
    this.h.bus.write(base + MsixEntry.off.data, 4, data);
    this.h.bus.write(base + MsixEntry.off.vector_ctrl, 4, masked ? 1 : 0);
  }

  enableMsix(): void {
    const at = this.caps().msix + MsixCap.off.msg_ctrl;
    this.setCfg(at, 2, this.cfg(at, 2) | MSIX_CTRL.ENABLE);
  }

  /** §3.1.1 over common cfg, queue 0 on `ring` with MSI-X vectors 0 (config) and 1 (queue). */
  bringUp(ring: TestRing): void {
    this.setCommon('device_status', 1, 0);
    this.setCommon('device_status', 1, STATUS.ACKNOWLEDGE | STATUS.DRIVER);
    for (const sel of [0, 1]) {
      this.setCommon('device_feature_select', 4, sel);
      const offered = this.common('device_feature');
      this.setCommon('driver_feature_select', 4, sel);
      this.setCommon('driver_feature', 4, offered);
    }
    this.setCommon('device_status', 1, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK);
    expect(this.common('device_status', 1) & STATUS.FEATURES_OK).toBeTruthy();
    this.setCommon('config_msix_vector', 2, 0);
    this.setCommon('queue_select', 2, 0);
    this.setCommon('queue_size', 2, ring.size);
    this.setCommon('queue_msix_vector', 2, 1);
    this.setCommon('queue_desc_lo', 4, ring.desc);
    this.setCommon('queue_desc_hi', 4, 0);
    this.setCommon('queue_driver_lo', 4, ring.avail);
    this.setCommon('queue_driver_hi', 4, 0);
    this.setCommon('queue_device_lo', 4, ring.used);
    this.setCommon('queue_device_hi', 4, 0);
    this.setCommon('queue_enable', 2, 1);
    this.setCommon('device_status', 1, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK);
  }

  /** A FLUSH request on queue 0, notified through the notify region; returns its status byte's address. */
  flush(ring: TestRing): number {
    const { h } = this;
    const hdr = h.alloc(16);
    h.put(hdr, VirtioBlkReqHeader.encode({ type: VIRTIO_BLK_T.FLUSH, reserved: 0, sector: 0n }));
    const st = h.alloc(1);
    const head = (ring.availIdx * 2) % ring.size;
    ring.setDesc(head, { addr: hdr, len: 16, flags: VIRTQ_DESC_F.NEXT, next: head + 1 });
    ring.setDesc(head + 1, { addr: st, len: 1, flags: VIRTQ_DESC_F.WRITE });
    ring.add(head);
    const notify = this.caps().vendor.get(VIRTIO_PCI_CAP.NOTIFY_CFG)!;
    const queueNotifyOff = this.common('queue_notify_off', 2);
    h.bus.write(this.bar(4) + notify.offset! + queueNotifyOff * notify.notify_off_multiplier!, 2, 0);
    h.run();
    return st;
  }
}

describe('virtio-pci function', () => {
  it('has QEMU IDs: vendor 0x1af4, device 0x1040 + id, revision 1, class by type, subsystem 0x1af4:0x1100, INTA#', () => {
    const d = new PciDriver();
    expect(d.bdf).toBe('0000:00:03.0');
    expect([d.cfg(PCI_CFG.vendor_id, 2), d.cfg(PCI_CFG.device_id, 2), d.cfg(PCI_CFG.revision, 1)]).toEqual([0x1af4, 0x1042, 1]);
    expect([d.cfg(PCI_CFG.class_code, 1), d.cfg(PCI_CFG.subclass, 1), d.cfg(PCI_CFG.prog_if, 1)]).toEqual([0x01, 0x00, 0x00]);
    expect([d.cfg(PCI_CFG.subsystem_vendor_id, 2), d.cfg(PCI_CFG.subsystem_id, 2)]).toEqual([0x1af4, 0x1100]);
    expect([d.cfg(PCI_CFG.interrupt_pin, 1), d.cfg(PCI_CFG.interrupt_line, 1)]).toEqual([1, INTX_LINE]);
    expect(d.cfg(PCI_CFG.status, 2) & PCI_STATUS_CAP_LIST).toBeTruthy();
  });

  it('gives virtio-rng device 0x1044 and class 0x00ff00; a transitional function uses 0x1000 + n and names its type in the subsystem ID', () => {
    const h = new Host();
    const bridge = new PciHostBridge(h.bus, { segment: 0, ecam: { base: ECAM, size: 16 * MiB }, busStart: 0, busEnd: 15, mmio32: { base: 0xc000_0000, size: 0x1000_0000 } });
    const rng = createVirtioPci(new VirtioRng(h.ctx('rng'), { seed: 1 }), bridge, 1, { irq: h.irq }).transport.fn;
    expect([rng.cfgRead(PCI_CFG.device_id, 2), rng.cfgRead(PCI_CFG.class_code, 1), rng.cfgRead(PCI_CFG.subclass, 1)]).toEqual([0x1044, 0x00, 0xff]);
    const old = createVirtioPci(new VirtioBlk(h.ctx('blk'), { capacity: MiB }), bridge, 2, { irq: h.irq, disableLegacy: false }).transport.fn;
    expect([old.cfgRead(PCI_CFG.device_id, 2), old.cfgRead(PCI_CFG.revision, 1), old.cfgRead(PCI_CFG.subsystem_id, 2)]).toEqual([0x1001, 0, 2]);
  });

  it('lists the common, ISR, device and notify capabilities in BAR 4, and MSI-X in BAR 1', () => {
    const d = new PciDriver();
    const { vendor, msix, visited } = d.caps();
    expect(visited).toHaveLength(5);
    const R = (type: number) => {
      const c = vendor.get(type)!;
      return [c.bar, c.offset, c.length, c.cap_len];
    };
    expect(R(VIRTIO_PCI_CAP.COMMON_CFG)).toEqual([4, 0x0000, 0x1000, 16]);
    expect(R(VIRTIO_PCI_CAP.ISR_CFG)).toEqual([4, 0x1000, 0x1000, 16]);
    expect(R(VIRTIO_PCI_CAP.DEVICE_CFG)).toEqual([4, 0x2000, 0x1000, 16]);
    expect(R(VIRTIO_PCI_CAP.NOTIFY_CFG)).toEqual([4, 0x3000, 0x1000, 20]);
    expect(vendor.get(VIRTIO_PCI_CAP.NOTIFY_CFG)!.notify_off_multiplier).toBe(4);
    const ctrl = d.cfg(msix + MsixCap.off.msg_ctrl, 2);
    expect((ctrl & MSIX_CTRL.TABLE_SIZE_MASK) + 1).toBe(2); // one queue + config
    expect([d.cfg(msix + MsixCap.off.table) & 7, d.cfg(msix + MsixCap.off.pba) & 7]).toEqual([1, 1]);
  });

  it('sizes its BARs: BAR 4 is 64-bit and 16 KiB, BAR 1 holds the MSI-X table, the others are absent', () => {
    const d = new PciDriver();
    const size = (n: number): number => {
      const off = pciBarOffset(n);
      const saved = d.cfg(off);
      d.setCfg(off, 4, 0xffff_ffff);
      const v = d.cfg(off);
      d.setCfg(off, 4, saved);
      return v;
    };
    const bar4 = size(4);
    expect(bar4 & PCI_BAR.MEM_TYPE_64).toBe(PCI_BAR.MEM_TYPE_64);
    expect(((~(bar4 & PCI_BAR.MEM_MASK) >>> 0) + 1) >>> 0).toBe(0x4000);
    expect(size(5)).toBe(0xffff_ffff);
    expect(((~(size(1) & PCI_BAR.MEM_MASK) >>> 0) + 1) >>> 0).toBe(d.transport.msix.barSize);
    expect([size(0), size(2), size(3)]).toEqual([0, 0, 0]);
    expect(d.bar(4)).toBeGreaterThanOrEqual(0x8_0000_0000); // placed in the 64-bit window
  });
});

describe('virtio-pci common configuration', () => {
  function ready() {
    const d = new PciDriver();
    d.enable();
    return d;
  }

  it('shows feature words 0 and 1 and reads 0 past them; driver feature words past 1 are dropped', () => {
    const d = ready();
    const words = [0, 1, 2].map((sel) => {
      d.setCommon('device_feature_select', 4, sel);
      return d.common('device_feature');
    });
    expect(words).toEqual([Number(d.blk.offeredFeatures & 0xffff_ffffn), Number(d.blk.offeredFeatures >> 32n), 0]);
    d.setCommon('driver_feature_select', 4, 2);
    d.setCommon('driver_feature', 4, 0xffff);
    expect(d.common('driver_feature')).toBe(0);
    expect(d.blk.driverFeatures).toBe(0n);
  });

  it('reads back NO_VECTOR for MSI-X vectors past the table', () => {
    const d = ready();
    d.setCommon('config_msix_vector', 2, 1);
    expect(d.common('config_msix_vector', 2)).toBe(1);
    d.setCommon('config_msix_vector', 2, 2);
    expect(d.common('config_msix_vector', 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    d.setCommon('queue_msix_vector', 2, 0);
    expect(d.common('queue_msix_vector', 2)).toBe(0);
    d.setCommon('queue_msix_vector', 2, 0x7ff);
    expect(d.common('queue_msix_vector', 2)).toBe(VIRTIO_MSI_NO_VECTOR);
  });

  it('reads queue_size as the maximum, takes a smaller power of two only while disabled, and 0 for a missing queue', () => {
    const d = ready();
    expect(d.common('num_queues', 2)).toBe(1);
    expect(d.common('queue_size', 2)).toBe(256);
    for (const v of [100, 512, 0]) d.setCommon('queue_size', 2, v);
    expect(d.common('queue_size', 2)).toBe(256);
    d.setCommon('queue_size', 2, 64);
    expect(d.common('queue_size', 2)).toBe(64);
    d.setCommon('queue_desc_lo', 4, 0x1_0000);
    d.setCommon('queue_desc_hi', 4, 0x1);
    d.setCommon('queue_driver_lo', 4, 0x1_1000);
    d.setCommon('queue_device_lo', 4, 0x1_2000);
    expect([d.common('queue_desc_lo'), d.common('queue_desc_hi'), d.common('queue_driver_lo'), d.common('queue_device_lo')]).toEqual([0x1_0000, 1, 0x1_1000, 0x1_2000]);
    d.setCommon('queue_enable', 2, 0);
    expect(d.common('queue_enable', 2)).toBe(0);
    d.setCommon('queue_enable', 2, 1);
    expect(d.common('queue_enable', 2)).toBe(1);
    d.setCommon('queue_size', 2, 32);
    d.setCommon('queue_desc_lo', 4, 0x5_0000);
    expect([d.common('queue_size', 2), d.common('queue_desc_lo')]).toEqual([64, 0x1_0000]);
    d.setCommon('queue_enable', 2, 0); // the driver MUST NOT; the device ignores it
    expect(d.common('queue_enable', 2)).toBe(1);
    expect(d.common('queue_notify_off', 2)).toBe(0);
    d.setCommon('queue_select', 2, 1);
    expect([d.common('queue_size', 2), d.common('queue_enable', 2), d.common('queue_msix_vector', 2)]).toEqual([0, 0, VIRTIO_MSI_NO_VECTOR]);
  });

  it('resets everything on device_status = 0: status, queues, vectors and selectors', () => {
    const d = ready();
    const ring = new TestRing(d.h.mem, 16);
    d.bringUp(ring);
    d.setCommon('device_feature_select', 4, 1);
    d.setCommon('device_status', 1, 0);
    expect([d.common('device_status', 1), d.common('device_feature_select'), d.common('config_msix_vector', 2)]).toEqual([0, 0, VIRTIO_MSI_NO_VECTOR]);
    expect([d.common('queue_size', 2), d.common('queue_enable', 2), d.common('queue_msix_vector', 2), d.common('queue_desc_lo')]).toEqual([256, 0, VIRTIO_MSI_NO_VECTOR, 0]);
    expect(d.blk.driverFeatures).toBe(0n);
  });

  it('serves device config in its region and bumps config_generation when the device changes it', () => {
    const d = ready();
    const devcfg = d.region(VIRTIO_PCI_CAP.DEVICE_CFG);
    expect(d.h.bus.read(devcfg + VirtioBlkConfig.off.capacity, 4)).toBe(MiB / 512);
    expect(d.h.bus.read(devcfg + VirtioBlkConfig.off.blk_size, 4)).toBe(512);
    const gen = d.common('config_generation', 1);
    d.blk.resize(2 * MiB);
    expect(d.common('config_generation', 1)).toBe(gen + 1);
    expect(d.h.bus.read(devcfg + VirtioBlkConfig.off.capacity, 4)).toBe((2 * MiB) / 512);
  });
});

describe('virtio-pci interrupts', () => {
  it('delivers used-buffer and config interrupts as MSI-X messages through the device address space', () => {
    const d = new PciDriver();
    d.enable();
    d.msixEntry(0, CONFIG_VECTOR_DATA);
    d.msixEntry(1, QUEUE_VECTOR_DATA);
    d.enableMsix();
    const ring = new TestRing(d.h.mem, 16);
    d.bringUp(ring);
    const st = d.flush(ring);
    expect(d.h.mem.u8[st]).toBe(VIRTIO_BLK_S.OK);
    expect(d.h.delivered).toEqual([QUEUE_VECTOR_DATA]);
    expect(d.msiWrites).toEqual([[MSI_WINDOW.base, QUEUE_VECTOR_DATA]]);
    d.blk.resize(2 * MiB);
    expect(d.h.delivered).toEqual([QUEUE_VECTOR_DATA, CONFIG_VECTOR_DATA]);
    expect(d.transport.isr).toBe(0); // ISR is not used with MSI-X
  });

  it('holds a message pending while its vector is masked and sends it on unmask', () => {
    const d = new PciDriver();
    d.enable();
    d.msixEntry(0, CONFIG_VECTOR_DATA);
    d.msixEntry(1, QUEUE_VECTOR_DATA, true);
    d.enableMsix();
    const ring = new TestRing(d.h.mem, 16);
    d.bringUp(ring);
    d.flush(ring);
    expect(d.h.delivered).toEqual([]);
    const pba = d.bar(1) + d.transport.msix.pbaOffset;
    expect(d.h.bus.read(pba, 4) & 0b10).toBe(0b10);
    d.h.bus.write(d.bar(1) + MsixEntry.span + MsixEntry.off.vector_ctrl, 4, 0);
    expect(d.h.delivered).toEqual([QUEUE_VECTOR_DATA]);
    expect(d.h.bus.read(pba, 4)).toBe(0);
  });

  it('loses the event for a source without a vector, as hardware does', () => {
    const d = new PciDriver();
    d.enable();
    d.msixEntry(0, CONFIG_VECTOR_DATA);
    d.msixEntry(1, QUEUE_VECTOR_DATA);
    d.enableMsix();
    const ring = new TestRing(d.h.mem, 16);
    d.bringUp(ring);
    d.setCommon('queue_msix_vector', 2, VIRTIO_MSI_NO_VECTOR);
    d.flush(ring);
    expect(ring.usedIdx).toBe(1);
    expect(d.h.delivered).toEqual([]);
    expect(d.msiWrites).toEqual([]);
    expect(d.transport.isr).toBe(0);
  });

  it('without MSI-X sets ISR bits and asserts INTx; reading ISR returns and clears them', () => {
    const d = new PciDriver();
    d.enable();
    const ring = new TestRing(d.h.mem, 16);
    d.bringUp(ring);
    d.flush(ring);
    ring.usedEvent = 1; // the driver asks to hear about the next one too
    d.flush(ring);
    expect(d.blk.report().interrupts.used).toBe(2);
    expect(d.h.delivered).toEqual([VECTOR.LINE_BASE + INTX_LINE]); // the second signal found the ISR bit already up
    const isr = d.region(VIRTIO_PCI_CAP.ISR_CFG);
    expect(d.h.bus.read(isr, 1)).toBe(1);
    expect(d.h.bus.read(isr, 1)).toBe(0);
    d.blk.resize(2 * MiB);
    expect(d.h.bus.read(isr, 1)).toBe(2);
    expect(d.h.delivered).toHaveLength(2);
  });

  it('does not assert INTx while the command register disables it', () => {
    const d = new PciDriver();
    d.setCfg(PCI_CFG.command, 2, PCI_COMMAND.MEMORY | PCI_COMMAND.MASTER | PCI_COMMAND.INTX_DISABLE);
    const ring = new TestRing(d.h.mem, 16);
    d.bringUp(ring);
    d.flush(ring);
    expect(d.h.delivered).toEqual([]);
    expect(d.h.bus.read(d.region(VIRTIO_PCI_CAP.ISR_CFG), 1)).toBe(1);
  });
});
