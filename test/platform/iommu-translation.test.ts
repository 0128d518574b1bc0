// DMA through an endpoint's address space: translation, permissions, reserved
// and MSI regions, the bypass rules of virtio 1.4 §5.13.6, fault records on the
// event queue, 64-bit IOVAs, and a virtio-blk device working behind the IOMMU.
import { describe, expect, it } from 'vitest';
import { VIRTQ_DESC_F } from '../../abi/ring.ts';
import { VIRTIO_BLK_S, VIRTIO_BLK_T, VirtioBlkReqHeader } from '../../abi/virtio-blk.ts';
import { VIRTIO_IOMMU_ATTACH_F_BYPASS, VIRTIO_IOMMU_F, VIRTIO_IOMMU_MAP_F, VirtioIommuConfig } from '../../abi/virtio-iommu.ts';
import { MMIO, VIRTIO_MMIO_CONFIG } from '../../abi/virtio-mmio.ts';
import { STATUS } from '../../abi/virtio.ts';
import { DMA_READ, DMA_WRITE } from '../../platform/address-space.ts';
import { VirtioBlk } from '../../platform/devices/blk.ts';
import { VirtioIommu } from '../../platform/iommu/virtio-iommu.ts';
import { IommuBench, PAGE } from './iommu-harness.ts';
import { Host, MSI_WINDOW, MmioDriver, TestRing, acceptAll } from './virtio-harness.ts';

const { READ, WRITE } = VIRTIO_IOMMU_MAP_F;
const C = VirtioIommuConfig.off;
const hex = (a: Uint8Array) => Buffer.from(a).toString('hex');
/** RAM the tests map IOVAs onto. */
const GPA = 0x10_0000;

function translating(opts: ConstructorParameters<typeof IommuBench>[0] = {}) {
  const b = new IommuBench({ bootBypass: false, ...opts }, { endpoints: [8, 16] });
  b.attach(1, 8);
  return { b, ep: b.endpoint(8) };
}

