// Kernel timers on the virtual clock: one sorted list per CPU, the CPU's
// one-shot hardware timer armed for the earliest deadline.
import { VECTOR, type BootProtocol } from '../abi/boot.ts';
import type { Interrupts } from './irq.ts';
import { PerCpu, type Cpus } from './smp.ts';

export interface Timer {
  readonly deadline: number;
  readonly fn: () => void;
  cancelled: boolean;
}

export class Timers {
  private readonly lists: PerCpu<Timer[]>;

  constructor(
    private readonly boot: BootProtocol,
    private readonly cpus: Cpus,
    irqs: Interrupts,
  ) {
    this.lists = new PerCpu(cpus, () => []);
    irqs.request(VECTOR.TIMER, 'timer', () => this.expire());
  }

  /** Runs `fn` on the current CPU once `delayNs` of virtual time have passed. */
  add(delayNs: number, fn: () => void): Timer {
    const t: Timer = { deadline: this.boot.clock.now() + delayNs, fn, cancelled: false };
    const list = this.lists.this_cpu;
    let i = list.length;
    while (i > 0 && list[i - 1]!.deadline > t.deadline) i--;
    list.splice(i, 0, t);
    if (i === 0) this.boot.clock.armTimer(this.cpus.current, t.deadline);
    return t;
  }

  cancel(t: Timer): void {
    t.cancelled = true;
  }

  private expire(): void {
    const list = this.lists.this_cpu;
    const now = this.boot.clock.now();
    while (list.length > 0 && list[0]!.deadline <= now) {
      const t = list.shift()!;
      if (!t.cancelled) t.fn();
    }
    if (list.length > 0) this.boot.clock.armTimer(this.cpus.current, list[0]!.deadline);
  }
}
