/**
 * Admission control for expensive calls (certificate signing): at most `maxConcurrent` run at once, up
 * to `maxQueued` more wait in FIFO order, each at most `maxWaitMs`; beyond that a call is refused at once
 * with ResourceExhaustedError. Without it, thousands of concurrent Bootstraps all start signing, share
 * the CPU, and all run past their deadline; with it, most are served quickly and the rest are told to
 * come back later (agents retry with backoff and jitter).
 *
 * Waits go through the injected clock (tests use FakeClock). A waiter whose signal aborts (the client
 * went away, its deadline passed) leaves the queue at once, so abandoned calls never take a slot. A
 * freed slot passes straight to the head of the queue: a newcomer cannot overtake a waiter.
 * @module
 */
import type { Clock } from "../clock.ts";
import { InvalidInputError, ResourceExhaustedError } from "../errors.ts";
import type { Counter, Gauge, Histogram, MetricsRegistry } from "./metrics.ts";
import { definedOnly } from "./server_material.ts";

/** Limits of an {@linkcode AdmissionGate}. */
export interface AdmissionLimits {
  /** Calls running at once. Default 8 (a signature costs 3–4 ms of CPU; a few per core keep it busy). */
  maxConcurrent?: number;
  /** Calls waiting for a slot; 0 refuses at once whenever all slots are taken. Default 2,000. */
  maxQueued?: number;
  /** Longest wait in the queue, ms. Default 20,000 (well below the agent's 60 s call deadline). */
  maxWaitMs?: number;
}

/** Defaults of {@linkcode AdmissionLimits}. */
export const DEFAULT_ADMISSION: Required<AdmissionLimits> = {
  maxConcurrent: 8,
  maxQueued: 2_000,
  maxWaitMs: 20_000,
};

/** Options of {@linkcode AdmissionGate}. */
export interface AdmissionGateOptions extends AdmissionLimits {
  clock: Clock;
  /** Message of the refusal (no secrets). Default "server busy, retry later". */
  busyMessage?: string;
  metrics?: MetricsRegistry;
  /** The `gate` label of the metrics. Default "signing". */
  name?: string;
}

/** Checks `limits` and fills in the defaults; InvalidInputError names the bad field. */
export function resolveAdmissionLimits(limits: AdmissionLimits = {}): Required<AdmissionLimits> {
  const given: AdmissionLimits = {
    maxConcurrent: limits.maxConcurrent,
    maxQueued: limits.maxQueued,
    maxWaitMs: limits.maxWaitMs,
  };
  const o = { ...DEFAULT_ADMISSION, ...definedOnly(given) };
  if (!Number.isSafeInteger(o.maxConcurrent) || o.maxConcurrent < 1) {
    throw new InvalidInputError(`maxConcurrent must be a whole number of at least 1, got ${o.maxConcurrent}`);
  }
  if (!Number.isSafeInteger(o.maxQueued) || o.maxQueued < 0) {
    throw new InvalidInputError(`maxQueued must be a whole number of at least 0, got ${o.maxQueued}`);
  }
  if (!(o.maxWaitMs > 0) || !Number.isFinite(o.maxWaitMs)) {
    throw new InvalidInputError(`maxWaitMs must be a positive number of milliseconds, got ${o.maxWaitMs}`);
  }
  return o;
}

interface Waiter {
  /** Hands the waiter a slot (already counted in flight). */
  admit(): void;
}

/** Bounded concurrency with a bounded FIFO queue (see the module comment). */
export class AdmissionGate {
  readonly limits: Required<AdmissionLimits>;
  #clock: Clock;
  #busy: string;
  #inFlight = 0;
  /** Insertion-ordered: the first entry is the head of the queue; deleting any entry is O(1). */
  #queue = new Set<Waiter>();
  #labels: { gate: string };
  #refusals = new WeakSet<Error>();
  #m?: { inFlight: Gauge; queued: Gauge; refused: Counter; wait: Histogram };

  constructor(opts: AdmissionGateOptions) {
    this.limits = resolveAdmissionLimits(opts);
    this.#clock = opts.clock;
    this.#busy = opts.busyMessage ?? "server busy, retry later";
    this.#labels = { gate: opts.name ?? "signing" };
    if (opts.metrics) {
      this.#m = {
        inFlight: opts.metrics.gauge("meshrelay_admission_in_flight", "Admitted calls running now, by gate."),
        queued: opts.metrics.gauge("meshrelay_admission_queued", "Calls waiting for admission, by gate."),
        refused: opts.metrics.counter(
          "meshrelay_admission_refused_total",
          "Calls refused as busy (RESOURCE_EXHAUSTED), by gate and reason (queue_full, wait_expired).",
        ),
        wait: opts.metrics.histogram(
          "meshrelay_admission_wait_seconds",
          "Time admitted calls waited in the queue, by gate.",
        ),
      };
      this.#gauges();
    }
  }

  /** Calls running now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Calls waiting now. */
  get queued(): number {
    return this.#queue.size;
  }

  /** Whether `e` is a busy refusal of this gate (callers log those quietly: they are load, not faults). */
  refused(e: unknown): boolean {
    return e instanceof Error && this.#refusals.has(e);
  }

  /**
   * Runs `fn` once a slot is free, and frees the slot when it settles (also when it throws). Rejects
   * with ResourceExhaustedError when the queue is full or the wait runs out, and with the signal's
   * reason when `signal` aborts before `fn` starts (a started `fn` runs to its end).
   */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.#acquire(signal);
    try {
      return await fn();
    } finally {
      this.#release();
    }
  }

  #acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#inFlight < this.limits.maxConcurrent && this.#queue.size === 0) {
      this.#inFlight++;
      this.#m?.wait.observe(0, this.#labels);
      this.#gauges();
      return Promise.resolve();
    }
    if (this.#queue.size >= this.limits.maxQueued) return this.#refuse("queue_full");
    const since = this.#clock.now().getTime();
    return new Promise<void>((resolve, reject) => {
      const timer = new AbortController();
      let settled = false;
      const settle = () => {
        settled = true;
        timer.abort();
        signal?.removeEventListener("abort", onAbort);
      };
      const waiter: Waiter = {
        admit: () => {
          if (settled) return;
          settle();
          this.#m?.wait.observe((this.#clock.now().getTime() - since) / 1000, this.#labels);
          resolve();
        },
      };
      const leave = (why: () => Promise<void>) => {
        if (settled) return;
        settle();
        this.#queue.delete(waiter);
        this.#gauges();
        why().then(resolve, reject);
      };
      const onAbort = () => leave(() => Promise.reject(signal!.reason));
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue.add(waiter);
      this.#gauges();
      this.#clock.sleep(this.limits.maxWaitMs, timer.signal).then(
        () => leave(() => this.#refuse("wait_expired")),
        () => {/* admitted or cancelled first */},
      );
    });
  }

  #release(): void {
    const next = this.#queue.values().next();
    if (next.done) {
      this.#inFlight--;
    } else {
      // The slot passes to the head of the queue without ever looking free to a newcomer.
      this.#queue.delete(next.value);
      next.value.admit();
    }
    this.#gauges();
  }

  #refuse(reason: "queue_full" | "wait_expired"): Promise<never> {
    this.#m?.refused.inc({ ...this.#labels, reason });
    const e = new ResourceExhaustedError(this.#busy);
    this.#refusals.add(e);
    return Promise.reject(e);
  }

  #gauges(): void {
    this.#m?.inFlight.set(this.#inFlight, this.#labels);
    this.#m?.queued.set(this.#queue.size, this.#labels);
  }
}