describe('translation', () => {
  it('reaches PA = VA - virt_start + phys_start, within the mapping', () => {
    const { b, ep } = translating();
    b.map(1, 0x4000, 0x5fff, GPA);
    b.h.put(GPA + 0x1234, Uint8Array.of(1, 2, 3, 4));
    const dst = new Uint8Array(4);
    expect(ep.read(0x5234, dst)).toBe(true);
    expect([...dst]).toEqual([1, 2, 3, 4]);
    expect(ep.resolve(0x4000, PAGE, DMA_WRITE)).toBe(GPA);
    expect(b.dev.iommuReport().endpoints[0]).toMatchObject({ id: 8, domain: 1, translations: 2, lowestIova: '0x4000', highestIova: '0x5237' });
  });

  it('an unmapped IOVA faults: a 24-byte record, reason MAPPING, F_READ | F_ADDRESS, the endpoint and the address', () => {
    const { b, ep } = translating();
    expect(ep.resolve(0xdead_b000, 16, DMA_READ)).toBe(-1);
    expect(b.faults().map(hex)).toEqual(['02000000' + '01010000' + '08000000' + '00000000' + '00b0adde00000000']);
    expect(b.dev.iommuReport().endpoints[0]?.faults).toEqual({ UNKNOWN: 0, DOMAIN: 0, MAPPING: 1 });
  });

  it('a write to a read-only mapping faults with F_WRITE; reads still work', () => {
    const { b, ep } = translating();
    b.map(1, 0, 0xfff, GPA, READ);
    expect(ep.resolve(0x10, 4, DMA_READ)).toBe(GPA + 0x10);
    expect(ep.write32(0x10, 7)).toBe(false);
    expect(b.faults().map(hex)).toEqual(['02000000' + '02010000' + '08000000' + '00000000' + '1000000000000000']);
  });

  it('a write-only mapping refuses reads (no architecture excuse here)', () => {
    const { b, ep } = translating();
    b.map(1, 0, 0xfff, GPA, WRITE);
    expect(ep.resolve(0, 4, DMA_WRITE)).toBe(GPA);
    expect(ep.resolve(0, 4, DMA_READ)).toBe(-1);
  });

  it('a RESERVED region faults even when a mapping would cover it; an MSI region is reached untranslated', () => {
    const { b, ep } = translating({ profile: 'qemu', reservedRegions: ['0xfee00000:0xfeefffff:1', '0x8000:0x8fff:0'] });
    b.map(1, 0x8000, 0x8fff, GPA);
    expect(ep.resolve(0x8000, 4, DMA_READ)).toBe(-1);
    expect(b.faults().map(hex)).toEqual(['02000000' + '00010000' + '08000000' + '00000000' + '0080000000000000']);
    const delivered = b.h.delivered.length;
    expect(ep.write32(MSI_WINDOW.base, 0x41)).toBe(true);
    expect(b.h.delivered.length).toBe(delivered + 1);
    expect(b.dev.iommuReport().endpoints[0]?.msi).toBe(1);
  });

  it('an access that runs off the end of a mapping faults at the first unmapped byte, unless the next mapping continues it', () => {
    const { b, ep } = translating({ profile: 'qemu' });
    b.map(1, 0x1000, 0x17ff, GPA);
    b.map(1, 0x1800, 0x1fff, GPA + 0x800);
    b.map(1, 0x2000, 0x27ff, GPA + 0x8000);
    expect(ep.resolve(0x1700, 0x200, DMA_READ)).toBe(GPA + 0x700);
    b.faults();
    expect(ep.resolve(0x1f00, 0x200, DMA_READ)).toBe(-1);
    expect(new DataView(b.faults()[0]!.buffer).getBigUint64(16, true)).toBe(0x2000n);
  });

  it('UNMAP takes effect at once, and bumps the generation that ring caches follow; MAP does not', () => {
    const { b, ep } = translating();
    const g0 = ep.generation;
    b.map(1, 0, 0xfff, GPA);
    expect(ep.generation).toBe(g0);
    expect(ep.resolve(0, 4, DMA_READ)).toBe(GPA);
    b.unmap(1, 0, 0xfff);
    expect(ep.generation).toBeGreaterThan(g0);
    expect(ep.resolve(0, 4, DMA_READ)).toBe(-1);
  });

  it('IOVAs above 2^53 and at 2^64 - 1 with aw-bits 64: no rounding', () => {
    const { b, ep } = translating({ awBits: 64 });
    const top = 2n ** 64n;
    expect(b.map(1, top - 0x1000n, top - 1n, GPA).status).toBe(0);
    expect(b.map(1, 2n ** 53n, 2n ** 53n + 0xfffn, GPA + 0x1000).status).toBe(0);
    expect(b.map(1, 2n ** 53n - 0x1000n, 2n ** 53n - 1n, GPA + 0x2000).status).toBe(0);
    expect(ep.resolve(top - 1n, 1, DMA_READ)).toBe(GPA + 0xfff);
    expect(ep.resolve(2n ** 53n + 1n, 1, DMA_READ)).toBe(GPA + 0x1001);
    expect(ep.resolve(2 ** 53 - 1, 1, DMA_READ)).toBe(GPA + 0x2fff);
    expect(ep.resolve(top - 0x2000n, 1, DMA_READ)).toBe(-1);
    expect(new DataView(b.faults()[0]!.buffer).getBigUint64(16, true)).toBe(top - 0x2000n);
    expect(b.unmap(1, top - 0x1000n, top - 1n).status).toBe(0);
    expect(ep.resolve(top - 1n, 1, DMA_READ)).toBe(-1);
    expect(b.dev.iommuReport().endpoints[0]?.highestIova).toBe('0xffffffffffffffff');
  });

  it('byte-granular keys (QEMU, no alignment) hold the last bytes of the space too', () => {
    const { b, ep } = translating({ profile: 'qemu', bootBypass: false });
    const top = 2n ** 64n;
    expect(b.map(1, top - 5n, top - 1n, GPA).status).toBe(0);
    expect(b.map(1, top - 10n, top - 6n, GPA + 0x100).status).toBe(0);
    expect(ep.resolve(top - 1n, 1, DMA_READ)).toBe(GPA + 4);
    expect(ep.resolve(top - 6n, 1, DMA_READ)).toBe(GPA + 0x104);
    expect(b.unmap(1, top - 7n, top - 1n).status).toBe(5); // RANGE: splits [top-10, top-6]
    expect(b.unmap(1, top - 5n, top - 1n).status).toBe(0);
  });
});

