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
 * stops costing anything between them. The window grows only as far as the gap it missed (with a
 * quarter to spare), not by doubling: a window far past the client's gap would spin on after the
 * last request of every burst for nothing.
 *
 * Contention: a spinning loop holds a core that something else may want. On a host running many
 * servers (one per clone), or any busy one, the spin is taken from the other servers' requests,
 * and polling then costs everybody more than it saves. The poller notices from inside: an empty
 * turn of the spin takes microseconds, so a turn that took longer than PREEMPTED_MS with no
 * request in it means the thread was taken off its core (by the kernel for another task, or by
 * the hypervisor). Then it stops spinning for a hold-off that doubles with each such turn, from
 * HOLD_MIN_MS up to HOLD_MAX_MS, and halves again with each spin that runs its window untouched.
 * (Tried first: the kernel's CPU pressure, /proc/pressure/cpu. It cannot tell the waiting our own
 * spin causes from anybody else's, and backed off single servers on a merely busy machine.)
 *
 * Cost: while a client keeps a queue-depth-1 stream going, about one core (the loop spins through
 * each gap between a reply and the next request); none when idle, when the cores are contended, or
 * with a maximum of 0 (`cowdisk serve --poll-us 0`). docs/PERFORMANCE.md gives the figures, CPU
 * time per request included, with and without.
 */

/** The default maximum window: above the gap a queue-depth-1 client leaves between requests here. */
export const DEFAULT_POLL_US = 200;
/** Where the window starts, before it has learned anything (QEMU's default poll-max-ns). */
const START_US = 32;
/** Below this the window is zero: polling for less is not worth a turn of the loop. */
const MIN_US = 2;
/** An empty turn of the spin longer than this (milliseconds) means the thread lost its core. */
export const PREEMPTED_MS = 0.5;
/** After losing its core, the poller stops spinning for this long at first (milliseconds)... */
export const HOLD_MIN_MS = 50;
/** ...doubling with each loss up to this. */
export const HOLD_MAX_MS = 3200;

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
  /** When the last turn of the spin ran (ms), and whether a request arrived since. */
  private turnAt = 0;
  private arrivedSinceTurn = false;
  /** No spinning before this time (ms): the thread lost its core while spinning. */
  private holdUntil = -Infinity;
  private hold = HOLD_MIN_MS / 2;

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

  /** Whether polling is held off because the thread lost its core while spinning (for tests and diagnostics). */
  get backedOff(): boolean {
    return this.clock.now() < this.holdUntil;
  }

  /** A request arrived: learn from how long the loop was quiet. */
  arrived(): void {
    this.arrivedSinceTurn = true;
    if (this.max === 0 || this.spinning || this.last === undefined) return;
    const gap = this.clock.now() - this.last;
    if (gap <= this.max) {
      this.window = Math.min(this.max, Math.max(this.window, gap * 1.25, MIN_US / 1000));
    } else {
      this.window /= 2;
      if (this.window < MIN_US / 1000) this.window = 0;
    }
  }

  /** Replies went out: keep the loop turning for the window from now. */
  answered(): void {
    if (this.max === 0) return;
    const now = (this.last = this.clock.now());
    // Work was done in this turn, so the time until the next spin is not an empty turn's.
    this.turnAt = now;
    if (!this.spinning && this.window > 0 && now >= this.holdUntil) {
      this.spinning = true;
      this.arrivedSinceTurn = false;
      this.clock.defer(this.spin);
    }
  }

  private readonly spin = (): void => {
    const now = this.clock.now();
    if (now - this.turnAt > PREEMPTED_MS && !this.arrivedSinceTurn) {
      // Off the core for longer than any empty turn takes: someone else wants it more.
      this.hold = Math.min(HOLD_MAX_MS, this.hold * 2);
      this.holdUntil = now + this.hold;
      this.spinning = false;
      return;
    }
    this.turnAt = now;
    this.arrivedSinceTurn = false;
    if (now - (this.last as number) < this.window) {
      this.clock.defer(this.spin);
    } else {
      this.spinning = false;
      this.hold = Math.max(HOLD_MIN_MS / 2, this.hold / 2);
    }
  };
}
