/**
 * The agent's side of `Relay.Sync`: a loop of sessions separated by backoff with full jitter.
 *
 * Discovery runs for the agent's whole life (snapshot, then watch; a `resync` event re-snapshots),
 * keeping `local` = what the cluster holds. Each session:
 * 1. dials (the injected factory runs on every attempt, so a rotated client certificate is used),
 * 2. sends Hello with what the applier still holds (chunked), receives Welcome with what the server
 *    holds of our inventory (chunked),
 * 3. pushes `diff(server view, local)` — only the difference — one generation at a time, each
 *    acknowledged by a DiscoveryAck before the next; changes made meanwhile coalesce,
 * 4. applies every complete desired diff (the full desired set, so the applier prunes) and reports
 *    per-object statuses, which also acknowledges the generation.
 * After a cut, nothing is replayed from memory: the next Hello/Welcome say what each side really
 * holds, so no change is lost or sent twice.
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import type { Clock } from "../clock.ts";
import { grpcDetailsText, GrpcStatus } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { AgentMessage, ServerMessage } from "../proto/mod.ts";
import {
  type Applier,
  applyVersionDiff,
  diffByVersion,
  type DiscoverySource,
  type KubeObject,
  type ObjectKey,
  objectKey,
  type ObjectStatus,
  type ResourceVersion,
  resourceVersionOf,
  type VersionDiff,
  versionedMap,
  type VersionedObject,
  type VersionedUpsert,
} from "../state/mod.ts";
import { Backoff, type BackoffOptions } from "./backoff.ts";
import type { MetricsRegistry } from "./metrics.ts";
import {
  checkMaxMessageBytes,
  chunkDiff,
  contentNeededBy,
  DEFAULT_MAX_MESSAGE_BYTES,
  describeOversized,
  DiffAssembler,
  DISCOVERY_PUSH_BYTES,
  HeldAssembler,
  helloMessages,
  statusMessages,
  toResource,
  toVersionOnlyResource,
} from "./wire.ts";

/** An open Sync stream and how to release what was built for it. */
export interface SyncStreamHandle {
  stream: grpc.ClientDuplexStream<AgentMessage, ServerMessage>;
  /** Called once when the session is over (e.g. closes a channel made for this attempt). */
  release?: () => void;
}

/**
 * Opens a Sync stream; called on every attempt, so it can build a channel with the current client
 * certificate (after a rotation) or reuse one. It may throw: that counts as a failed attempt.
 */
export type SyncDialer = (signal: AbortSignal) => SyncStreamHandle | Promise<SyncStreamHandle>;
// The factory must hand the stream over right after creating it (no await in between): the agent
// attaches its 'error' listener at once, and an 'error' without a listener would be uncaught.

/** How a session ended. */
export interface SessionEnd {
  /** gRPC status code (OK when stopped gracefully). */
  code: number;
  message: string;
  /** The session got fully in sync before it ended. */
  synced: boolean;
  /** Wait before the next attempt, ms (0 after `reconnect()` or when stopping). */
  nextDelayMs: number;
}

/** Options of {@linkcode SyncAgent}. */
export interface SyncAgentOptions {
  dial: SyncDialer;
  discovery: DiscoverySource;
  applier: Applier;
  clock: Clock;
  /** Uniform in [0, 1): backoff jitter. */
  random: () => number;
  log: Logger;
  metrics?: MetricsRegistry;
  /** Reported in Hello. */
  agentVersion: string;
  /** Largest message we send (the server's Welcome may lower it). Default 4 MiB. */
  maxMessageBytes?: number;
  backoff?: BackoffOptions;
  /** Most objects one incoming diff may hold. Default 500,000. */
  maxObjectsPerDiff?: number;
  /** On stop, how long to wait for the server to close after our half-close. Default 2000 ms. */
  stopGraceMs?: number;
  /** Told after every session (R1 uses it e.g. to re-bootstrap after UNAUTHENTICATED). */
  onSessionEnd?: (end: SessionEnd) => void;
}

