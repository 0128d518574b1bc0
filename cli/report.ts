// The readable summary of a run: devices found with their negotiation, what
// the workload moved and checked, interrupts and errors. The JSON report
// (--json) carries the same facts and more.
import type { GuestVirtioReport, StatusStep } from '../abi/report.ts';
import type { RunReport } from './run.ts';

/** Exact when the count is a whole number of units, else to two decimals: 4 KiB, 1.00 MiB, 300 bytes. */
export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB'];
  let u = 0;
  while (u < units.length - 1 && n >= 1024 ** (u + 1)) u++;
  const v = n / 1024 ** u;
  return `${Number.isInteger(v) ? v : v.toFixed(2)} ${units[u]}`;
}

/** Status writes as Linux drivers make them: each step names the bits it adds; a re-read that lost a bit says so. */
export function formatStatus(steps: readonly StatusStep[]): string {
  const out: string[] = [];
  let last = 0;
  for (const s of steps) {
    if (s.op === 'write') {
      if (s.value === 0) out.push('reset');
      else {
        const added = s.value & ~last;
        out.push(added ? names(added) : `rewrite ${names(s.value)}`);
      }
    } else if (s.value !== last && s.value !== 0) {
      out.push(`read back ${names(s.value)}${last & ~s.value ? ` (device dropped ${names(last & ~s.value)})` : ''}`);
    }
    last = s.value;
  }
  return out.join(' → ');
}

const STATUS_BITS: [number, string][] = [
  [1, 'ACKNOWLEDGE'],
  [2, 'DRIVER'],
  [8, 'FEATURES_OK'],
  [4, 'DRIVER_OK'],
  [0x40, 'DEVICE_NEEDS_RESET'],
  [0x80, 'FAILED'],
];
const names = (v: number) =>
  STATUS_BITS.filter(([b]) => v & b)
    .map(([, n]) => n)
    .join('|');

function deviceLines(v: GuestVirtioReport, r: RunReport): string[] {
  const host = r.host.devices.find((d) => d.location === v.busDevice);
  const bus = r.guest.busDevices.find((b) => b.name === v.busDevice);
  const lines = [
    `  ${v.busDevice}  ${v.deviceType} (virtio ID ${v.deviceId}) via ${v.transport}${bus ? `  [${bus.id}]` : ''}  driver ${v.driver ?? '(none)'}  DMA ${v.usesDmaApi ? `through the DMA API (${bus?.dmaBackend ?? '?'})` : 'with guest-physical addresses'}`,
    `    offered   ${v.offered}  ${v.offeredNames.join(' ')}`,
    `    accepted  ${v.accepted}  ${v.acceptedNames.join(' ') || '-'}`,
    `    status    ${formatStatus(v.status)}`,
  ];
  for (const q of v.queues) {
    lines.push(`    queue ${q.name}: ${q.size} entries, ${q.added} buffers, ${formatBytes(q.bytesOut)} out / ${formatBytes(q.bytesIn)} in, ${q.kicks} kicks (${q.kicksSuppressed} suppressed), ${q.interrupts} interrupts${q.broken ? ', BROKEN' : ''}`);
  }
  if (host) {
    lines.push(`    device    DMA read ${formatBytes(host.dma.readBytes)}, written ${formatBytes(host.dma.writtenBytes)}; interrupts raised: ${host.interrupts.used} used, ${host.interrupts.config} config`);
    for (const e of host.errors) lines.push(`    device error: ${e.reason}: ${e.detail}`);
    for (const e of host.refusedFeatures) lines.push(`    device refused FEATURES_OK: ${e.reason}`);
  }
  for (const e of v.errors) lines.push(`    driver error: ${e}`);
  return lines;
}

const counts = (o: Readonly<Record<string, number>>) =>
  Object.entries(o)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ') || 'none';

