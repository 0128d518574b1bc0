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
});
