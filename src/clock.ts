/**
 * Time as a dependency. Loops wait only through `clock.sleep` so tests drive them with
 * {@linkcode FakeClock} instead of sleeping.
 * @module
 */

/** A source of time and a way to wait. */
export interface Clock {
  /** Current time. */
  now(): Date;
  /** Resolves after `ms`, or rejects with the signal's reason when aborted. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The wall clock. */
export const systemClock: Clock = {
  now: () => new Date(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal!.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, Math.max(0, ms));
      signal?.addEventListener("abort", onAbort, { once: true });
    }),
};

interface Sleeper {
  until: number;
  resolve: () => void;
}

/** A clock that only moves when told to; `advance` wakes every sleeper whose time has come. */
export class FakeClock implements Clock {
  #now: number;
  #sleepers: Sleeper[] = [];

  constructor(start: Date | number = Date.UTC(2026, 0, 1)) {
    this.#now = typeof start === "number" ? start : start.getTime();
  }

  now(): Date {
    return new Date(this.#now);
  }

  /** Number of pending sleeps, so tests can wait until a loop is parked. */
  get pending(): number {
    return this.#sleepers.length;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const sleeper: Sleeper = { until: this.#now + Math.max(0, ms), resolve };
      this.#sleepers.push(sleeper);
      signal?.addEventListener("abort", () => {
        this.#sleepers = this.#sleepers.filter((s) => s !== sleeper);
        reject(signal.reason);
      }, { once: true });
    });
  }

  /** Moves time forward and wakes due sleepers in order; lets their continuations run. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    while (true) {
      const due = this.#sleepers.filter((s) => s.until <= target).sort((a, b) => a.until - b.until);
      if (due.length === 0) break;
      const next = due[0];
      this.#now = Math.max(this.#now, next.until);
      this.#sleepers = this.#sleepers.filter((s) => s !== next);
      next.resolve();
      // Let the woken task run until it parks again before we look for the next sleeper.
      for (let i = 0; i < 10; i++) await Promise.resolve();
      await new Promise((r) => setTimeout(r, 0));
    }
    this.#now = target;
  }

  /** Resolves once at least `n` sleeps are pending (polling the event loop, not time). */
  async waitForSleepers(n = 1, maxTurns = 10_000): Promise<void> {
    for (let i = 0; i < maxTurns && this.#sleepers.length < n; i++) {
      await new Promise((r) => setTimeout(r, 0));
    }
    if (this.#sleepers.length < n) {
      throw new Error(`expected ${n} pending sleeps, have ${this.#sleepers.length}`);
    }
  }
}
