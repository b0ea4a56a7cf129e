/**
 * Adaptive polling: after answering, keep the event loop awake for a short while, so that a
 * client's next request is picked up by a running thread instead of one that must be woken.
 *
 * Why: at queue depth 1 a request's latency is mostly wake-ups, not work. When the server's
 * thread sleeps between requests, every request pays for waking it (on a VM, a halted vCPU's
 * wake-up costs a VM exit and re-entry: measured here, a 4 KiB write went from 92 µs to 37-47 µs
 * at queue depth 1 with polling, the engine's share being about 8 µs). QEMU's event loop does the
 * same for the same reason (its `poll-max-ns`); Linux's haltpoll and NAPI busy-polling too.
 *
 * How: while the time since the last reply is under the window, a setImmediate chain keeps the
 * loop turning, and each turn checks the sockets without blocking (libuv polls with a zero
 * timeout when immediates are pending). The window adapts to the client: when a request arrives
 * after the loop went to sleep, but within the maximum, polling a little longer would have
 * caught it, so the window grows to cover that gap; when the gap is longer than the maximum,
 * polling would not have helped and the window halves. A client that talks in bursts quickly
 * stops costing anything between them.
 *
 * Cost: a core kept busy for up to the window after each reply while a client is active (none
 * when idle, or with a maximum of 0: `cowdisk serve --poll-us 0`). docs/PERFORMANCE.md gives the
 * figures with and without.
 */

/** The default maximum window: above the gap a queue-depth-1 client leaves between requests here. */
export const DEFAULT_POLL_US = 200;
/** Where the window starts, before it has learned anything (QEMU's default poll-max-ns). */
const START_US = 32;
/** Below this the window is zero: polling for less is not worth a turn of the loop. */
const MIN_US = 2;

/** What the poller needs from the world: a clock in milliseconds and a way to run a task next turn. */
export interface PollerClock {
  now(): number;
  defer(task: () => void): void;
}

const REAL_CLOCK: PollerClock = { now: () => performance.now(), defer: (task) => setImmediate(task) };

export class Poller {
  /** Current window in milliseconds. */
  private window: number;
  private readonly max: number;
  /** When the last replies went out (undefined: never yet). */
  private last: number | undefined;
  private spinning = false;

  constructor(
    maxMicros: number = DEFAULT_POLL_US,
    private readonly clock: PollerClock = REAL_CLOCK,
  ) {
    this.max = Math.max(0, maxMicros) / 1000;
    this.window = Math.min(this.max, START_US / 1000);
  }

  /** The window in microseconds (for tests and diagnostics). */
  get windowMicros(): number {
    return this.window * 1000;
  }

  /** A request arrived: learn from how long the loop was quiet. */
  arrived(): void {
    if (this.max === 0 || this.spinning || this.last === undefined) return;
    const gap = this.clock.now() - this.last;
    if (gap <= this.max) {
      this.window = Math.min(this.max, Math.max(this.window * 2, gap * 1.25, MIN_US / 1000));
    } else {
      this.window /= 2;
      if (this.window < MIN_US / 1000) this.window = 0;
    }
  }

  /** Replies went out: keep the loop turning for the window from now. */
  answered(): void {
    if (this.max === 0) return;
    this.last = this.clock.now();
    if (!this.spinning && this.window > 0) {
      this.spinning = true;
      this.clock.defer(this.spin);
    }
  }

  private readonly spin = (): void => {
    if (this.clock.now() - (this.last as number) < this.window) this.clock.defer(this.spin);
    else this.spinning = false;
  };
}