function iommuLines(r: RunReport): string[] {
  const v = r.host.iommu!;
  const c = v.config;
  const iommuDev = r.host.devices.find((d) => d.device === 'virtio-iommu');
  const lines = [
    `IOMMU  virtio-iommu at ${iommuDev?.location ?? '?'}, profile ${v.profile}`,
    `  config    page_size_mask ${c.pageSizeMask}, input range ${c.inputRange ? c.inputRange.join('-') : '(all 64 bits)'}, domains ${c.domainRange ? c.domainRange.join('-') : 'any'}, probe_size ${c.probeSize ?? '-'}, bypass ${c.bypass ?? '-'}`,
    `  requests  ${Object.entries(v.requests).map(([type, st]) => `${type} ${counts(st)}`).join('; ') || 'none'}`,
    `  faults    ${v.faults.reported} reported, ${v.faults.dropped} dropped (no event buffer), ${v.faults.unreported} not reported`,
  ];
  for (const e of v.endpoints) {
    const resv = e.reservedRegions.map((x) => `${x.start}-${x.end} ${x.type}`).join(', ') || 'none';
    lines.push(`  endpoint ${e.id} (${e.name}): ${e.translated ? `domain ${e.domain ?? '-'}` : 'ACCESS_PLATFORM not negotiated: guest-physical, untranslated'}; reserved ${resv}`);
    lines.push(`    ${e.mapped} mapped, ${e.unmapped} unmapped, IOVA ${e.lowestIova ?? '-'}..${e.highestIova ?? '-'}; ${e.translations} translations, ${e.msi} MSI, ${e.bypassed} bypassed, ${e.direct} direct; faults: ${counts(e.faults)}`);
    if (e.host) {
      lines.push(`    host IOMMU ${e.host.awBits} bits, usable ${e.host.usable.map((u) => `${u.start}-${u.end}`).join(', ')}: ${e.host.maps} maps, ${e.host.failures.length} failed`);
      for (const f of e.host.failures) lines.push(`      ${f.message}`);
    }
  }
  const g = r.guest.dma.iommu;
  if (g) {
    lines.push(`  guest     default domains ${g.defaultDomainType}, invalidation ${g.strict ? 'strict (iommu.strict=1)' : 'lazy (iommu.strict=0)'}`);
    for (const d of g.domains) {
      const fq = d.flushQueue ? `flush queue ${d.flushQueue.queues} x ${d.flushQueue.size} entries, ${d.flushQueue.timeoutNs / 1e6} ms timer, ${d.flushes} flushes` : `${d.iotlbSyncs} synchronous invalidations`;
      const e = d.exposure;
      lines.push(`    domain ${d.domain}: ${d.maps} maps, ${d.unmaps} unmaps, IOVA ${d.lowestIova ?? '-'}..${d.highestIova ?? '-'}, rcache ${d.iova.rcacheHits} hits / ${d.iova.rcacheMisses} misses; ${fq}`);
      if (d.invalidation === 'lazy') {
        lines.push(`      exposure: ${e.rangesExposed} unmapped ranges stayed reachable until invalidated, for up to ${(e.maxWindowNs / 1e3).toFixed(1)} µs (mean ${(e.meanWindowNs / 1e3).toFixed(1)} µs); at most ${e.maxStale} at once; ${e.staleNow} still reachable at power-off`);
      }
    }
  }
  for (const v of r.guest.viommus) {
    lines.push(`  driver    ${v.device}: requests ${Object.entries(v.requests).map(([type, st]) => `${type} ${counts(st)}`).join('; ') || 'none'}; faults ${counts(v.faults.byReason)}`);
  }
  return lines;
}

export function formatReport(r: RunReport): string {
  const g = r.guest;
  const out: string[] = [];
  out.push(`ivory run: ${r.scenario} on ${r.machine.preset} with ${formatBytes(r.machine.ramBytes)} RAM, ${r.machine.cpus} CPU${r.machine.cpus > 1 ? 's' : ''}`);
  out.push(`  cmdline "${r.cmdline}", seed ${r.seed}; exit status ${r.exitStatus} after ${(r.virtualTimeNs / 1e6).toFixed(3)} ms of virtual time`);
  out.push('', 'Devices found');
  for (const b of g.busDevices) out.push(`  ${b.bus.padEnd(8)} ${b.name.padEnd(22)} ${b.id.padEnd(12)} driver ${b.driver ?? '(none)'}`);
  out.push('', 'Virtio negotiation');
  for (const v of g.virtio) out.push(...deviceLines(v, r));
  if (g.virtio.length === 0) out.push('  (no virtio device was bound)');
  if (r.host.iommu) out.push('', ...iommuLines(r));
  const w = g.workload;
  out.push('', 'Workload');
  if (w?.disk) {
    const d = w.disk;
    out.push(`  disk     ${d.device}: wrote ${formatBytes(d.bytes)} pattern in ${d.requests / 2} requests of ${formatBytes(d.requestBytes)} (depth ${d.queueDepth}), read it back: ${d.verified ? 'every byte matches' : `${d.mismatchedBytes} bytes differ, ${d.failedRequests} requests failed`} (crc32 ${d.crc32})`);
  }
  if (w?.entropy) out.push(`  entropy  ${w.entropy.device}: ${formatBytes(w.entropy.bytes)} (crc32 ${w.entropy.crc32}, first bytes ${w.entropy.head})`);
  if (w?.dma) {
    const d = w.dma;
    const perOp = d.measuredOps > 0 ? `, ${(d.measuredVirtualNs / d.measuredOps).toFixed(0)} ns of virtual time per measured op` : '';
    out.push(`  dma      ${d.device}: stream ${d.stream}, ${d.ops} ops (${d.measuredOps} measured): ${d.maps} maps, ${d.unmaps} unmaps, ${d.failedMaps} failed maps${perOp}`);
  }
  if (g.kernel.panic) out.push('  (did not finish: the kernel panicked)');
  else if (!w?.disk && !w?.entropy && !w?.dma) out.push('  (none)');
  const t = g.dma.swiotlb;
  if (t) {
    out.push(`  swiotlb  pool at 0x${t.start.toString(16)}, ${t.nslabs} slots of 2 KiB: ${t.bounces} mappings bounced ${formatBytes(t.bytesBounced)}, high water ${t.hiwater} slots, ${t.used} in use`);
  }
  const bounced = g.dma.devices.filter((d) => d.bounces || d.mappingErrors);
  for (const d of bounced) out.push(`  dma      ${d.device}: ${d.maps} maps, ${d.bounces} bounced, ${d.mappingErrors} mapping errors`);
  out.push('', 'Interrupts taken');
  const irqs = Object.entries(g.interrupts.byHandler).filter(([, n]) => n > 0);
  out.push(`  ${irqs.map(([name, n]) => `${name} ${n}`).join(', ') || 'none'}${g.interrupts.spurious ? `; ${g.interrupts.spurious} spurious` : ''}`);
  out.push('', 'Errors');
  const errors = [...g.errors, ...(r.host.rejectedMsi ? [`${r.host.rejectedMsi} MSI writes rejected by the interrupt controller`] : [])];
  out.push(...(errors.length ? errors.map((e) => `  ${e}`) : ['  none']));
  return out.join('\n');
}
