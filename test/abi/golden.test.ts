// Golden byte vectors for every wire structure in abi/. The expected bytes are
// written by hand from the specifications (virtio 1.4 §2.7, §4.1, §4.2.2, §5.2, §5.13;
// PCI Local Bus 3.0 §6.1, §6.8.2), never produced by encode; each field gets a
// distinct value so that a moved or resized field shows.
import { readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DMA_MAPPING_ERROR, addAddr, fromHiLo, hexAddr, hi32, lo32, toAddr, toBig } from '../../abi/addr.ts';
import type { Fields, WireStruct } from '../../abi/layout.ts';
import { MSIX_BIR_MASK, MsixCap, MsixEntry, PCI_CFG, PciHeader, pciBarOffset } from '../../abi/pci.ts';
import { VirtqAvailHeader, VirtqDesc, VirtqUsedElem, VirtqUsedHeader, splitRing } from '../../abi/ring.ts';
import { VirtioBlkConfig, VirtioBlkReqHeader } from '../../abi/virtio-blk.ts';
import {
  VirtioIommuConfig,
  VirtioIommuFault,
  VirtioIommuProbeProperty,
  VirtioIommuProbeResvMem,
  VirtioIommuReqAttach,
  VirtioIommuReqDetach,
  VirtioIommuReqHead,
  VirtioIommuReqMap,
  VirtioIommuReqProbe,
  VirtioIommuReqTail,
  VirtioIommuReqUnmap,
} from '../../abi/virtio-iommu.ts';
import { MMIO, VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_MAGIC, VirtioMmioRegs } from '../../abi/virtio-mmio.ts';
import { COMMON, VirtioPciCap, VirtioPciCommonCfg, VirtioPciNotifyCap } from '../../abi/virtio-pci.ts';

/** Hex words written by hand, spaces between them for the reader. */
const hex = (...words: string[]): Uint8Array =>
  Uint8Array.from(words.join('').replace(/\s+/g, '').match(/../g)!.map((b) => parseInt(b, 16)));

interface Golden {
  /** any: one table holds structs of every field type; golden() checks each value against its struct. */
  readonly struct: WireStruct<any>;
  readonly value: Fields;
  readonly bytes: Uint8Array;
}

const golden = <T extends Fields>(struct: WireStruct<T>, value: T, bytes: Uint8Array): Golden => ({ struct, value, bytes });

/** virtio 1.4 §4.2.2 / reference §5.1: every virtio-mmio register and its offset. */
const MMIO_SPEC: Record<string, number> = {
  magic: 0x000,
  version: 0x004,
  device_id: 0x008,
  vendor_id: 0x00c,
  device_features: 0x010,
  device_features_sel: 0x014,
  driver_features: 0x020,
  driver_features_sel: 0x024,
  queue_sel: 0x030,
  queue_num_max: 0x034,
  queue_num: 0x038,
  queue_ready: 0x044,
  queue_notify: 0x050,
  interrupt_status: 0x060,
  interrupt_ack: 0x064,
  status: 0x070,
  queue_desc_low: 0x080,
  queue_desc_high: 0x084,
  queue_driver_low: 0x090,
  queue_driver_high: 0x094,
  queue_device_low: 0x0a0,
  queue_device_high: 0x0a4,
  shm_sel: 0x0ac,
  shm_len_low: 0x0b0,
  shm_len_high: 0x0b4,
  shm_base_low: 0x0b8,
  shm_base_high: 0x0bc,
  queue_reset: 0x0c0,
  config_generation: 0x0fc,
};

