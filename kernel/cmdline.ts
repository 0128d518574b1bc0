// The kernel command line: space-separated `key=value` or bare `flag` words,
// as Linux parses them (later words win). Unknown words are kept and logged.

export class Cmdline {
  private readonly values = new Map<string, string>();

  constructor(readonly text: string) {
    for (const word of text.split(/\s+/).filter(Boolean)) {
      const eq = word.indexOf('=');
      if (eq < 0) this.values.set(word, '');
      else this.values.set(word.slice(0, eq), word.slice(eq + 1));
    }
  }

  has(key: string): boolean {
    return this.values.has(key);
  }

  str(key: string, dflt: string): string {
    return this.values.get(key) ?? dflt;
  }

  /** Integer option; a malformed value falls back to the default, as Linux's get_option does. */
  int(key: string, dflt: number): number {
    const v = this.values.get(key);
    if (v === undefined || !/^(0x[0-9a-f]+|\d+)$/i.test(v)) return dflt;
    return Number(v);
  }

  /** A 64-bit value such as a feature mask, decimal or 0x-hex; malformed falls back to the default. */
  u64(key: string, dflt: bigint): bigint {
    const v = this.values.get(key);
    if (v === undefined || !/^(0x[0-9a-f]{1,16}|\d{1,20})$/i.test(v)) return dflt;
    return BigInt.asUintN(64, BigInt(v));
  }

  /** Boolean option: `1/0`, `on/off`, `y/n`, `true/false`; a bare flag is true. */
  bool(key: string, dflt: boolean): boolean {
    const v = this.values.get(key);
    if (v === undefined) return dflt;
    if (['', '1', 'on', 'y', 'yes', 'true'].includes(v.toLowerCase())) return true;
    if (['0', 'off', 'n', 'no', 'false'].includes(v.toLowerCase())) return false;
    return dflt;
  }

  keys(): string[] {
    return [...this.values.keys()];
  }
}
