/**
 * The wait between steps of the renewal loops (agent identity, Istio CA): a clock sleep that a poke
 * (new material stored, a stream reconnected) or the loop's stop signal cuts short.
 * @module
 */
import type { Clock } from "../clock.ts";

/** A sleep that {@linkcode WakeableSleep.wake} ends early; at most one sleeper at a time (one loop). */
export class WakeableSleep {
  #wake?: () => void;

  /** Ends the current sleep, if any (a no-op between sleeps: the loop then runs its next step anyway). */
  wake(): void {
    this.#wake?.();
  }

  /** Sleeps `ms` on `clock`, returning early (never throwing) when woken or when `signal` aborts. */
  async sleep(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    this.#wake = () => ac.abort();
    try {
      await clock.sleep(ms, ac.signal);
    } catch {
      // woken early (poke) or stopping
    } finally {
      this.#wake = undefined;
      signal.removeEventListener("abort", onAbort);
    }
  }
}
