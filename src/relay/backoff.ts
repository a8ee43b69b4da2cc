/**
 * Reconnect delays: exponential backoff with full jitter (AWS architecture blog, "Exponential
 * Backoff and Jitter"): each wait is uniform in [0, min(max, initial · factor^attempt)], so a fleet
 * of agents that lost the server at the same moment spreads its reconnects instead of arriving in
 * waves. Pure: randomness is injected.
 * @module
 */
import { InvalidInputError } from "../errors.ts";

/** Parameters of {@linkcode backoffDelay}. */
export interface BackoffOptions {
  /** Upper bound of the first wait, ms. Default 500. */
  initialMs?: number;
  /** Cap of the upper bound, ms. Default 30,000. */
  maxMs?: number;
  /** Growth of the upper bound per failed attempt. Default 2. */
  factor?: number;
}

/** Defaults of {@linkcode BackoffOptions}. */
export const DEFAULT_BACKOFF: Required<BackoffOptions> = { initialMs: 500, maxMs: 30_000, factor: 2 };

function resolve(opts: BackoffOptions): Required<BackoffOptions> {
  const o = { ...DEFAULT_BACKOFF, ...opts };
  if (!(o.initialMs > 0) || !(o.maxMs >= o.initialMs) || !(o.factor >= 1) || !Number.isFinite(o.maxMs)) {
    throw new InvalidInputError(
      `backoff needs 0 < initialMs <= maxMs (finite) and factor >= 1, got ${o.initialMs}, ${o.maxMs}, ${o.factor}`,
    );
  }
  return o;
}

/** The upper bound of the wait before attempt number `attempt` (0-based): min(max, initial · factor^attempt). */
export function backoffCeiling(attempt: number, opts: BackoffOptions = {}): number {
  const o = resolve(opts);
  const n = Math.max(0, Math.floor(attempt));
  // factor^n overflows to Infinity for large n; min() then picks the cap, which is what we want.
  return Math.min(o.maxMs, o.initialMs * o.factor ** n);
}

/** Full-jitter wait before attempt `attempt`: `random()` (in [0, 1)) times {@linkcode backoffCeiling}. */
export function backoffDelay(attempt: number, random: () => number, opts: BackoffOptions = {}): number {
  const r = random();
  const u = Number.isFinite(r) ? Math.min(Math.max(r, 0), 1) : 0;
  return Math.floor(u * backoffCeiling(attempt, opts));
}

/** Counts failed attempts and hands out the next wait; `reset()` after a healthy session. */
export class Backoff {
  #opts: Required<BackoffOptions>;
  #random: () => number;
  #attempt = 0;

  constructor(random: () => number, opts: BackoffOptions = {}) {
    this.#opts = resolve(opts);
    this.#random = random;
  }

  /** Failed attempts since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The wait before the next attempt; counts one more failure. */
  next(): number {
    return backoffDelay(this.#attempt++, this.#random, this.#opts);
  }

  /** Back to the first, shortest wait. */
  reset(): void {
    this.#attempt = 0;
  }
}
