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

  private push(e: Event): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  private pop(): Event | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.before(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}
