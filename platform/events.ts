// The machine's discrete-event loop on a virtual clock (design §4). Events at
// the same time run in the order they were scheduled, so a run is a pure
// function of its inputs.

interface Event {
  readonly at: number;
  readonly seq: number;
  readonly run: () => void;
}

export class EventLoop {
  private nowNs = 0;
  private seq = 0;
  private heap: Event[] = [];

  get now(): number {
    return this.nowNs;
  }

  get pending(): number {
    return this.heap.length;
  }

  schedule(delayNs: number, run: () => void): void {
    this.push({ at: this.nowNs + Math.max(0, delayNs), seq: this.seq++, run });
  }

  /** Runs the next event, if there is one. */
  runOne(): boolean {
    const e = this.pop();
    if (!e) return false;
    this.nowNs = e.at;
    e.run();
    return true;
  }

  /** Runs events in time order until `stop()` is true after one, or none are left. Returns stop(). */
  runUntil(stop: () => boolean): boolean {
    while (!stop()) if (!this.runOne()) return false;
    return true;
  }

  private before(a: Event, b: Event): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  /** Sifts a hole up from the end instead of swapping: one write per level. */
  private push(e: Event): void {
    const h = this.heap;
    let i = h.length;
    h.push(e);
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p]!;
      if (!this.before(e, parent)) break;
      h[i] = parent;
      i = p;
    }
    h[i] = e;
  }

  private pop(): Event | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    const n = h.length;
    if (n === 0 || !last) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.before(h[r]!, h[l]!) ? r : l;
      if (!this.before(h[c]!, last)) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
    return top;
  }
}
