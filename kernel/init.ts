// The init program: what the guest does once its devices are bound, as the
// workload in the initrd says. The disk part writes a seeded pattern with a
// number of requests in flight, reads it back and compares every byte; the
// entropy part reads the random device.
import { Xoshiro128 } from '../abi/prng.ts';
import { SECTOR_SIZE } from '../abi/virtio-blk.ts';
import type { DiskResult, DiskWorkload, DmaResult, EntropyResult, EntropyWorkload, InitResult, Workload } from '../abi/workload.ts';
import type { VirtioStack } from '../drivers/index.ts';
import type { BlkStatus, VirtioBlk } from '../drivers/virtio-blk.ts';
import { crc32 } from './crc32.ts';
import { runDmaWorkload } from './dma-workload.ts';
import type { Kernel } from './kernel.ts';
import { PAGE_SIZE } from './page-alloc.ts';

export function runInit(k: Kernel, stack: VirtioStack, w: Workload): InitResult {
  const errors: string[] = [];
  const out: { disk?: DiskResult; entropy?: EntropyResult; dma?: DmaResult } = {};
  k.cpus.runOn(0, () => {
    if (w.disk) {
      const blk = stack.blk()[0];
      if (!blk) errors.push('init: workload.disk: no virtio-blk device is bound');
      else out.disk = runDisk(k, blk, w.disk, w.seed, errors);
    }
    if (w.entropy) {
      const rng = stack.rng()[0];
      if (!rng) errors.push('init: workload.entropy: no virtio-rng device is bound');
      else out.entropy = runEntropy(rng, w.entropy);
    }
    if (w.dma) {
      const vdev = w.dma.device === 'virtio-blk' ? stack.blk()[0]?.vdev : stack.rng()[0]?.vdev;
      if (!vdev) errors.push(`init: workload.dma: no ${w.dma.device} device is bound`);
      else out.dma = runDmaWorkload(k, vdev.dmaDev, w.dma, w.seed);
    }
  });
  for (const e of errors) k.log.err(e);
  return { ok: errors.length === 0, ...out, errors };
}

/** The pattern of chunk `i`: its own seeded stream, so any chunk can be checked alone. */
function pattern(seed: number, i: number, buf: Uint8Array): void {
  new Xoshiro128((seed ^ Math.imul(i + 1, 0x9e3779b9)) >>> 0).fill(buf);
}

function runDisk(k: Kernel, blk: VirtioBlk, w: DiskWorkload, seed: number, errors: string[]): DiskResult {
  const name = blk.vdev.name;
  const capacityBytes = Number(blk.config.capacity) * SECTOR_SIZE;
  const bytes = Math.min(w.bytes, capacityBytes);
  if (bytes < w.bytes) errors.push(`init: ${name}: workload asks for ${w.bytes} bytes but the disk has ${capacityBytes}`);
  const chunks = Math.ceil(bytes / w.requestBytes);
  const depth = Math.max(1, Math.min(w.queueDepth, blk.freeRequests, chunks));
  const pages = Math.ceil(w.requestBytes / PAGE_SIZE);
  const bufs: number[] = [];
  for (let i = 0; i < depth; i++) {
    const gpa = k.pages.alloc(pages);
    if (gpa < 0) throw new Error(`init: out of memory for ${depth} disk buffers of ${w.requestBytes} bytes`);
    bufs.push(gpa);
  }
  const expect = new Uint8Array(w.requestBytes);
  let crc = 0;
  let mismatched = 0;
  let failed = 0;
  let requests = 0;

  const pass = (type: 'write' | 'read') => {
    const free = [...bufs];
    let next = 0;
    let inflight = 0;
    while (next < chunks || inflight > 0) {
      while (next < chunks && free.length > 0) {
        const i = next;
        const len = Math.min(w.requestBytes, bytes - i * w.requestBytes);
        const phys = free.pop()!;
        if (type === 'write') {
          const data = k.mem.bytes(phys, len);
          pattern(seed, i, data);
          crc = crc32(data, crc);
        }
        const done = (status: BlkStatus) => {
          inflight--;
          if (status !== 'OK') failed++;
          else if (type === 'read') mismatched += compare(k.mem.bytes(phys, len), seed, i, expect.subarray(0, len));
          free.push(phys);
        };
        const err = blk.submit({ type, sector: (i * w.requestBytes) / SECTOR_SIZE, phys, len, done });
        if (err === 'ENOSPC') {
          free.push(phys);
          break;
        }
        next++;
        requests++;
        if (err) {
          failed++;
          free.push(phys);
          errors.push(`init: ${name}: ${type} of chunk ${i} refused: ${err}`);
        } else inflight++;
      }
      if (inflight > 0) k.irqs.waitEvent(() => free.length > 0 && (next < chunks || inflight === 0), `${name} ${type}s`);
    }
  };
  pass('write');
  pass('read');
  for (const gpa of bufs) k.pages.freePagesAt(gpa, pages);
  if (failed) errors.push(`init: ${name}: ${failed} request(s) failed`);
  if (mismatched) errors.push(`init: ${name}: ${mismatched} byte(s) read back differ from what was written`);
  k.log.info(`init: ${name}: wrote and read back ${bytes} bytes in ${requests} requests, ${mismatched} bytes differ`);
  return {
    device: name,
    bytes,
    requestBytes: w.requestBytes,
    queueDepth: depth,
    requests,
    mismatchedBytes: mismatched,
    failedRequests: failed,
    verified: failed === 0 && mismatched === 0 && bytes === w.bytes,
    crc32: hex32(crc),
  };
}

function compare(got: Uint8Array, seed: number, i: number, expect: Uint8Array): number {
  pattern(seed, i, expect);
  let diff = 0;
  for (let j = 0; j < got.length; j++) if (got[j] !== expect[j]) diff++;
  return diff;
}

function runEntropy(rng: { vdev: { name: string }; read(bytes: number): Uint8Array }, w: EntropyWorkload): EntropyResult {
  let crc = 0;
  let got = 0;
  let head = '';
  while (got < w.bytes) {
    const chunk = rng.read(Math.min(w.requestBytes, w.bytes - got));
    if (chunk.length === 0) break;
    if (got === 0) head = Array.from(chunk.subarray(0, 16), (b) => b.toString(16).padStart(2, '0')).join('');
    crc = crc32(chunk, crc);
    got += chunk.length;
  }
  return { device: rng.vdev.name, bytes: got, crc32: hex32(crc), head };
}

const hex32 = (v: number) => '0x' + (v >>> 0).toString(16).padStart(8, '0');