/** virtio 1.4 §4.1.4.3 / reference §5.2: struct virtio_pci_common_cfg. */
const COMMON_SPEC: Record<string, number> = {
  device_feature_select: 0,
  device_feature: 4,
  driver_feature_select: 8,
  driver_feature: 12,
  config_msix_vector: 16,
  num_queues: 18,
  device_status: 20,
  config_generation: 21,
  queue_select: 22,
  queue_size: 24,
  queue_msix_vector: 26,
  queue_enable: 28,
  queue_notify_off: 30,
  queue_desc_lo: 32,
  queue_desc_hi: 36,
  queue_driver_lo: 40,
  queue_driver_hi: 44,
  queue_device_lo: 48,
  queue_device_hi: 52,
  queue_notif_config_data: 56,
  queue_reset: 58,
  admin_queue_index: 60,
  admin_queue_num: 62,
};

/** PCI Local Bus 3.0 §6.1: the type 0 configuration header. */
const PCI_SPEC: Record<string, number> = {
  vendor_id: 0x00,
  device_id: 0x02,
  command: 0x04,
  status: 0x06,
  revision: 0x08,
  prog_if: 0x09,
  subclass: 0x0a,
  class_code: 0x0b,
  cache_line_size: 0x0c,
  latency_timer: 0x0d,
  header_type: 0x0e,
  bist: 0x0f,
  bar0: 0x10,
  bar1: 0x14,
  bar2: 0x18,
  bar3: 0x1c,
  bar4: 0x20,
  bar5: 0x24,
  cardbus_cis: 0x28,
  subsystem_vendor_id: 0x2c,
  subsystem_id: 0x2e,
  rom_base: 0x30,
  cap_ptr: 0x34,
  interrupt_line: 0x3c,
  interrupt_pin: 0x3d,
  min_gnt: 0x3e,
  max_lat: 0x3f,
};

