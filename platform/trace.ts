// The host side's trace recorder: named events on the machine's virtual clock.
import type { TraceArgs, TraceEvent } from '../abi/trace.ts';

export class HostTrace {
  readonly events: TraceEvent[] = [];
  enabled = true;

  constructor(private readonly clock: { readonly now: number }) {}

  /** The recorder while it records: `trace.on?.emit(name, {...})` builds no arguments when tracing is off. */
  get on(): this | undefined {
    return this.enabled ? this : undefined;
  }

  emit(name: string, args?: TraceArgs): void {
    if (this.enabled) this.events.push(args ? { ts: this.clock.now, side: 'host', name, args } : { ts: this.clock.now, side: 'host', name });
  }
}