describe('faults on the event queue', () => {
  it('with no buffer queued the fault is dropped and counted', () => {
    const b = new IommuBench({ bootBypass: false }, { eventBuffers: 1 });
    const ep = b.endpoint(8);
    ep.resolve(0x1000, 4, DMA_READ);
    ep.resolve(0x2000, 4, DMA_READ);
    expect(b.faults()).toHaveLength(1);
    expect(b.dev.iommuReport().faults).toEqual({ reported: 1, dropped: 1, unreported: 0 });
  });

  it('an unattached endpoint out of bypass faults with reason DOMAIN', () => {
    const b = new IommuBench({ bootBypass: false });
    b.endpoint(8).resolve(0x3000, 4, DMA_WRITE);
    expect(b.faults().map(hex)).toEqual(['01000000' + '02010000' + '08000000' + '00000000' + '0030000000000000']);
  });

  it('an event buffer too small for a fault breaks the device (virtio_error) instead of splitting it', () => {
    const b = new IommuBench({ bootBypass: false }, { eventBufferLen: 16 });
    b.endpoint(8).resolve(0x3000, 4, DMA_WRITE);
    expect(b.dev.status & STATUS.DEVICE_NEEDS_RESET).toBeTruthy();
  });
});

describe('bypass (§5.13.6: three ways in)', () => {
  it('config bypass = 1 with BYPASS_CONFIG offered: unattached endpoints bypass, before FEATURES_OK too (boot-bypass)', () => {
    const h = new Host();
    const dev = new VirtioIommu(h.ctx(), { bootBypass: true });
    const ep = dev.addEndpoint(8, { physical: h.space });
    expect(ep.resolve(0x1000, 4, DMA_READ)).toBe(0x1000);
    expect(dev.iommuReport().endpoints[0]?.bypassed).toBe(1);
  });

  it('the driver turns bypass off by writing 0; an attached endpoint never bypasses its domain', () => {
    const b = new IommuBench({ bootBypass: true });
    const ep = b.endpoint(8);
    const g = ep.generation;
    b.drv.t.handler.write(VIRTIO_MMIO_CONFIG + C.bypass, 1, 0);
    expect(ep.generation).toBeGreaterThan(g);
    expect(ep.resolve(0x1000, 4, DMA_READ)).toBe(-1);
    b.drv.t.handler.write(VIRTIO_MMIO_CONFIG + C.bypass, 1, 1);
    b.attach(1, 8);
    expect(ep.resolve(0x1000, 4, DMA_READ)).toBe(-1);
  });

  it('an endpoint in a bypass domain (ATTACH_F_BYPASS) reaches guest-physical memory', () => {
    const b = new IommuBench({ bootBypass: false });
    expect(b.attach(5, 8, VIRTIO_IOMMU_ATTACH_F_BYPASS).status).toBe(0);
    expect(b.endpoint(8).resolve(0x2000, 8, DMA_WRITE)).toBe(0x2000);
  });

  it('legacy F_BYPASS bypasses only once negotiated', () => {
    const h = new Host();
    const dev = new VirtioIommu(h.ctx(), { features: { bypass: true, bypass_config: false } });
    const ep = dev.addEndpoint(8, { physical: h.space });
    expect(ep.resolve(0x1000, 4, DMA_READ)).toBe(-1);
    const drv = new MmioDriver(h, dev);
    drv.negotiate(acceptAll(dev));
    expect(ep.resolve(0x1000, 4, DMA_READ)).toBe(0x1000);
    drv.negotiate(acceptAll(dev, VIRTIO_IOMMU_F.BYPASS));
    expect(ep.resolve(0x1000, 4, DMA_READ)).toBe(-1);
  });
});

