// The guest's trace recorder: Linux-like event names on the virtual clock,
// tagged with the CPU they ran on.
import type { TraceArgs, TraceEvent } from '../abi/trace.ts';

export class GuestTrace {
  readonly events: TraceEvent[] = [];
  enabled = true;

  constructor(
    private readonly now: () => number,
    private readonly cpu: () => number,
  ) {}

  emit(name: string, args?: TraceArgs): void {
    if (!this.enabled) return;
    const e: TraceEvent = args ? { ts: this.now(), side: 'guest', cpu: this.cpu(), name, args } : { ts: this.now(), side: 'guest', cpu: this.cpu(), name };
    this.events.push(e);
  }
}
