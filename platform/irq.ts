// The interrupt controller: wired lines (a fixed IOAPIC-like routing to CPU 0),
// the MSI doorbell that devices write to, and one one-shot timer per CPU.
import { VECTOR } from '../abi/boot.ts';
import type { EventLoop } from './events.ts';
import type { HostTrace } from './trace.ts';

export interface MsiWindow {
  readonly base: number;
  readonly size: number;
  /** Destination CPU sits in address bits [destShift, destShift + 8), as x86's APIC ID at bit 12. */
  readonly destShift: number;
}

export class InterruptController {
  private deliver: ((cpu: number, vector: number) => void) | undefined;
  private timerGen: number[];
  /** Set by every delivery; the machine's halt() clears it and runs events until it is set again. */
  raised = false;
  readonly delivered = new Map<number, number>();
  /** MSI writes whose data or destination the controller could not accept. */
  badMsi = 0;

  constructor(
    private readonly events: EventLoop,
    private readonly trace: HostTrace,
    readonly msi: MsiWindow,
    readonly cpus: number,
  ) {
    this.timerGen = new Array<number>(cpus).fill(0);
  }

  connect(deliver: (cpu: number, vector: number) => void): void {
    this.deliver = deliver;
  }

  /** A device asserts a wired line. Every assertion is delivered: spurious interrupts are harmless, lost ones are not. */
  assertLine(line: number): void {
    this.raise(0, VECTOR.LINE_BASE + line);
  }

  isDoorbell(addr: number): boolean {
    return addr >= this.msi.base && addr < this.msi.base + this.msi.size;
  }

  /** A 32-bit write that reached the doorbell: the address names the CPU, the data the vector. */
  msiWrite(addr: number, data: number): void {
    const cpu = Math.floor((addr - this.msi.base) / 2 ** this.msi.destShift) & 0xff;
    const vector = data & 0xff;
    if (cpu >= this.cpus || vector < VECTOR.MSI_BASE) {
      this.badMsi++;
      this.trace.emit('apic_msi_rejected', { addr, data });
      return;
    }
    this.raise(cpu, vector);
  }

  armTimer(cpu: number, deadlineNs: number): void {
    const gen = ++this.timerGen[cpu]!;
    this.events.schedule(deadlineNs - this.events.now, () => {
      if (this.timerGen[cpu] === gen) this.raise(cpu, VECTOR.TIMER);
    });
  }

  private raise(cpu: number, vector: number): void {
    this.delivered.set(vector, (this.delivered.get(vector) ?? 0) + 1);
    this.raised = true;
    this.trace.emit('apic_deliver', { cpu, vector });
    this.deliver?.(cpu, vector);
  }
}
