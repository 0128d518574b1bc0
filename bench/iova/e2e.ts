// The IOVA workloads end to end (issue 4, part 4): the same operation streams
// replayed by the guest through the DMA API, iommu-dma and the virtio-iommu
// driver to the device model (workload.dma, kernel/dma-workload.ts), so the
// allocator's own cost (from the allocator-only runs) can be set against the
// whole map/unmap path and the device round trip it pays for.
//
// Each cell boots the default q35 machine with a virtio-iommu and one
// virtio-blk behind it, twice: once with the stream and once with a single
// measured op; the difference in wall time over the difference in ops is the
// simulator's cost per op (boot and build-up cancel out). The modelled cost,
// virtual ns per op, comes from the guest itself.
import { runScenario } from '../../cli/run.ts';
import { parseScenario } from '../../cli/scenario.ts';
import { guestImage } from '../guest.ts';

export interface E2eRow {
  readonly strategy: string;
  readonly workload: string;
  readonly invalidation: 'strict' | 'lazy';
  /** Measured ops (maps and unmaps). */
  readonly ops: number;
  /** The simulator's wall-clock cost of one op through the whole stack. */
  readonly wall_ns_per_op: number;
  /** The modelled guest's cost of one op: virtual time, mostly the virtio-iommu round trips. */
  readonly virtual_ns_per_op: number;
  readonly failed_maps: number;
  /** MAP and UNMAP requests the device completed. */
  readonly map_requests: number;
  readonly unmap_requests: number;
}

export interface E2eCell {
  readonly strategy: string;
  readonly workload: string;
  readonly ops: number;
  readonly seed: number;
  readonly strict: boolean;
}

async function boot(cell: E2eCell, ops: number) {
  const doc = {
    name: `iova e2e ${cell.strategy} ${cell.workload}`,
    machine: { preset: 'q35', ram: '512M' },
    iommu: {},
    cmdline: `iova=${cell.strategy} iommu.strict=${cell.strict ? 1 : 0} trace=0`,
    devices: [{ type: 'virtio-blk', capacity: '1M', iommu_platform: true }],
    workload: { seed: cell.seed, dma: { stream: cell.workload, ops } },
  };
  const scenario = parseScenario(doc);
  const t0 = process.hrtime.bigint();
  const { report, machine } = await runScenario(scenario, guestImage());
  const wallNs = Number(process.hrtime.bigint() - t0);
  machine.trace.enabled = false;
  const dma = report.guest.workload?.dma;
  if (!dma || !report.guest.workload?.ok) throw new Error(`${doc.name}: the guest did not finish its workload: ${report.guest.workload?.errors.join('; ')}`);
  return { wallNs, dma, requests: report.host.iommu?.requests ?? {} };
}

const sum = (byStatus: Record<string, number> | undefined) => Object.values(byStatus ?? {}).reduce((a, b) => a + b, 0);

export async function runE2eCell(cell: E2eCell): Promise<E2eRow> {
  await boot(cell, cell.ops); // warm-up: the guest image, and the JIT on this very stream
  const base = await boot(cell, 1);
  const full = await boot(cell, cell.ops);
  const ops = full.dma.measuredOps - base.dma.measuredOps;
  return {
    strategy: cell.strategy,
    workload: cell.workload,
    invalidation: cell.strict ? 'strict' : 'lazy',
    ops: full.dma.measuredOps,
    wall_ns_per_op: Math.round(Math.max(0, full.wallNs - base.wallNs) / Math.max(1, ops)),
    virtual_ns_per_op: Math.round(full.dma.measuredVirtualNs / Math.max(1, full.dma.measuredOps)),
    failed_maps: full.dma.failedMaps,
    map_requests: sum(full.requests['MAP']),
    unmap_requests: sum(full.requests['UNMAP']),
  };
}
