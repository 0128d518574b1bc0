import { describe, expect, it } from 'vitest';
import { Xoshiro128 } from '../../abi/prng.ts';
import { runScenario } from '../../cli/run.ts';
import { loadScenario } from '../../cli/scenario.ts';
import { crc32 } from '../../kernel/crc32.ts';
import type { VirtioBlk } from '../../platform/devices/blk.ts';
import { GUEST_SOURCE, ROOT, blkAndRng, run } from './support.ts';

describe('the default machine', () => {
  it('boots, binds both devices and keeps the disk data intact', async () => {
    const { report, machine } = await runScenario(loadScenario(`${ROOT}/scenarios/default.yaml`), GUEST_SOURCE);
    expect(report.exitStatus).toBe(0);
    expect(report.guest.errors).toEqual([]);
    const [iommu, blk, rng] = report.guest.virtio;
    expect(iommu).toMatchObject({ deviceType: 'virtio-iommu', transport: 'virtio-pci', driver: 'virtio_iommu' });
    expect(blk).toMatchObject({ deviceType: 'virtio-blk', transport: 'virtio-pci', driver: 'virtio_blk', usesDmaApi: true });
    expect(rng).toMatchObject({ deviceType: 'virtio-rng', transport: 'virtio-mmio', driver: 'virtio_rng', usesDmaApi: true });
    for (const v of [iommu!, blk!, rng!]) {
      expect(v.acceptedNames).toContain('VERSION_1');
      expect(v.status.filter((s) => s.op === 'write').at(-1)!.names).toEqual(['ACKNOWLEDGE', 'DRIVER', 'DRIVER_OK', 'FEATURES_OK']);
    }
    const disk = report.guest.workload!.disk!;
    expect(disk).toMatchObject({ bytes: 2 ** 20, verified: true, mismatchedBytes: 0, failedRequests: 0 });
    // The host's copy of the disk holds exactly the pattern the guest wrote: checked on the host side, independently.
    const model = machine.devices[0]!.model as VirtioBlk;
    const onDisk = model.disk.read(0, disk.bytes);
    let crc = 0;
    for (let i = 0; i < disk.bytes / disk.requestBytes; i++) {
      const expect_ = new Uint8Array(disk.requestBytes);
      new Xoshiro128((report.seed ^ Math.imul(i + 1, 0x9e3779b9)) >>> 0).fill(expect_);
      expect(Buffer.compare(onDisk.subarray(i * disk.requestBytes, (i + 1) * disk.requestBytes), expect_)).toBe(0);
      crc = crc32(expect_, crc);
    }
    expect(disk.crc32).toBe('0x' + crc.toString(16).padStart(8, '0'));
    expect(report.guest.workload!.entropy!.bytes).toBe(4096);
    // Every byte moved went through the device's DMA: data plus headers and status bytes.
    expect(report.host.devices[0]!.dma.readBytes).toBeGreaterThanOrEqual(2 ** 20);
    expect(report.host.devices[0]!.dma.writtenBytes).toBeGreaterThanOrEqual(2 ** 20);
    // ... and every one of them was translated by the IOMMU.
    const ep = report.host.iommu!.endpoints.find((e) => e.name === 'virtio-blk.0')!;
    expect(ep).toMatchObject({ translated: true, direct: 0, faults: { UNKNOWN: 0, DOMAIN: 0, MAPPING: 0 } });
    expect(ep.translations).toBeGreaterThan(0);
  });

  it('is deterministic: the same scenario and seed give the same report and trace', async () => {
    const a = await run(blkAndRng());
    const b = await run(blkAndRng());
    expect(JSON.stringify(a.report)).toBe(JSON.stringify(b.report));
    expect(JSON.stringify(a.trace)).toBe(JSON.stringify(b.trace));
    const c = await run({ ...blkAndRng(), workload: { ...blkAndRng().workload, seed: 8 } });
    expect(c.report.guest.workload!.disk!.crc32).not.toBe(a.report.guest.workload!.disk!.crc32);
  });

  it('routes every buffer through the DMA API when ACCESS_PLATFORM is negotiated (bounced with swiotlb=force)', async () => {
    const { report } = await run(blkAndRng({ iommu_platform: true }, { iommu_platform: true }, { cmdline: 'swiotlb=force' }));
    expect(report.exitStatus).toBe(0);
    expect(report.guest.workload!.disk!.verified).toBe(true);
    for (const v of report.guest.virtio) expect(v.usesDmaApi).toBe(true);
    const blkDma = report.guest.dma.devices.find((d) => d.device === report.guest.virtio[0]!.busDevice)!;
    expect(blkDma.bounces).toBeGreaterThan(0);
    expect(blkDma.maps).toBe(blkDma.unmaps);
    expect(report.guest.dma.swiotlb!.used).toBe(0);
  });

  it('uses guest-physical addresses without ACCESS_PLATFORM, even with swiotlb=force', async () => {
    const { report } = await run(blkAndRng({}, {}, { cmdline: 'swiotlb=force' }));
    expect(report.exitStatus).toBe(0);
    for (const v of report.guest.virtio) expect(v.usesDmaApi).toBe(false);
    expect(report.guest.dma.devices.every((d) => d.maps === 0 && d.bounces === 0)).toBe(true);
  });

  it('wraps the 16-bit ring indices past 65535 end to end', async () => {
    const { report } = await run({
      devices: [{ type: 'virtio-rng', transport: 'mmio', queue_size: 8 }],
      workload: { seed: 3, entropy: { bytes: 70000, request_bytes: 1 } },
    });
    expect(report.exitStatus).toBe(0);
    expect(report.guest.workload!.entropy!.bytes).toBe(70000);
    expect(report.guest.virtio[0]!.queues[0]!.added).toBe(70000);
    expect(report.host.devices[0]!.queues[0]!.used).toBe(70000);
  });
});

