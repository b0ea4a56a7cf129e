/**
 * The poller keeps the event loop turning after a reply for its window, and adapts the window to
 * the gaps a client leaves: it grows to cover a gap it just missed (within the maximum) and halves
 * after gaps too long to poll for; it holds off after losing its core in the middle of a spin.
 * The clock and the next-turn queue are driven by hand.
 */
import { describe, expect, test } from 'vitest';
import { HOLD_MAX_MS, HOLD_MIN_MS, PREEMPTED_MS, Poller, type PollerClock } from '../../src/nbd/poller.js';

/** A clock in milliseconds and a queue of deferred tasks; each turn advances time by one microsecond. */
class ManualClock implements PollerClock {
  time = 1000;
  queue: Array<() => void> = [];
  now(): number {
    return this.time;
  }
  defer(task: () => void): void {
    this.queue.push(task);
  }
  /** Runs turns of the loop until nothing is deferred; returns how long that took (µs). */
  untilQuiet(): number {
    const start = this.time;
    for (let turns = 0; this.queue.length > 0 && turns < 100_000; turns++) {
      this.time += 0.001;
      const tasks = this.queue.splice(0);
      for (const task of tasks) task();
    }
    return (this.time - start) * 1000;
  }
  /** Time passes with the loop asleep. */
  sleep(us: number): void {
    this.time += us / 1000;
  }
}

describe('Poller', () => {
  test('after a reply it keeps the loop turning for the window, then stops', () => {
    const clock = new ManualClock();
    const poller = new Poller(200, clock);
    poller.answered();
    expect(clock.queue.length).toBe(1);
    const turned = clock.untilQuiet();
    expect(turned).toBeGreaterThanOrEqual(poller.windowMicros - 1);
    expect(turned).toBeLessThanOrEqual(poller.windowMicros + 2);
  });

  test('a maximum of 0 never polls and never adapts', () => {
    const clock = new ManualClock();
    const poller = new Poller(0, clock);
    poller.answered();
    expect(clock.queue.length).toBe(0);
    clock.sleep(50);
    poller.arrived();
    expect(poller.windowMicros).toBe(0);
  });

  test('a request that arrives soon after the loop went quiet grows the window to cover that gap', () => {
    const clock = new ManualClock();
    const poller = new Poller(200, clock);
    poller.answered();
    const polled = clock.untilQuiet();
    clock.sleep(60);
    poller.arrived();
    expect(poller.windowMicros).toBeGreaterThanOrEqual((polled + 60) * 1.25 - 1);
    expect(poller.windowMicros).toBeLessThanOrEqual(200);
    // Next time the same gap is caught while polling.
    poller.answered();
    clock.time += (polled + 60) / 1000;
    expect(clock.queue.length).toBe(1);
  });

  test('the window grows to the maximum and never beyond', () => {
    const clock = new ManualClock();
    const poller = new Poller(100, clock);
    const seen: number[] = [];
    for (let i = 0; i < 5; i++) {
      poller.answered();
      clock.untilQuiet();
      clock.sleep(10);
      poller.arrived();
      seen.push(poller.windowMicros);
    }
    expect(Math.max(...seen)).toBe(100);
    expect(seen.every((w) => w <= 100)).toBe(true);
  });

  test('gaps longer than the maximum halve the window until it is off; a short gap brings it back', () => {
    const clock = new ManualClock();
    const poller = new Poller(200, clock);
    for (let i = 0; i < 10 && poller.windowMicros > 0; i++) {
      const before = poller.windowMicros;
      poller.answered();
      clock.untilQuiet();
      clock.sleep(1000);
      poller.arrived();
      expect(poller.windowMicros).toBeLessThan(before);
    }
    expect(poller.windowMicros).toBe(0);
    poller.answered();
    expect(clock.queue.length).toBe(0);
    clock.sleep(30);
    poller.arrived();
    expect(poller.windowMicros).toBeGreaterThanOrEqual(30);
  });

  test('a request caught while polling changes nothing', () => {
    const clock = new ManualClock();
    const poller = new Poller(200, clock);
    poller.answered();
    const before = poller.windowMicros;
    clock.time += before / 2000;
    poller.arrived();
    expect(poller.windowMicros).toBe(before);
  });

  test('a missed gap grows the window to cover it with a quarter to spare, not to double', () => {
    const clock = new ManualClock();
    const poller = new Poller(1000, clock);
    poller.answered();
    const polled = clock.untilQuiet();
    clock.sleep(8);
    poller.arrived();
    expect(poller.windowMicros).toBeCloseTo((polled + 8) * 1.25, 0);
    expect(poller.windowMicros).toBeLessThan(polled * 2);
  });

  test('a spin that loses its core holds polling off, longer each time, and a clean spin shortens the hold', () => {
    const clock = new ManualClock();
    const poller = new Poller(200, clock);
    const losing = (): void => {
      poller.answered();
      clock.time += PREEMPTED_MS * 2; // off the core: the next turn comes late, with no request in between
      clock.untilQuiet();
    };
    losing();
    expect(poller.backedOff).toBe(true);
    poller.answered();
    expect(clock.queue.length).toBe(0); // held off: no spin
    const holds: number[] = [];
    for (let i = 0; i < 10; i++) {
      const from = clock.time;
      while (poller.backedOff) clock.time += 1;
      holds.push(clock.time - from);
      losing();
    }
    expect(holds[0]).toBeGreaterThanOrEqual(HOLD_MIN_MS - 1);
    expect(holds[1]).toBeGreaterThan(holds[0] * 1.5);
    expect(Math.max(...holds)).toBeLessThanOrEqual(HOLD_MAX_MS + 1);
    // Spins that run their window untouched halve the hold back.
    while (poller.backedOff) clock.time += 1;
    for (let i = 0; i < 10; i++) {
      poller.answered();
      clock.untilQuiet();
    }
    losing();
    const from = clock.time;
    while (poller.backedOff) clock.time += 1;
    expect(clock.time - from).toBeLessThanOrEqual(HOLD_MIN_MS + 1);
  });

  test('a long turn that did work (a request arrived, or a reply went out) is not a lost core', () => {
    const clock = new ManualClock();
    const poller = new Poller(200, clock);
    poller.answered();
    clock.time += PREEMPTED_MS * 4;
    poller.arrived(); // a big request came in and took its time
    clock.untilQuiet();
    expect(poller.backedOff).toBe(false);
    poller.answered();
    clock.time += PREEMPTED_MS * 4;
    poller.answered(); // another reply after long work in the same turn
    clock.untilQuiet();
    expect(poller.backedOff).toBe(false);
  });
});
