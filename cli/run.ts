// Runs a scenario: builds the machine, boots the guest image on it and
// gathers one versioned report from both worlds' accounts.
import type { GuestReport } from '../abi/report.ts';
import type { TraceEvent } from '../abi/trace.ts';
import { bootGuest, loadGuestImage } from '../platform/launcher.ts';
import { Machine } from '../platform/machine.ts';
import type { ViommuReport } from '../platform/iommu/virtio-iommu.ts';
import type { AttachedDevice } from '../platform/virtio/attach.ts';
import { UsageError } from './errors.ts';
import type { Scenario } from './scenario.ts';

export const REPORT_VERSION = 1;

export interface RunReport {
  readonly version: typeof REPORT_VERSION;
  readonly scenario: string;
  readonly machine: { readonly preset: string; readonly ramBytes: number; readonly cpus: number; readonly ram: readonly { gpa: number; size: number }[] };
  readonly cmdline: string;
  readonly seed: number;
  readonly exitStatus: number;
  readonly virtualTimeNs: number;
  readonly guest: Omit<GuestReport, 'trace'>;
  readonly host: {
    readonly devices: ReturnType<AttachedDevice['report']>[];
    readonly iommu: ViommuReport | null;
    readonly interruptsDelivered: Readonly<Record<string, number>>;
    readonly rejectedMsi: number;
    readonly unassignedMmio: number;
    readonly console: readonly string[];
  };
}

export interface RunResult {
  readonly report: RunReport;
  /** Both worlds' trace events, ordered by virtual time (guest first on ties). */
  readonly trace: readonly TraceEvent[];
  /** The machine after power-off, for a caller that inspects device state (tests, the matrix). */
  readonly machine: Machine;
}

export async function runScenario(s: Scenario, guestImage: string): Promise<RunResult> {
  let machine: Machine;
  try {
    machine = new Machine(s.machine);
  } catch (e) {
    throw new UsageError('devices', (e as Error).message);
  }
  const entry = await loadGuestImage(guestImage);
  const exit = bootGuest(machine, entry, s.cmdline, s.workload);
  const { trace: guestTrace, ...guest } = exit.report as GuestReport;
  const delivered: Record<string, number> = {};
  for (const [v, n] of [...machine.irq.delivered].sort((a, b) => a[0] - b[0])) delivered[`0x${v.toString(16)}`] = n;
  return {
    report: {
      version: REPORT_VERSION,
      scenario: s.name,
      machine: { preset: s.machine.preset, ramBytes: s.machine.ramBytes, cpus: s.machine.cpus, ram: machine.mem.regions.map((r) => ({ gpa: r.gpa, size: r.size })) },
      cmdline: s.cmdline,
      seed: s.workload.seed,
      exitStatus: exit.status,
      virtualTimeNs: machine.events.now,
      guest,
      host: {
        devices: machine.devices.map((d) => d.report()),
        iommu: machine.iommu?.iommuReport() ?? null,
        interruptsDelivered: delivered,
        rejectedMsi: machine.irq.badMsi,
        unassignedMmio: machine.bus.unassigned,
        console: machine.console,
      },
    },
    trace: mergeTraces(guestTrace, machine.trace.events),
    machine,
  };
}

function mergeTraces(guest: readonly TraceEvent[], host: readonly TraceEvent[]): TraceEvent[] {
  const out: TraceEvent[] = [];
  let g = 0;
  let h = 0;
  while (g < guest.length || h < host.length) {
    if (h >= host.length || (g < guest.length && guest[g]!.ts <= host[h]!.ts)) out.push(guest[g++]!);
    else out.push(host[h++]!);
  }
  return out;
}