describe('a 32-bit bus with RAM above 4 GiB (scenarios/dma-bits-32.yaml)', () => {
  it('bounces every buffer through swiotlb when ACCESS_PLATFORM is negotiated, and the data arrives intact', async () => {
    const { report } = await runScenario(loadScenario(`${ROOT}/scenarios/dma-bits-32.yaml`), GUEST_SOURCE);
    expect(report.exitStatus).toBe(0);
    expect(report.machine.ram).toEqual([
      { gpa: 0, size: 256 * 2 ** 20 },
      { gpa: 2 ** 32, size: 256 * 2 ** 20 },
    ]);
    expect(report.guest.workload!.disk!.verified).toBe(true);
    const pool = report.guest.dma.swiotlb!;
    expect(pool.start + pool.nslabs * 2048).toBeLessThanOrEqual(2 ** 32);
    expect(pool.used).toBe(0);
    for (const d of report.guest.dma.devices) expect(d.bounces).toBe(d.maps);
    expect(report.guest.dma.devices.every((d) => d.maps > 0)).toBe(true);
  });

  it('without ACCESS_PLATFORM the device is handed addresses above 4 GiB: it faults, needs a reset, and the guest hangs', async () => {
    const s = loadScenario(`${ROOT}/scenarios/dma-bits-32.yaml`);
    const devices = s.machine.devices.map((d) => ({ ...d, iommuPlatform: false }));
    const { report } = await runScenario({ ...s, machine: { ...s.machine, devices } }, GUEST_SOURCE);
    expect(report.exitStatus).toBe(2);
    expect(report.guest.kernel.panic).toMatch(/hung waiting for virtio0/);
    const host = report.host.devices[0]!;
    expect(host.errors[0]!.reason).toBe('UNREACHABLE_RING');
    expect(host.dma).toEqual({ readBytes: 0, writtenBytes: 0 });
    expect(report.guest.virtio[0]!.status.at(-1)!.names).toContain('DEVICE_NEEDS_RESET');
  });
});

describe('the arm virt preset with 4 CPUs', () => {
  it('boots from RAM at 1 GiB, signals MSI through the ITS doorbell, and runs queue interrupts on the CPU their vector targets', async () => {
    const { report, trace } = await run({
      machine: { preset: 'virt', ram: '512M', cpus: 4 },
      devices: [{ type: 'virtio-blk' }, { type: 'virtio-rng', transport: 'mmio' }],
      workload: { seed: 3, disk: { bytes: '256K', request_bytes: '16K', queue_depth: 8 } },
    });
    expect(report.exitStatus).toBe(0);
    expect(report.machine.ram[0]!.gpa).toBe(2 ** 30);
    expect(report.guest.workload!.disk!.verified).toBe(true);
    // MSI-X entry 0 (config) goes to CPU 0, entry 1 (the request queue) to CPU 1.
    const handled = trace.filter((e) => e.side === 'guest' && e.name === 'irq_handler_entry' && e.args?.['name'] === 'virtio0-1');
    expect(handled.length).toBeGreaterThan(0);
    expect(new Set(handled.map((e) => e.cpu))).toEqual(new Set([1]));
  });
});
