/**
 * Limits failed authentication attempts per peer address (token bucket), so a peer cannot guess
 * bootstrap tokens at line rate. Successes cost nothing; each failure takes one token; an empty
 * bucket refuses further attempts from that address until it refills. Pure: every method takes `now`.
 * @module
 */
import { ResourceExhaustedError } from "../errors.ts";

/** Options of {@linkcode FailureLimiter}. */
export interface FailureLimiterOptions {
  /** Failures allowed in a burst. Default 10. */
  burst?: number;
  /** Failures regained per minute. Default 6 (one every 10 s). */
  perMinute?: number;
  /** Peers remembered at most; the least recently seen full buckets are forgotten first. Default 10000. */
  maxPeers?: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Failure rate limiter keyed by peer address. */
export class FailureLimiter {
  readonly burst: number;
  readonly perMinute: number;
  #maxPeers: number;
  #buckets = new Map<string, Bucket>();

  constructor(opts: FailureLimiterOptions = {}) {
    this.burst = opts.burst ?? 10;
    this.perMinute = opts.perMinute ?? 6;
    this.#maxPeers = opts.maxPeers ?? 10_000;
  }

  #refilled(peer: string, now: number): Bucket {
    const b = this.#buckets.get(peer);
    if (!b) return { tokens: this.burst, at: now };
    const gained = Math.max(0, now - b.at) * this.perMinute / 60_000;
    return { tokens: Math.min(this.burst, b.tokens + gained), at: now };
  }

  /** Milliseconds until `peer` may try again; 0 when it may try now. */
  retryAfterMs(peer: string, now: Date): number {
    const b = this.#refilled(peer, now.getTime());
    if (b.tokens >= 1) return 0;
    return Math.ceil((1 - b.tokens) * 60_000 / this.perMinute);
  }

  /** Throws ResourceExhaustedError when `peer` has no attempts left. */
  check(peer: string, now: Date): void {
    const ms = this.retryAfterMs(peer, now);
    if (ms > 0) {
      throw new ResourceExhaustedError(
        `too many failed attempts from this address; retry in ${Math.ceil(ms / 1000)} s`,
      );
    }
  }

  /** Records one failure of `peer`. */
  fail(peer: string, now: Date): void {
    const b = this.#refilled(peer, now.getTime());
    b.tokens = Math.max(0, b.tokens - 1);
    this.#buckets.delete(peer);
    this.#buckets.set(peer, b);
    this.#evict(now.getTime());
  }

  /** Number of peers tracked (for tests and metrics). */
  get size(): number {
    return this.#buckets.size;
  }

  #evict(now: number): void {
    if (this.#buckets.size <= this.#maxPeers) return;
    // Map iteration is insertion order, and `fail` re-inserts: the first entries are the stalest.
    for (const [peer] of this.#buckets) {
      if (this.#buckets.size <= this.#maxPeers) break;
      if (this.#refilled(peer, now).tokens >= this.burst) this.#buckets.delete(peer);
    }
    // Everyone is still penalised: drop the stalest anyway, memory is the harder limit.
    for (const [peer] of this.#buckets) {
      if (this.#buckets.size <= this.#maxPeers) break;
      this.#buckets.delete(peer);
    }
  }
}

/**
 * The address part of a grpc-js peer string (`ipv4:127.0.0.1:5555`, `ipv6:[::1]:5555`,
 * `127.0.0.1:5555`), so all connections of one host share a bucket.
 */
export function peerAddress(peer: string): string {
  let p = peer.replace(/^(ipv4|ipv6|unix):/, "");
  const v6 = /^\[([^\]]+)\](:\d+)?$/.exec(p);
  if (v6) return v6[1];
  const i = p.lastIndexOf(":");
  if (i > 0 && p.indexOf(":") === i) p = p.slice(0, i);
  return p;
}