/** Where the agent is. */
export type SyncAgentState = "idle" | "connecting" | "syncing" | "synced" | "backoff" | "stopped";

/** Counters, cumulative over the agent's life (tests and status output). */
export interface SyncAgentStats {
  sessions: number;
  syncedSessions: number;
  discoveryGenerationsSent: number;
  discoveryObjectsSent: number;
  discoveryDeletesSent: number;
  discoveryBytesSent: number;
  desiredGenerationsApplied: number;
  desiredObjectsReceived: number;
  desiredDeletesReceived: number;
  lastCode?: number;
  lastMessage?: string;
}

interface SessionState {
  stream: grpc.ClientDuplexStream<AgentMessage, ServerMessage>;
  closed: boolean;
  maxBytes: number;
  welcome: HeldAssembler;
  /** From the server's Welcome: whether a discovered object must be pushed whole (else its version). */
  contentNeeded: (key: ObjectKey) => boolean;
  desiredAsm: DiffAssembler;
  serverView?: Map<ObjectKey, ResourceVersion>;
  /** The discovery generation awaiting its ack; `partial`: more of the same push follow it. */
  inFlight?: { generation: number; sent: VersionDiff; partial: boolean };
  discoveryGeneration: number;
  sentInitial: boolean;
  acked: boolean;
  applied: boolean;
  synced: boolean;
  desiredHeld: Map<ObjectKey, VersionedObject>;
  inbox: Promise<void>;
  /** Resolved on 'drain' and on close. */
  drainWaiters: (() => void)[];
  /** Resolved on close. */
  closeWaiters: (() => void)[];
}

