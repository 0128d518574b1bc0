// Chrome Trace Event JSON for Perfetto: one process per world, one track per
// guest CPU and one for the device models, instant events on the virtual
// clock (ts in microseconds, fractional).
import type { TraceEvent } from '../abi/trace.ts';

const GUEST_PID = 1;
const HOST_PID = 2;

export function toChromeTrace(events: readonly TraceEvent[]): object {
  const cpus = new Set<number>();
  const out: object[] = [];
  for (const e of events) {
    const guest = e.side === 'guest';
    const tid = guest ? (e.cpu ?? 0) : 0;
    if (guest) cpus.add(tid);
    out.push({ name: e.name, ph: 'i', s: 't', ts: e.ts / 1000, pid: guest ? GUEST_PID : HOST_PID, tid, cat: e.side, args: e.args ?? {} });
  }
  const meta = [
    { name: 'process_name', ph: 'M', pid: GUEST_PID, tid: 0, ts: 0, args: { name: 'guest (kernel, drivers, dma)' } },
    { name: 'process_name', ph: 'M', pid: HOST_PID, tid: 0, ts: 0, args: { name: 'host (device models)' } },
    { name: 'thread_name', ph: 'M', pid: HOST_PID, tid: 0, ts: 0, args: { name: 'devices' } },
    ...[...cpus].sort((a, b) => a - b).map((c) => ({ name: 'thread_name', ph: 'M', pid: GUEST_PID, tid: c, ts: 0, args: { name: `CPU ${c}` } })),
  ];
  return { traceEvents: [...meta, ...out], displayTimeUnit: 'ns' };
}
