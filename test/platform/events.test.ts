import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EventLoop } from '../../platform/events.ts';

describe('EventLoop', () => {
  it('runs events in time order, ties in scheduling order, advancing the clock', () => {
    const ev = new EventLoop();
    const seen: string[] = [];
    ev.schedule(30, () => seen.push(`c@${ev.now}`));
    ev.schedule(10, () => {
      seen.push(`a@${ev.now}`);
      ev.schedule(0, () => seen.push(`a2@${ev.now}`));
    });
    ev.schedule(10, () => seen.push(`b@${ev.now}`));
    expect(ev.runUntil(() => false)).toBe(false);
    expect(seen).toEqual(['a@10', 'b@10', 'a2@10', 'c@30']);
  });

  it('stops as soon as the condition holds', () => {
    const ev = new EventLoop();
    let n = 0;
    for (let i = 1; i <= 5; i++) ev.schedule(i, () => n++);
    expect(ev.runUntil(() => n === 2)).toBe(true);
    expect(ev.now).toBe(2);
    expect(ev.pending).toBe(3);
  });

  it('runs any mix of delays, including ones scheduled while running, sorted by time then scheduling order', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 50 }), fc.integer({ min: -1, max: 20 })), { maxLength: 200 }), (plan) => {
        const ev = new EventLoop();
        const ran: { at: number; seq: number }[] = [];
        let seq = 0;
        const add = (delay: number, child: number) => {
          const me = { at: ev.now + delay, seq: seq++ };
          ev.schedule(delay, () => {
            expect(ev.now).toBe(me.at);
            ran.push(me);
            if (child >= 0) add(child, -1);
          });
        };
        for (const [delay, child] of plan) add(delay, child);
        ev.runUntil(() => false);
        expect(ran.length).toBe(seq);
        for (let i = 1; i < ran.length; i++) {
          const [a, b] = [ran[i - 1]!, ran[i]!];
          expect(a.at < b.at || (a.at === b.at && a.seq < b.seq)).toBe(true);
        }
      }),
    );
  });
});
