// Virtual CPUs. Everything runs on one JS thread, but every task and every
// interrupt handler runs on a numbered CPU, so per-CPU data is real: code
// reads `cpus.current` exactly where Linux would use smp_processor_id().

export class Cpus {
  private cur = 0;

  constructor(readonly count: number) {}

  get current(): number {
    return this.cur;
  }

  /** Runs `fn` as a task on `cpu` and returns to the previous CPU afterwards. */
  runOn<T>(cpu: number, fn: () => T): T {
    if (cpu < 0 || cpu >= this.count) throw new RangeError(`no CPU ${cpu} (nr_cpus=${this.count})`);
    const prev = this.cur;
    this.cur = cpu;
    try {
      return fn();
    } finally {
      this.cur = prev;
    }
  }
}

/** One value per CPU, indexed by the current CPU: Linux's DEFINE_PER_CPU. */
export class PerCpu<T> {
  private readonly values: T[];

  constructor(
    private readonly cpus: Cpus,
    init: (cpu: number) => T,
  ) {
    this.values = Array.from({ length: cpus.count }, (_, i) => init(i));
  }

  get this_cpu(): T {
    return this.values[this.cpus.current]!;
  }

  on(cpu: number): T {
    return this.values[cpu]!;
  }

  all(): readonly T[] {
    return this.values;
  }
}