/** The agent's session loop. */
export class SyncAgent {
  #o: SyncAgentOptions;
  #log: Logger;
  #maxBytes: number;
  #backoff: Backoff;
  #state: SyncAgentState = "idle";
  #local = new Map<ObjectKey, VersionedObject>();
  #discoveryReady = false;
  #discoveryWaiters: (() => void)[] = [];
  #session?: SessionState;
  #reconnectRequested = false;
  /** Counts reconnect() calls, so one made while a session is being dialed is not lost. */
  #reconnectSeq = 0;
  #wakeBackoff?: AbortController;
  #oversizedLogged = new Set<string>();
  #stats: SyncAgentStats = {
    sessions: 0,
    syncedSessions: 0,
    discoveryGenerationsSent: 0,
    discoveryObjectsSent: 0,
    discoveryDeletesSent: 0,
    discoveryBytesSent: 0,
    desiredGenerationsApplied: 0,
    desiredObjectsReceived: 0,
    desiredDeletesReceived: 0,
  };
  #m?: {
    connected: ReturnType<MetricsRegistry["gauge"]>;
    sessions: ReturnType<MetricsRegistry["counter"]>;
    errors: ReturnType<MetricsRegistry["counter"]>;
    pushed: ReturnType<MetricsRegistry["counter"]>;
    generation: ReturnType<MetricsRegistry["gauge"]>;
    applyFailed: ReturnType<MetricsRegistry["counter"]>;
  };

  constructor(opts: SyncAgentOptions) {
    this.#o = opts;
    this.#log = opts.log.child({ component: "sync-agent" });
    this.#maxBytes = checkMaxMessageBytes(opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES);
    this.#backoff = new Backoff(opts.random, opts.backoff);
    const m = opts.metrics;
    if (m) {
      this.#m = {
        connected: m.gauge("meshrelay_agent_connected", "1 while a Sync stream to the server is in sync."),
        sessions: m.counter("meshrelay_agent_sessions_total", "Sync stream attempts."),
        errors: m.counter("meshrelay_stream_errors_total", "Sync streams that ended abnormally, by reason."),
        pushed: m.counter("meshrelay_discovery_pushes_total", "Discovery diffs sent and acknowledged."),
        generation: m.gauge("meshrelay_agent_desired_generation", "Last desired-state generation applied."),
        applyFailed: m.counter(
          "meshrelay_agent_apply_failures_total",
          "Objects the applier reported failed.",
        ),
      };
      this.#m.connected.set(0);
    }
  }

  /** Current state. */
  get state(): SyncAgentState {
    return this.#state;
  }

  /** Cumulative counters (a copy). */
  get stats(): SyncAgentStats {
    return { ...this.#stats };
  }

  /** What the agent currently discovered: key → version (tests compare it with the server's inventory). */
  discovered(): Map<ObjectKey, ResourceVersion> {
    return new Map([...this.#local].map(([k, v]) => [k, v.version]));
  }

  /**
   * Ends the current session and dials again at once, without backoff (e.g. after the client
   * certificate was renewed, so the new one is used). A no-op when stopped.
   */
  reconnect(reason = "reconnect requested"): void {
    if (this.#state === "stopped") return;
    this.#reconnectRequested = true;
    this.#reconnectSeq++;
    this.#log.info("reconnecting", { reason });
    const s = this.#session;
    if (s && !s.closed) this.#cancel(s);
    this.#wakeBackoff?.abort();
  }

  /** Runs discovery and sessions until `signal` aborts; never rejects for network or server errors. */
  async run(signal: AbortSignal): Promise<void> {
    const discovery = this.#discoveryLoop(signal);
    try {
      while (!signal.aborted) {
        let end: SessionEnd;
        try {
          end = await this.#runSession(signal);
        } catch (e) {
          end = { code: GrpcStatus.UNAVAILABLE, message: errText(e), synced: false, nextDelayMs: 0 };
        }
        if (signal.aborted) break;
        if (end.synced) this.#backoff.reset();
        const delay = this.#reconnectRequested ? 0 : this.#backoff.next();
        this.#reconnectRequested = false;
        end.nextDelayMs = delay;
        this.#stats.lastCode = end.code;
        this.#stats.lastMessage = end.message;
        const refused = end.code === GrpcStatus.PERMISSION_DENIED || end.code === GrpcStatus.UNAUTHENTICATED;
        this.#log[refused ? "error" : "warn"]("sync session ended; retrying", {
          code: end.code,
          message: end.message,
          synced: end.synced,
          retryInMs: delay,
        });
        try {
          this.#o.onSessionEnd?.(end);
        } catch (e) {
          this.#log.error("onSessionEnd hook failed", { error: errText(e) });
        }
        if (delay > 0) {
          this.#state = "backoff";
          this.#wakeBackoff = new AbortController();
          try {
            await this.#o.clock.sleep(delay, AbortSignal.any([signal, this.#wakeBackoff.signal]));
          } catch {
            // reconnect() or stop
          }
          this.#wakeBackoff = undefined;
          this.#reconnectRequested = false;
        }
      }
    } finally {
      this.#state = "stopped";
      this.#m?.connected.set(0);
      for (const w of this.#discoveryWaiters.splice(0)) w();
      await discovery;
    }
  }

  // ---------------------------------------------------------------- discovery

  async #discoveryLoop(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff(this.#o.random, { initialMs: 1000, maxMs: 30_000 });
    while (!signal.aborted) {
      try {
        this.#setLocal(await this.#o.discovery.snapshot(signal));
        for await (const ev of this.#o.discovery.watch(signal)) {
          if (ev.type === "resync") {
            this.#log.info("discovery lost track; taking a new snapshot");
            this.#setLocal(await this.#o.discovery.snapshot(signal));
          } else if (ev.type === "upsert") {
            this.#local.set(objectKey(ev.object), {
              object: ev.object,
              version: resourceVersionOf(ev.object),
            });
          } else {
            this.#local.delete(ev.key);
          }
          this.#kickDiscovery();
        }
        return;
      } catch (e) {
        if (signal.aborted) return;
        const waitMs = backoff.next();
        this.#log.error("discovery failed; retrying", { error: errText(e), waitMs });
        await this.#o.clock.sleep(waitMs, signal).catch(() => {});
      }
    }
  }

  #setLocal(objects: KubeObject[]): void {
    this.#local = versionedMap(objects);
    if (!this.#discoveryReady) {
      this.#discoveryReady = true;
      for (const w of this.#discoveryWaiters.splice(0)) w();
    }
    this.#kickDiscovery();
  }

  // ---------------------------------------------------------------- one session

  async #runSession(signal: AbortSignal): Promise<SessionEnd> {
    this.#state = "connecting";
    this.#stats.sessions++;
    this.#m?.sessions.inc();
    // Never push before the first snapshot: an empty `local` would tell the server to delete everything.
    if (!this.#discoveryReady) {
      await new Promise<void>((r) => this.#discoveryWaiters.push(r));
      if (signal.aborted) return { code: GrpcStatus.OK, message: "stopped", synced: false, nextDelayMs: 0 };
    }
    const seq = this.#reconnectSeq;
    // Read before dialing: the stream must get its listeners before we wait for anything.
    const held = this.#o.applier.held
      ? await this.#o.applier.held(signal).catch((e) => {
        this.#log.warn("reading what the applier holds failed; asking for everything", { error: errText(e) });
        return new Map<ObjectKey, VersionedObject>();
      })
      : new Map<ObjectKey, VersionedObject>();
    const attempt = new AbortController();
    const onAbort = () => attempt.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    let handle: SyncStreamHandle;
    try {
      handle = await this.#o.dial(attempt.signal);
    } catch (e) {
      signal.removeEventListener("abort", onAbort);
      return {
        code: GrpcStatus.UNAVAILABLE,
        message: `dial failed: ${errText(e)}`,
        synced: false,
        nextDelayMs: 0,
      };
    }
    const s: SessionState = {
      stream: handle.stream,
      closed: false,
      maxBytes: this.#maxBytes,
      welcome: new HeldAssembler("Welcome", this.#o.maxObjectsPerDiff ?? 500_000),
      contentNeeded: () => true,
      desiredAsm: new DiffAssembler("desired", this.#o.maxObjectsPerDiff ?? 500_000),
      discoveryGeneration: 0,
      sentInitial: false,
      acked: false,
      applied: false,
      synced: false,
      desiredHeld: new Map(held),
      inbox: Promise.resolve(),
      drainWaiters: [],
      closeWaiters: [],
    };
    this.#session = s;
    this.#state = "syncing";
    const ended = new Promise<{ code: number; message: string }>((resolve) => {
      let done = false;
      const finish = (code: number, message: string) => {
        if (done) return;
        done = true;
        s.closed = true;
        for (const f of [...s.drainWaiters.splice(0), ...s.closeWaiters.splice(0)]) f();
        if (code !== GrpcStatus.OK && !signal.aborted) this.#m?.errors.inc({ reason: codeName(code) });
        resolve({ code, message: grpcDetailsText(message) });
      };
      s.stream.on("data", (msg: ServerMessage) => {
        s.inbox = s.inbox.then(() => this.#onMessage(s, msg, signal)).catch((e) => {
          this.#log.warn("protocol error from server; ending the session", { error: errText(e) });
          finish(GrpcStatus.INTERNAL, `protocol error: ${errText(e)}`);
          this.#cancel(s);
        });
      });
      s.stream.on(
        "error",
        (e: grpc.ServiceError) => finish(e.code ?? GrpcStatus.UNKNOWN, e.details ?? errText(e)),
      );
      s.stream.on("status", (st: grpc.StatusObject) => finish(st.code, st.details));
      s.stream.on("close", () => finish(GrpcStatus.UNAVAILABLE, "stream closed"));
      s.stream.on("drain", () => {
        for (const f of s.drainWaiters.splice(0)) f();
      });
    });
    const stop = () => void this.#stop(s);
    signal.addEventListener("abort", stop, { once: true });
    // Stopped or asked to reconnect while dialing: end this stream at once (a listener added to an
    // already aborted signal would never run).
    if (signal.aborted) stop();
    else if (seq !== this.#reconnectSeq) this.#cancel(s);
    try {
      if (!signal.aborted) {
        for (const msg of helloMessages(this.#o.agentVersion, versionsOf(s.desiredHeld), s.maxBytes)) {
          await this.#write(s, msg);
        }
      }
      const result = await ended;
      // Let an apply in progress finish before the next Hello reads what the applier holds.
      await s.inbox.catch(() => {});
      return { ...result, synced: s.synced, nextDelayMs: 0 };
    } finally {
      signal.removeEventListener("abort", onAbort);
      signal.removeEventListener("abort", stop);
      if (!s.closed) this.#cancel(s);
      s.closed = true;
      if (s.synced) this.#m?.connected.set(0);
      this.#session = undefined;
      if (!signal.aborted) this.#state = "connecting";
      try {
        handle.release?.();
      } catch (e) {
        this.#log.debug("releasing the connection failed", { error: errText(e) });
      }
    }
  }

  async #onMessage(s: SessionState, msg: ServerMessage, signal: AbortSignal): Promise<void> {
    if (s.closed) return;
    if (msg.welcome) {
      const inv = s.welcome.add(msg.welcome.inventory, msg.welcome.more);
      if (!inv) return;
      if (msg.welcome.maxMessageBytes > 0) s.maxBytes = Math.min(s.maxBytes, msg.welcome.maxMessageBytes);
      s.contentNeeded = contentNeededBy(msg.welcome);
      s.serverView = new Map(inv);
      this.#log.info("connected", { cluster: msg.welcome.cluster, serverHolds: inv.size });
      this.#kickDiscovery();
    } else if (msg.discoveryAck) {
      if (!s.inFlight || msg.discoveryAck.generation !== s.inFlight.generation) {
        throw new Error(`unexpected DiscoveryAck for generation ${msg.discoveryAck.generation}`);
      }
      // Applied in place: nothing else changes the view while a generation is in flight, and copying it
      // per generation would make a large push, split into many, quadratic.
      const view = s.serverView!;
      for (const k of s.inFlight.sent.deletes) view.delete(k);
      for (const u of s.inFlight.sent.upserts) view.set(u.key, u.version);
      // In sync only once the server has the whole push, not the first generations of a split one.
      if (!s.inFlight.partial) s.acked = true;
      s.inFlight = undefined;
      this.#m?.pushed.inc();
      this.#checkSynced(s);
      this.#kickDiscovery();
    } else if (msg.desired) {
      const done = s.desiredAsm.add(msg.desired);
      if (!done) return;
      this.#stats.desiredObjectsReceived += done.diff.upserts.length;
      this.#stats.desiredDeletesReceived += done.diff.deletes.length;
      s.desiredHeld = applyVersionDiff(s.desiredHeld, done.diff);
      let statuses: ObjectStatus[];
      try {
        // The run signal, not the session's: a cut stream must not interrupt a write to the backend.
        statuses = await this.#o.applier.apply([...s.desiredHeld.values()].map((v) => v.object), signal);
      } catch (e) {
        this.#log.error("applying desired state failed", { generation: done.generation, error: errText(e) });
        statuses = [...s.desiredHeld.keys()].map((key) => ({ key, state: "failed", message: errText(e) }));
      }
      const failed = statuses.filter((x) => x.state === "failed");
      if (failed.length > 0) this.#m?.applyFailed.inc(undefined, failed.length);
      this.#stats.desiredGenerationsApplied++;
      this.#m?.generation.set(done.generation);
      this.#log.info("desired state applied", {
        generation: done.generation,
        objects: s.desiredHeld.size,
        upserts: done.diff.upserts.length,
        deletes: done.diff.deletes.length,
        failed: failed.length,
      });
      for (const m of statusMessages(done.generation, statuses, s.maxBytes)) await this.#write(s, m);
      s.applied = true;
      this.#checkSynced(s);
    } else {
      throw new Error("empty ServerMessage");
    }
  }

  #checkSynced(s: SessionState): void {
    if (s.synced || !s.acked || !s.applied || s.closed) return;
    s.synced = true;
    this.#state = "synced";
    this.#stats.syncedSessions++;
    this.#backoff.reset();
    this.#m?.connected.set(1);
    this.#log.info("in sync with the server");
  }

  /** Sends the discovery difference if the server view is known and nothing is in flight. */
  #kickDiscovery(): void {
    const s = this.#session;
    if (!s || s.closed || !s.serverView || s.inFlight || !this.#discoveryReady) return;
    const diff = diffByVersion(s.serverView, this.#local);
    if (s.sentInitial && diff.upserts.length === 0 && diff.deletes.length === 0) return;
    const generation = ++s.discoveryGeneration;
    const encode = (u: VersionedUpsert) => s.contentNeeded(u.key) ? toResource(u) : toVersionOnlyResource(u);
    const out = chunkDiff(diff, generation, s.maxBytes, encode, DISCOVERY_PUSH_BYTES);
    for (const o of out.oversized) {
      const id = `${o.key}@${this.#local.get(o.key)?.version}`;
      if (this.#oversizedLogged.has(id)) continue;
      this.#oversizedLogged.add(id);
      this.#log.error("discovered object too large to push; the server will not see it", {
        key: o.key,
        error: describeOversized(o),
      });
    }
    // Objects left out as oversized stay out of the server view, so they must not make every diff non-empty.
    if (s.sentInitial && out.sent.upserts.length === 0 && out.sent.deletes.length === 0) {
      s.discoveryGeneration--;
      return;
    }
    s.inFlight = { generation, sent: out.sent, partial: out.deferred };
    s.sentInitial = true;
    this.#stats.discoveryGenerationsSent++;
    this.#stats.discoveryObjectsSent += out.sent.upserts.length;
    this.#stats.discoveryDeletesSent += out.sent.deletes.length;
    this.#stats.discoveryBytesSent += out.bytes;
    (async () => {
      for (const chunk of out.chunks) {
        await this.#write(s, { discovery: chunk });
        if (s.closed) return;
      }
    })().catch((e) => this.#log.debug("discovery push interrupted", { error: errText(e) }));
  }

  /** Writes one message, waiting for the transport to drain when its buffer is full. */
  async #write(s: SessionState, msg: AgentMessage): Promise<void> {
    if (s.closed) return;
    let ok: boolean;
    try {
      ok = s.stream.write(msg);
    } catch {
      this.#cancel(s);
      return;
    }
    if (ok || s.closed) return;
    await new Promise<void>((r) => s.drainWaiters.push(r));
  }

  #cancel(s: SessionState): void {
    try {
      s.stream.cancel();
    } catch {
      // already gone
    }
  }

  /** Graceful stop: half-close so the server ends the stream with OK; cancel if it does not in time. */
  async #stop(s: SessionState): Promise<void> {
    if (s.closed) return;
    try {
      s.stream.end();
    } catch {
      this.#cancel(s);
      return;
    }
    const grace = this.#o.stopGraceMs ?? 2000;
    if (grace > 0) {
      const giveUp = new AbortController();
      const closed = new Promise<void>((r) => s.closeWaiters.push(r));
      await Promise.race([closed, this.#o.clock.sleep(grace, giveUp.signal).catch(() => {})]);
      giveUp.abort();
    }
    if (!s.closed) this.#cancel(s);
  }
}

const CODE_NAMES = new Map<number, string>(
  Object.entries(GrpcStatus).map(([name, code]) => [code, name.toLowerCase()]),
);

function codeName(code: number): string {
  return CODE_NAMES.get(code) ?? `code_${code}`;
}

function versionsOf(m: ReadonlyMap<ObjectKey, VersionedObject>): Map<ObjectKey, ResourceVersion> {
  return new Map([...m].map(([k, v]) => [k, v.version]));
}

function errText(e: unknown): string {
  if (
    e && typeof e === "object" && "details" in e && typeof (e as { details: unknown }).details === "string"
  ) {
    return (e as { details: string }).details;
  }
  return e instanceof Error ? e.message : String(e);
}
