// Interrupt handling. The platform only queues (cpu, vector) pairs; handlers
// run at safe points the kernel chooses: when it waits, or when it leaves a
// critical section. A handler never runs inside another, nor inside a
// driver's critical section.
import { VECTOR, type BootProtocol } from '../abi/boot.ts';
import type { Cpus } from './smp.ts';
import type { GuestTrace } from './trace.ts';

export type IrqHandler = (vector: number) => void;

interface Action {
  readonly name: string;
  readonly fn: IrqHandler;
  count: number;
}

export class KernelPanic extends Error {}

export class Interrupts {
  private readonly actions = new Map<number, Action>();
  private readonly pending: number[][];
  private nextVector: number = VECTOR.MSI_BASE;
  private depth = 0;
  private inHandler = false;
  spurious = 0;

  constructor(
    private readonly boot: BootProtocol,
    private readonly cpus: Cpus,
    private readonly trace: GuestTrace,
  ) {
    this.pending = Array.from({ length: cpus.count }, () => []);
    boot.interrupts.connect((cpu, vector) => this.pending[cpu]?.push(vector));
  }

  /** request_irq: one handler per vector. */
  request(vector: number, name: string, fn: IrqHandler): void {
    if (this.actions.has(vector)) throw new Error(`vector ${vector} already taken by ${this.actions.get(vector)!.name}`);
    this.actions.set(vector, { name, fn, count: 0 });
  }

  free(vector: number): void {
    this.actions.delete(vector);
  }

  /** A fresh vector for an MSI-X entry; throws when the vector space is exhausted. */
  allocVector(): number {
    while (this.nextVector <= VECTOR.MSI_LAST && (this.nextVector === VECTOR.TIMER || this.actions.has(this.nextVector))) this.nextVector++;
    if (this.nextVector > VECTOR.MSI_LAST) throw new Error('out of interrupt vectors');
    return this.nextVector++;
  }

  /** Interrupts taken per handler name, for the report. */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const a of this.actions.values()) out[a.name] = (out[a.name] ?? 0) + a.count;
    return out;
  }

  /** local_irq_save/restore around `fn`: pending interrupts wait until the outermost section ends. */
  critical<T>(fn: () => T): T {
    this.depth++;
    try {
      return fn();
    } finally {
      if (--this.depth === 0) this.poll();
    }
  }

  /** A safe point: runs the handlers of every queued interrupt, each on its CPU. */
  poll(): void {
    if (this.depth > 0 || this.inHandler) return;
    this.inHandler = true;
    try {
      for (let cpu = 0; cpu < this.pending.length; cpu++) {
        const q = this.pending[cpu]!;
        while (q.length > 0) {
          const vector = q.shift()!;
          const a = this.actions.get(vector);
          if (!a) {
            this.spurious++;
            this.trace.emit('irq_spurious', { vector });
            continue;
          }
          a.count++;
          this.cpus.runOn(cpu, () => {
            this.trace.emit('irq_handler_entry', { irq: vector, name: a.name });
            a.fn(vector);
          });
        }
      }
    } finally {
      this.inHandler = false;
    }
  }

  /** wait_event: takes interrupts and halts until `cond()` holds. Panics if nothing can ever wake the CPU. */
  waitEvent(cond: () => boolean, what: string): void {
    if (this.depth > 0 || this.inHandler) throw new KernelPanic(`sleeping in atomic context waiting for ${what}`);
    for (;;) {
      this.poll();
      if (cond()) return;
      if (!this.boot.clock.halt()) {
        this.poll();
        if (cond()) return;
        throw new KernelPanic(`hung waiting for ${what}: no interrupt can arrive`);
      }
    }
  }
}