const VECTORS: readonly Golden[] = [
  golden(
    VirtqDesc,
    { addr: 0x0807060504030201n, len: 0x0c0b0a09, flags: 0x0e0d, next: 0x100f },
    hex('0102030405060708', '090a0b0c', '0d0e', '0f10'),
  ),
  // An address above 2^53 keeps every bit.
  golden(VirtqDesc, { addr: 0xffff_ffff_ffff_f000n, len: 0x1000, flags: 3, next: 1 }, hex('00f0ffffffffffff', '00100000', '0300', '0100')),
  golden(VirtqAvailHeader, { flags: 0x0001, idx: 0xabcd }, hex('0100', 'cdab')),
  golden(VirtqUsedElem, { id: 0x11223344, len: 0x55667788 }, hex('44332211', '88776655')),
  golden(VirtqUsedHeader, { flags: 0x0001, idx: 0x1234 }, hex('0100', '3412')),
  golden(
    VirtioMmioRegs,
    // Each register holds 0x5a000000 | its own offset, so a misplaced one names itself.
    Object.fromEntries(Object.entries(MMIO_SPEC).map(([name, off]) => [name, 0x5a00_0000 | off])),
    hex(
      '0000005a 0400005a 0800005a 0c00005a', // 0x00 magic, version, device_id, vendor_id
      '1000005a 1400005a 00000000 00000000', // 0x10 device_features, device_features_sel
      '2000005a 2400005a 00000000 00000000', // 0x20 driver_features, driver_features_sel
      '3000005a 3400005a 3800005a 00000000', // 0x30 queue_sel, queue_num_max, queue_num
      '00000000 4400005a 00000000 00000000', // 0x40 queue_ready
      '5000005a 00000000 00000000 00000000', // 0x50 queue_notify
      '6000005a 6400005a 00000000 00000000', // 0x60 interrupt_status, interrupt_ack
      '7000005a 00000000 00000000 00000000', // 0x70 status
      '8000005a 8400005a 00000000 00000000', // 0x80 queue_desc low/high
      '9000005a 9400005a 00000000 00000000', // 0x90 queue_driver low/high
      'a000005a a400005a 00000000 ac00005a', // 0xa0 queue_device low/high, shm_sel
      'b000005a b400005a b800005a bc00005a', // 0xb0 shm_len low/high, shm_base low/high
      'c000005a 00000000 00000000 00000000', // 0xc0 queue_reset
      '00000000 00000000 00000000 00000000', // 0xd0
      '00000000 00000000 00000000 00000000', // 0xe0
      '00000000 00000000 00000000 fc00005a', // 0xf0 config_generation
    ),
  ),
  golden(
    VirtioPciCap,
    { cap_vndr: 0x09, cap_next: 0x50, cap_len: 0x10, cfg_type: 0x01, bar: 0x04, id: 0x02, offset: 0x12345678, length: 0x9abcdef0 },
    hex('09', '50', '10', '01', '04', '02', '0000', '78563412', 'f0debc9a'),
  ),
  golden(
    VirtioPciNotifyCap,
    { cap_vndr: 0x09, cap_next: 0x64, cap_len: 0x14, cfg_type: 0x02, bar: 0x04, id: 0x03, offset: 0x00003000, length: 0x00001000, notify_off_multiplier: 0x11223344 },
    hex('09', '64', '14', '02', '04', '03', '0000', '00300000', '00100000', '44332211'),
  ),
  golden(
    VirtioPciCommonCfg,
    {
      device_feature_select: 0x01020304,
      device_feature: 0x05060708,
      driver_feature_select: 0x090a0b0c,
      driver_feature: 0x0d0e0f10,
      config_msix_vector: 0x1112,
      num_queues: 0x1314,
      device_status: 0x15,
      config_generation: 0x16,
      queue_select: 0x1718,
      queue_size: 0x191a,
      queue_msix_vector: 0x1b1c,
      queue_enable: 0x1d1e,
      queue_notify_off: 0x1f20,
      queue_desc_lo: 0x21222324,
      queue_desc_hi: 0x25262728,
      queue_driver_lo: 0x292a2b2c,
      queue_driver_hi: 0x2d2e2f30,
      queue_device_lo: 0x31323334,
      queue_device_hi: 0x35363738,
      queue_notif_config_data: 0x393a,
      queue_reset: 0x3b3c,
      admin_queue_index: 0x3d3e,
      admin_queue_num: 0x3f40,
    },
    hex(
      '04030201 08070605 0c0b0a09 100f0e0d', // 0  feature selects and words
      '1211 1413 15 16 1817 1a19 1c1b 1e1d 201f', // 16 msix, num_queues, status, generation, queue_*
      '24232221 28272625', // 32 queue_desc lo/hi
      '2c2b2a29 302f2e2d', // 40 queue_driver lo/hi
      '34333231 38373635', // 48 queue_device lo/hi
      '3a39 3c3b 3e3d 403f', // 56 notif_config_data, queue_reset, admin_queue_index, admin_queue_num
    ),
  ),
  golden(
    PciHeader,
    {
      vendor_id: 0x1af4,
      device_id: 0x1042,
      command: 0x0406,
      status: 0x0010,
      revision: 0x01,
      prog_if: 0x02,
      subclass: 0x03,
      class_code: 0x04,
      cache_line_size: 0x05,
      latency_timer: 0x06,
      header_type: 0x07,
      bist: 0x08,
      bar0: 0xa0a1a2a3,
      bar1: 0xb0b1b2b3,
      bar2: 0xc0c1c2c3,
      bar3: 0xd0d1d2d3,
      bar4: 0xe0e1e2e3,
      bar5: 0xf0f1f2f3,
      cardbus_cis: 0x90919293,
      subsystem_vendor_id: 0x1af4,
      subsystem_id: 0x0002,
      rom_base: 0x80818283,
      cap_ptr: 0x98,
      interrupt_line: 0x0b,
      interrupt_pin: 0x01,
      min_gnt: 0x0c,
      max_lat: 0x0d,
    },
    hex(
      'f41a 4210 0604 1000 01 02 03 04 05 06 07 08', // 0x00 ids, command, status, class, bist
      'a3a2a1a0 b3b2b1b0 c3c2c1c0 d3d2d1d0', // 0x10 bar0-3
      'e3e2e1e0 f3f2f1f0 93929190 f41a 0200', // 0x20 bar4-5, cardbus, subsystem
      '83828180 98 000000000000 00 0b 01 0c 0d', // 0x30 rom, cap_ptr, reserved, interrupt, gnt, lat
    ),
  ),
  golden(MsixCap, { cap_id: 0x11, cap_next: 0x84, msg_ctrl: 0x8003, table: 0x00002001, pba: 0x00003802 }, hex('11', '84', '0380', '01200000', '02380000')),
  golden(MsixEntry, { addr_lo: 0xfee01000, addr_hi: 0x00000002, data: 0x00004041, vector_ctrl: 0x00000001 }, hex('0010e0fe', '02000000', '41400000', '01000000')),
  golden(
    VirtioBlkConfig,
    {
      capacity: 0x1122334455667788n,
      size_max: 0x0a0b0c0d,
      seg_max: 0x1a1b1c1d,
      cylinders: 0x2a2b,
      heads: 0x2c,
      sectors: 0x2d,
      blk_size: 0x00000200,
      physical_block_exp: 0x03,
      alignment_offset: 0x04,
      min_io_size: 0x3a3b,
      opt_io_size: 0x4a4b4c4d,
      writeback: 0x01,
      num_queues: 0x0004,
      max_discard_sectors: 0x5a5b5c5d,
      max_discard_seg: 0x6a6b6c6d,
      discard_sector_alignment: 0x7a7b7c7d,
      max_write_zeroes_sectors: 0x8a8b8c8d,
      max_write_zeroes_seg: 0x9a9b9c9d,
      write_zeroes_may_unmap: 0x01,
    },
    hex(
      '8877665544332211', // 0  capacity
      '0d0c0b0a 1d1c1b1a', // 8  size_max, seg_max
      '2b2a 2c 2d', // 16 geometry: cylinders, heads, sectors
      '00020000', // 20 blk_size
      '03 04 3b3a 4d4c4b4a', // 24 topology: physical_block_exp, alignment_offset, min_io_size, opt_io_size
      '01 00 0400', // 32 writeback, unused0, num_queues
      '5d5c5b5a 6d6c6b6a 7d7c7b7a', // 36 max_discard_sectors, max_discard_seg, discard_sector_alignment
      '8d8c8b8a 9d9c9b9a', // 48 max_write_zeroes_sectors, max_write_zeroes_seg
      '01 000000', // 56 write_zeroes_may_unmap, unused1
    ),
  ),
  golden(VirtioBlkReqHeader, { type: 0x00000001, reserved: 0, sector: 0x8877665544332211n }, hex('01000000', '00000000', '1122334455667788')),
  // virtio-iommu (§5.13.4, §5.13.6): every request with its tail, the config, a probe property, a fault.
  golden(
    VirtioIommuConfig,
    {
      page_size_mask: 0x0807060504030201n,
      input_start: 0x1817161514131211n,
      input_end: 0x2827262524232221n,
      domain_start: 0x3a3b3c3d,
      domain_end: 0x4a4b4c4d,
      probe_size: 0x00000200,
      bypass: 0x01,
    },
    hex(
      '0102030405060708', // 0  page_size_mask
      '1112131415161718 2122232425262728', // 8  input_range start, end
      '3d3c3b3a 4d4c4b4a', // 24 domain_range start, end
      '00020000', // 32 probe_size
      '01 000000', // 36 bypass, reserved
    ),
  ),
  golden(VirtioIommuReqHead, { type: 0x05 }, hex('05 000000')),
  golden(VirtioIommuReqTail, { status: 0x06 }, hex('06 000000')),
  golden(
    VirtioIommuReqAttach,
    { type: 0x01, domain: 0x11223344, endpoint: 0x55667788, flags: 0x00000001, status: 0x04 },
    hex('01 000000', '44332211', '88776655', '01000000', '00000000', '04 000000'), // head, domain, endpoint, flags, reserved, tail
  ),
  golden(
    VirtioIommuReqDetach,
    { type: 0x02, domain: 0x0a0b0c0d, endpoint: 0x00000008, status: 0x06 },
    hex('02 000000', '0d0c0b0a', '08000000', '0000000000000000', '06 000000'), // head, domain, endpoint, reserved[8], tail
  ),
  // The last page of the 64-bit space: every bit of virt_end set.
  golden(
    VirtioIommuReqMap,
    { type: 0x03, domain: 0x00000001, virt_start: 0xffff_ffff_ffff_f000n, virt_end: 0xffff_ffff_ffff_ffffn, phys_start: 0x0000_0000_000a_1000n, flags: 0x00000003, status: 0x00 },
    hex('03 000000', '01000000', '00f0ffffffffffff', 'ffffffffffffffff', '00100a0000000000', '03000000', '00 000000'),
  ),
  // 2^53 and just above it: no rounding.
  golden(
    VirtioIommuReqUnmap,
    { type: 0x04, domain: 0x00000002, virt_start: 0x0020_0000_0000_0000n, virt_end: 0x0020_0000_0000_0fffn, status: 0x05 },
    hex('04 000000', '02000000', '0000000000002000', 'ff0f000000002000', '00000000', '05 000000'), // head, domain, virt_start, virt_end, reserved, tail
  ),
  golden(
    VirtioIommuReqProbe,
    { type: 0x05, endpoint: 0x00000100 },
    hex('05 000000', '00010000', '00'.repeat(64)), // head, endpoint, reserved[64]; properties and tail are device-writable
  ),
  golden(VirtioIommuProbeProperty, { type: 0x0001, length: 0x0014 }, hex('0100', '1400')),
  golden(
    VirtioIommuProbeResvMem,
    { type: 0x0001, length: 0x0014, subtype: 0x01, start: 0xfee0_0000n, end: 0xfeef_ffffn },
    hex('0100', '1400', '01', '000000', '0000e0fe00000000', 'ffffeffe00000000'), // RESV_MEM, length 20, MSI, reserved, start, end
  ),
  golden(
    VirtioIommuFault,
    { reason: 0x02, flags: 0x00000103, endpoint: 0x00000008, address: 0x0000_0dea_dbee_f000n },
    hex('02 000000', '03010000', '08000000', '00000000', '00f0eedbea0d0000'), // reason, reserved, flags, endpoint, reserved1, address
  ),
];

