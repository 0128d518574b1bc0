// dmesg: a ring of timestamped kernel messages, echoed to the console at or
// above the console log level (Linux's loglevel= semantics).

export const LOGLEVEL = Object.freeze({ EMERG: 0, ALERT: 1, CRIT: 2, ERR: 3, WARNING: 4, NOTICE: 5, INFO: 6, DEBUG: 7 });

export interface LogLine {
  readonly ts: number;
  readonly level: number;
  readonly text: string;
}

export class Dmesg {
  readonly lines: LogLine[] = [];

  constructor(
    private readonly now: () => number,
    private readonly console: (line: string) => void,
    private readonly consoleLevel: number,
  ) {}

  printk(level: number, text: string): void {
    const line = { ts: this.now(), level, text };
    this.lines.push(line);
    if (level < this.consoleLevel) this.console(formatLogLine(line));
  }

  info(text: string): void {
    this.printk(LOGLEVEL.INFO, text);
  }

  warn(text: string): void {
    this.printk(LOGLEVEL.WARNING, text);
  }

  err(text: string): void {
    this.printk(LOGLEVEL.ERR, text);
  }

  debug(text: string): void {
    this.printk(LOGLEVEL.DEBUG, text);
  }
}

export function formatLogLine(l: LogLine): string {
  const s = Math.floor(l.ts / 1e9);
  const us = Math.floor((l.ts % 1e9) / 1e3);
  return `[${String(s).padStart(5)}.${String(us).padStart(6, '0')}] ${l.text}`;
}
