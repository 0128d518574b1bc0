import { describe, expect, it } from 'vitest';
import { run } from './support.ts';

const behind = (extra: object = {}, iommu: object = {}) => ({
  iommu,
  devices: [
    { type: 'virtio-blk', transport: 'pci', iommu_platform: true },
    { type: 'virtio-rng', transport: 'mmio', iommu_platform: true },
  ],
  workload: { seed: 11, disk: { bytes: '256K', request_bytes: '16K', queue_depth: 4 }, entropy: { bytes: 1024, request_bytes: 256 } },
  ...extra,
});

describe('DMA through the virtio-iommu', () => {
  it.each([
    ['strict', 'iommu.strict=1'],
    ['lazy', 'iommu.strict=0'],
  ])('keeps the disk data intact in %s mode, every byte translated', async (_mode, cmdline) => {
    const { report } = await run(behind({ cmdline }));
    expect(report.exitStatus).toBe(0);
    expect(report.guest.workload!.disk!.verified).toBe(true);
    const iommu = report.host.iommu!;
    for (const e of iommu.endpoints) {
      expect(e.translated).toBe(true);
      expect(e.domain).not.toBeNull();
      expect(e.translations).toBeGreaterThan(0);
      expect(e.direct).toBe(0);
      expect(e.faults).toEqual({ UNKNOWN: 0, DOMAIN: 0, MAPPING: 0 });
    }
    expect(iommu.requests['MAP']!['OK']).toBeGreaterThan(0);
    expect(Object.keys(iommu.requests['MAP']!)).toEqual(['OK']);
  });

  it('in lazy mode a range stays reachable until its UNMAP reaches the device, and the report counts exactly those', async () => {
    const { report } = await run(behind({ cmdline: 'iommu.strict=0' }));
    const domains = report.guest.dma.iommu!.domains;
    expect(domains.length).toBe(2);
    for (const d of domains) {
      const e = d.exposure;
      expect(d.invalidation).toBe('lazy');
      expect(d.flushes).toBe(0);
      expect(e.rangesExposed + e.staleNow).toBe(d.unmaps);
      // What the device removed is what the guest counts as no longer reachable.
      const ep = report.host.iommu!.endpoints.find((x) => String(x.domain) === d.domain)!;
      expect(ep.unmapped).toBe(e.rangesExposed);
      // Ended by the next MAP's sync, long before the flush queue's 1 s timer.
      expect(e.rangesExposed).toBeGreaterThan(0);
      expect(e.maxWindowNs).toBeGreaterThan(0);
      expect(e.maxWindowNs).toBeLessThan(1e6);
    }
  });

  it.each(['spec', 'qemu', 'cloud-hypervisor', 'crosvm'])('works against the %s profile', async (profile) => {
    const { report } = await run(behind({}, { profile }));
    expect(report.host.iommu!.profile).toBe(profile);
    expect(report.guest.errors).toEqual([]);
    expect(report.guest.workload!.disk!.verified).toBe(true);
    expect(report.exitStatus).toBe(0);
  });

  it('with iommu.passthrough=1 the endpoints get identity domains and the DMA API goes direct', async () => {
    const { report } = await run(behind({ cmdline: 'iommu.passthrough=1' }));
    expect(report.exitStatus).toBe(0);
    expect(report.guest.busDevices.filter((b) => b.driver === 'virtio-pci' || b.driver === 'virtio-mmio').map((b) => b.dmaBackend)).toContain('direct');
    const blk = report.host.iommu!.endpoints.find((e) => e.name === 'virtio-blk.0')!;
    expect(blk.translations).toBe(0);
    expect(blk.bypassed).toBeGreaterThan(0);
  });

  it('a device that did not negotiate ACCESS_PLATFORM reaches guest-physical memory directly, and the report says so', async () => {
    const doc = behind();
    doc.devices[0] = { type: 'virtio-blk', transport: 'pci', iommu_platform: false };
    const { report } = await run(doc);
    expect(report.exitStatus).toBe(0);
    const blk = report.host.iommu!.endpoints.find((e) => e.name === 'virtio-blk.0')!;
    expect(blk.translated).toBe(false);
    expect(blk.direct).toBeGreaterThan(0);
    expect(blk.translations).toBe(0);
    expect(report.guest.virtio.find((v) => v.deviceType === 'virtio-blk')!.usesDmaApi).toBe(false);
  });

  it('on arm virt the guest maps the ITS doorbell itself (software MSI) and interrupts arrive', async () => {
    const { report } = await run(behind({ machine: { preset: 'virt', ram: '512M', cpus: 2 } }));
    expect(report.exitStatus).toBe(0);
    const blk = report.host.iommu!.endpoints.find((e) => e.name === 'virtio-blk.0')!;
    expect(blk.reservedRegions).toEqual([]);
    expect(blk.msi).toBe(0); // nothing passes untranslated: the doorbell write is translated like DMA
    expect(blk.faults.MAPPING).toBe(0);
    expect(report.guest.interrupts.byHandler['virtio1-1']).toBeGreaterThan(0);
  });

  it('defers the endpoints until the IOMMU has probed, wherever they sit on the bus', async () => {
    const { report } = await run(behind());
    const names = report.guest.virtio.map((v) => v.deviceType);
    expect(names[0]).toBe('virtio-iommu');
    expect(report.guest.dmesg.join('\n')).not.toMatch(/deferred forever/);
  });
});

