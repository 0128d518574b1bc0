// The boot protocol: everything the platform hands the guest image at entry,
// as QEMU hands a kernel its RAM, its devices' registers and its interrupts.
// Types only. Nothing here carries an object of either world across the seam:
// memory is shared bytes, registers are reads and writes of numbers, and
// interrupts are (cpu, vector) pairs.

/** One range of guest-physical RAM and where its bytes sit in the shared buffer. */
export interface RamRegion {
  readonly gpa: number;
  readonly size: number;
  readonly offset: number;
}

export type AccessSize = 1 | 2 | 4;

export interface BootProtocol {
  /** Guest RAM: one fixed-size SharedArrayBuffer and the e820-like map of it. */
  readonly memory: { readonly buffer: SharedArrayBuffer; readonly regions: readonly RamRegion[] };
  /** CPU accesses to physical addresses outside RAM (MMIO, PCI ECAM). Reads of unclaimed addresses give all ones. */
  readonly mmio: {
    read(addr: number, size: AccessSize): number;
    write(addr: number, size: AccessSize, value: number): void;
  };
  /** The interrupt controller calls `deliver` when an interrupt is raised; the kernel only queues it. */
  readonly interrupts: { connect(deliver: (cpu: number, vector: number) => void): void };
  readonly clock: {
    /** Virtual time in nanoseconds. */
    now(): number;
    /** Arms the one-shot timer of `cpu`: TIMER_VECTOR fires there at `deadlineNs`. */
    armTimer(cpu: number, deadlineNs: number): void;
    /** Waits for an interrupt (hlt). Returns false if nothing is left that could ever raise one. */
    halt(): boolean;
    /**
     * One turn of a busy-wait (cpu_relax): lets the rest of the machine make one
     * step of progress, interrupt or not. For drivers that poll, as Linux's
     * virtio-iommu polls its request queue. False if nothing is pending.
     */
    relax(): boolean;
  };
  /** The serial console. */
  readonly console: { write(line: string): void };
  readonly cmdline: string;
  /** Where the platform placed the firmware tables (abi/firmware.ts) in guest RAM. */
  readonly firmware: { readonly addr: number; readonly size: number };
  /** Where the platform placed the init program (abi/workload.ts) in guest RAM, like -initrd. */
  readonly initrd: { readonly addr: number; readonly size: number };
}

/** What the guest hands back when it powers off: its exit status and its own account of the run. */
export interface GuestExit {
  readonly status: number;
  readonly report: unknown;
}

export type GuestEntry = (boot: BootProtocol) => GuestExit;

/** Vector numbers the platform fixes; the kernel allocates MSI vectors from MSI_VECTOR_BASE up. */
export const VECTOR = Object.freeze({
  /** Wired line N arrives as LINE_BASE + N on CPU 0 (a fixed IOAPIC routing). */
  LINE_BASE: 0x20,
  MSI_BASE: 0x40,
  MSI_LAST: 0xef,
  TIMER: 0xec,
});