describe('golden byte vectors', () => {
  it.each(VECTORS.map((g) => [g.struct.name, g] as const))('%s encodes to the spec bytes and decodes back', (_name, g) => {
    expect(g.struct.span).toBe(g.bytes.length);
    expect(g.struct.encode(g.value)).toEqual(g.bytes);
    const decoded = g.struct.decode(g.bytes);
    expect(decoded).toMatchObject(g.value);
    // Whatever the value left out is reserved, and reads back as zeros.
    for (const [name, v] of Object.entries(decoded)) {
      if (!(name in g.value)) expect([name, [...(v as Uint8Array)].every((b) => b === 0)]).toEqual([name, true]);
    }
  });

  it('cover every structure abi/ defines', async () => {
    const dir = resolve(dirname(fileURLToPath(import.meta.url)), '../../abi');
    const defined = new Set<string>();
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
      const mod = (await import(join(dir, file))) as Record<string, unknown>;
      for (const v of Object.values(mod)) {
        if (v && typeof v === 'object' && 'layout' in v && 'encode' in v && 'span' in v) defined.add((v as WireStruct<Fields>).name);
      }
    }
    expect([...defined].sort()).toEqual([...new Set(VECTORS.map((g) => g.struct.name))].sort());
  });
});

describe('field offsets as the specifications table them', () => {
  it('virtio-mmio: every register, a 0x100-byte block, config right after', () => {
    expect(VirtioMmioRegs.span).toBe(0x100);
    expect(VIRTIO_MMIO_CONFIG).toBe(0x100);
    expect(Object.fromEntries(Object.entries(MMIO).filter(([n]) => !n.startsWith('reserved')))).toEqual(MMIO_SPEC);
    expect(new TextDecoder().decode(hex('76697274'))).toBe('virt');
    expect(VirtioMmioRegs.encode({ magic: VIRTIO_MMIO_MAGIC }).subarray(0, 4)).toEqual(hex('76697274'));
  });

  it('virtio-pci common configuration: 64 bytes', () => {
    expect(VirtioPciCommonCfg.span).toBe(64);
    expect({ ...COMMON }).toEqual(COMMON_SPEC);
  });

  it('virtio-pci capabilities: 16 bytes, 20 with notify_off_multiplier at 16', () => {
    expect(VirtioPciCap.span).toBe(16);
    expect(VirtioPciNotifyCap.span).toBe(20);
    expect(VirtioPciCap.off).toMatchObject({ cap_vndr: 0, cap_next: 1, cap_len: 2, cfg_type: 3, bar: 4, id: 5, offset: 8, length: 12 });
    expect(VirtioPciNotifyCap.off.notify_off_multiplier).toBe(16);
  });

  it('PCI type 0 header: 64 bytes, MSI-X capability 12, MSI-X table entry 16', () => {
    expect(PciHeader.span).toBe(64);
    expect(Object.fromEntries(Object.entries(PCI_CFG).filter(([n]) => n !== 'reserved'))).toEqual(PCI_SPEC);
    expect(pciBarOffset(5)).toBe(0x24);
    expect(MsixCap.span).toBe(12);
    expect({ ...MsixCap.off }).toEqual({ cap_id: 0, cap_next: 1, msg_ctrl: 2, table: 4, pba: 8 });
    expect(MsixEntry.span).toBe(16);
    expect({ ...MsixEntry.off }).toEqual({ addr_lo: 0, addr_hi: 4, data: 8, vector_ctrl: 12 });
    expect(MSIX_BIR_MASK).toBe(0x7);
  });

  it('virtio-blk: request header 16 bytes, sector at 8', () => {
    expect(VirtioBlkReqHeader.span).toBe(16);
    expect({ ...VirtioBlkReqHeader.off }).toEqual({ type: 0, reserved: 4, sector: 8 });
    expect(VirtioBlkConfig.off).toMatchObject({ capacity: 0, blk_size: 20, num_queues: 34, write_zeroes_may_unmap: 56 });
  });

  it('virtio-iommu: config 40 bytes, requests 24/24/40/32 with their tails, PROBE 72 readable, RESV_MEM and fault 24', () => {
    expect([VirtioIommuConfig, VirtioIommuReqAttach, VirtioIommuReqDetach, VirtioIommuReqMap, VirtioIommuReqUnmap, VirtioIommuReqProbe].map((s) => s.span)).toEqual([40, 24, 24, 40, 32, 72]);
    expect([VirtioIommuProbeProperty.span, VirtioIommuProbeResvMem.span, VirtioIommuFault.span]).toEqual([4, 24, 24]);
    expect({ ...VirtioIommuConfig.off }).toMatchObject({ page_size_mask: 0, input_start: 8, input_end: 16, domain_start: 24, domain_end: 28, probe_size: 32, bypass: 36 });
    expect(VirtioIommuReqAttach.off).toMatchObject({ domain: 4, endpoint: 8, flags: 12, reserved: 16, status: 20 });
    expect(VirtioIommuReqDetach.off).toMatchObject({ domain: 4, endpoint: 8, reserved: 12, status: 20 });
    expect(VirtioIommuReqMap.off).toMatchObject({ domain: 4, virt_start: 8, virt_end: 16, phys_start: 24, flags: 32, status: 36 });
    expect(VirtioIommuReqUnmap.off).toMatchObject({ domain: 4, virt_start: 8, virt_end: 16, reserved: 24, status: 28 });
    expect(VirtioIommuReqProbe.off).toMatchObject({ endpoint: 4, reserved: 8 });
    expect(VirtioIommuProbeResvMem.off).toMatchObject({ type: 0, length: 2, subtype: 4, start: 8, end: 16 });
    expect(VirtioIommuFault.off).toMatchObject({ reason: 0, flags: 4, endpoint: 8, reserved1: 12, address: 16 });
  });

  it('split ring: 16-byte descriptors, avail 6 + 2N, used 6 + 8N, event fields at the ends', () => {
    expect(VirtqDesc.span).toBe(16);
    expect(splitRing.descBytes(256)).toBe(4096);
    expect(splitRing.availBytes(256)).toBe(6 + 2 * 256);
    expect(splitRing.usedBytes(256)).toBe(6 + 8 * 256);
    expect([splitRing.availRing(3), splitRing.usedEvent(256)]).toEqual([4 + 6, 4 + 512]);
    expect([splitRing.usedRing(3), splitRing.availEvent(256)]).toEqual([4 + 24, 4 + 2048]);
  });
});

