/**
 * A read cache for the few secrets the server consults on every identity call (signing CA, root CA,
 * shared token), so a storm of Bootstraps does not become a storm of GETs on the store (with the
 * Kubernetes store, each is a request to the management cluster's API server).
 *
 * - Singleflight: concurrent `get`s of a name share one store read.
 * - Bounded staleness: a value is served for at most `maxAgeMs` after the read that produced it
 *   *started*, so a change written at time T is seen by every `get` that starts at T + maxAgeMs or later.
 * - Failed reads are not cached: the next `get` tries the store again.
 *
 * Only for values where that staleness is acceptable. Anything decided by compare-and-swap (per-cluster
 * single-use tokens, the client secret) reads the store itself, never this cache.
 * @module
 */
import type { Clock } from "../clock.ts";
import { InvalidInputError } from "../errors.ts";
import type { Secret, SecretStore } from "../store/mod.ts";

/** What readers of secrets need: a store, or a {@linkcode SecretCache} in front of one. */
export type SecretReader = Pick<SecretStore, "get">;

/** Default bound on staleness, ms. */
export const DEFAULT_SECRET_CACHE_MAX_AGE_MS = 5_000;

/** Options of {@linkcode SecretCache}. */
export interface SecretCacheOptions {
  store: SecretReader;
  clock: Clock;
  /** How long a read is reused, ms; 0 turns caching (and sharing) off. Default 5,000. */
  maxAgeMs?: number;
}

interface Entry {
  /** When the read started (ms on the clock). */
  at: number;
  value: Promise<Secret | undefined>;
}

/** Bounded-staleness, singleflight read cache over a store (see the module comment). */
export class SecretCache implements SecretReader {
  readonly maxAgeMs: number;
  #store: SecretReader;
  #clock: Clock;
  #entries = new Map<string, Entry>();

  constructor(opts: SecretCacheOptions) {
    const maxAgeMs = opts.maxAgeMs ?? DEFAULT_SECRET_CACHE_MAX_AGE_MS;
    if (!(maxAgeMs >= 0) || !Number.isFinite(maxAgeMs)) {
      throw new InvalidInputError(`secret cache maxAgeMs must be 0 or more milliseconds, got ${maxAgeMs}`);
    }
    this.maxAgeMs = maxAgeMs;
    this.#store = opts.store;
    this.#clock = opts.clock;
  }

  /** The secret as read at most `maxAgeMs` ago (or now), or undefined when it did not exist then. */
  get(name: string): Promise<Secret | undefined> {
    const now = this.#clock.now().getTime();
    const hit = this.#entries.get(name);
    if (hit && now - hit.at < this.maxAgeMs) return hit.value;
    const entry: Entry = { at: now, value: this.#store.get(name) };
    if (this.maxAgeMs > 0) this.#entries.set(name, entry);
    entry.value.catch(() => {
      if (this.#entries.get(name) === entry) this.#entries.delete(name);
    });
    return entry.value;
  }
}