describe('devices without ACCESS_PLATFORM', () => {
  it('reach guest-physical memory directly, counted as direct, and the switch changes the generation', () => {
    const b = new IommuBench({ bootBypass: false });
    const ep = b.endpoint(8);
    const g = ep.generation;
    ep.setTranslated(false);
    expect(ep.translated).toBe(false);
    expect(ep.generation).not.toBe(g);
    expect(ep.resolve(0x1000, 4, DMA_READ)).toBe(0x1000);
    expect(b.dev.iommuReport().endpoints[0]).toMatchObject({ translated: false, direct: 1, faults: { DOMAIN: 0 } });
  });
});

describe('a virtio-blk device behind the IOMMU', () => {
  /** The disk's ring and buffers at IOVAs far from their guest-physical pages. */
  function disk() {
    const { b } = translating();
    const space = b.endpoint(8);
    const dev = new VirtioBlk({ name: 'virtio-blk.0', mem: b.h.mem, space, events: b.h.events, trace: b.h.trace }, { capacity: 1 << 20, iommuPlatform: true });
    const IOVA = 0x1_0000_0000;
    const RING_GPA = 0x28_0000;
    expect(b.map(1, IOVA, IOVA + 0x3fff, RING_GPA).status).toBe(0);
    const drv = new MmioDriver(b.h, dev);
    expect(drv.negotiate(acceptAll(dev))).toBe(true);
    const ring = new TestRing(b.h.mem, 16, RING_GPA);
    // The driver programs IOVAs (4 GiB up); its own view of the ring stays guest-physical.
    drv.write(MMIO.queue_sel, 0);
    drv.write(MMIO.queue_num, 16);
    for (const [lo, hi, gpa] of [
      [MMIO.queue_desc_low, MMIO.queue_desc_high, ring.desc],
      [MMIO.queue_driver_low, MMIO.queue_driver_high, ring.avail],
      [MMIO.queue_device_low, MMIO.queue_device_high, ring.used],
    ] as const) {
      drv.write(lo, gpa - RING_GPA);
      drv.write(hi, IOVA / 2 ** 32);
    }
    drv.write(MMIO.queue_ready, 1);
    drv.driverOk();
    return { b, dev, drv, ring, IOVA };
  }

  it('moves data through translated buffers, and gets IOERR once the data page is unmapped', () => {
    const { b, dev, drv, ring } = disk();
    dev.disk.write(0, Uint8Array.from({ length: 512 }, (_, i) => i & 0xff));
    const BUF = 0x2_0000_0000;
    b.map(1, BUF, BUF + 0xfff, 0x2c_0000);
    const hdrGpa = 0x2c_0000;
    b.h.put(hdrGpa, VirtioBlkReqHeader.encode({ type: VIRTIO_BLK_T.IN, reserved: 0, sector: 0n }));
    const read = () => {
      ring.setDesc(0, { addr: BUF, len: 16, flags: VIRTQ_DESC_F.NEXT, next: 1 });
      ring.setDesc(1, { addr: BUF + 0x100, len: 512, flags: VIRTQ_DESC_F.NEXT | VIRTQ_DESC_F.WRITE, next: 2 });
      ring.setDesc(2, { addr: BUF + 0x400, len: 1, flags: VIRTQ_DESC_F.WRITE });
      ring.add(0);
      drv.kick();
      b.h.run();
    };
    read();
    expect(b.h.mem.u8[0x2c_0400]).toBe(VIRTIO_BLK_S.OK);
    expect([...b.h.get(0x2c_0100, 4)]).toEqual([0, 1, 2, 3]);
    expect(b.dev.iommuReport().endpoints[0]?.translations).toBeGreaterThan(0);
    b.unmap(1, BUF, BUF + 0xfff);
    read();
    // The chain's buffers are unreachable now: a driver error, as QEMU's virtqueue_pop has it.
    expect(dev.status & STATUS.DEVICE_NEEDS_RESET).toBeTruthy();
    expect(b.faults().length).toBeGreaterThan(0);
  });
});