describe('64-bit addresses (abi/addr.ts), exact at the edges', () => {
  const MAX_SAFE = 2 ** 53 - 1;

  it('joins and splits hi/lo halves with no rounding', () => {
    expect([fromHiLo(0, 0), fromHiLo(0, 0xffff_ffff), fromHiLo(1, 0)]).toEqual([0, 0xffff_ffff, 2 ** 32]);
    expect(fromHiLo(0x001f_ffff, 0xffff_ffff)).toBe(MAX_SAFE);
    expect(fromHiLo(0x0020_0000, 0)).toBe(2n ** 53n);
    expect(fromHiLo(0x0020_0000, 1)).toBe(2n ** 53n + 1n);
    expect(fromHiLo(0xffff_ffff, 0xffff_ffff)).toBe(2n ** 64n - 1n);
    for (const a of [MAX_SAFE, 2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n, 0x1_2345_6789]) {
      expect(toBig(fromHiLo(hi32(a), lo32(a)))).toBe(toBig(a));
    }
    expect([hi32(MAX_SAFE), lo32(MAX_SAFE)]).toEqual([0x001f_ffff, 0xffff_ffff]);
    expect([hi32(2n ** 64n - 1n), lo32(2n ** 64n - 1n)]).toEqual([0xffff_ffff, 0xffff_ffff]);
  });

  it('keeps an Addr a number exactly when it is below 2^53', () => {
    expect(toAddr(2n ** 53n - 1n)).toBe(MAX_SAFE);
    expect(toAddr(2n ** 53n)).toBe(2n ** 53n);
    expect(toAddr(2n ** 64n - 1n)).toBe(2n ** 64n - 1n);
    expect(toAddr(-1n)).toBe(2n ** 64n - 1n); // a u64, as on the wire
    expect(toAddr(0x1000)).toBe(0x1000);
  });

  it('adds across 2^53 without rounding, and back', () => {
    expect(addAddr(MAX_SAFE - 1, 1)).toBe(MAX_SAFE);
    expect(addAddr(MAX_SAFE, 1)).toBe(2n ** 53n);
    expect(addAddr(MAX_SAFE, 2)).toBe(2n ** 53n + 1n); // a double would give 2^53 + 2
    expect(addAddr(2n ** 53n, -1)).toBe(MAX_SAFE);
    expect(addAddr(2n ** 64n - 2n, 1)).toBe(2n ** 64n - 1n);
    expect(addAddr(2n ** 64n - 1n, 1)).toBe(0); // u64 arithmetic wraps
  });

  it('DMA_MAPPING_ERROR is all ones, printed in full', () => {
    expect(DMA_MAPPING_ERROR).toBe(2n ** 64n - 1n);
    expect(hexAddr(DMA_MAPPING_ERROR)).toBe('0xffffffffffffffff');
    expect(hexAddr(MAX_SAFE)).toBe('0x1fffffffffffff');
  });
});