describe('an assigned endpoint whose host IOMMU has fewer bits than the guest uses (scenarios/assigned-aw-bits.yaml)', () => {
  it('fails on the host the way a real machine does, and works once the host ranges are probed as reserved', async () => {
    const { loadScenario } = await import('../../cli/scenario.ts');
    const { runScenario } = await import('../../cli/run.ts');
    const { GUEST_SOURCE, ROOT } = await import('./support.ts');
    const s = loadScenario(`${ROOT}/scenarios/assigned-aw-bits.yaml`);
    const bad = (await runScenario(s, GUEST_SOURCE)).report;
    const rng = bad.host.iommu!.endpoints.find((e) => e.name === 'virtio-rng.1')!;
    expect(rng.host!.failures.length).toBeGreaterThan(0);
    expect(rng.host!.failures[0]!.message).toMatch(/= -22 \(Invalid argument\)$/);
    expect(bad.host.iommu!.requests['MAP']!['RANGE']).toBe(rng.host!.failures.length);
    expect(bad.guest.errors.join('\n')).toMatch(/no virtio-rng device is bound/);
    expect(bad.exitStatus).toBe(1);

    const devices = s.machine.devices.map((d) => (d.hostIommu ? { ...d, hostIommu: { ...d.hostIommu, exposeReserved: true } } : d));
    const good = (await runScenario({ ...s, machine: { ...s.machine, devices } }, GUEST_SOURCE)).report;
    const ep = good.host.iommu!.endpoints.find((e) => e.name === 'virtio-rng.1')!;
    expect(ep.reservedRegions).toContainEqual({ start: '0x8000000000', end: '0xffffffffffffffff', type: 'reserved' });
    expect(ep.host!.failures).toEqual([]);
    expect(BigInt(ep.highestIova!)).toBeLessThan(1n << 39n);
    expect(good.exitStatus).toBe(0);
  });
});

describe('a 64-bit input range (aw_bits 64, as QEMU machines before 9.0)', () => {
  it('hands a virtio-mmio device IOVAs just below 2^64, carries them exactly through rings and buffers, and moves the data', async () => {
    const { report } = await run(behind({}, { aw_bits: 64 }));
    expect(report.exitStatus).toBe(0);
    expect(report.guest.workload!.entropy!.bytes).toBe(1024);
    const rng = report.host.iommu!.endpoints.find((e) => e.name === 'virtio-rng.1')!;
    expect(BigInt(rng.highestIova!)).toBeGreaterThan(2n ** 63n);
    expect(BigInt(rng.highestIova!)).toBeLessThanOrEqual(2n ** 64n - 1n);
    expect(rng.faults).toEqual({ UNKNOWN: 0, DOMAIN: 0, MAPPING: 0 });
    expect(report.host.iommu!.config.inputRange).toEqual(['0x0', '0xffffffffffffffff']);
    // The PCI disk still gets IOVAs below 4 GiB first (Linux's pci_32bit_workaround).
    const blk = report.host.iommu!.endpoints.find((e) => e.name === 'virtio-blk.0')!;
    expect(BigInt(blk.highestIova!)).toBeLessThan(2n ** 32n);
  });
});
