/**
 * The relay server's state: registered clusters (from the declared config), what each cluster's
 * agent discovered (its inventory), every cluster's desired state, and the live Sync sessions.
 * Recomputation after a config change or a discovery change that matters is coalesced (one run per
 * `debounceMs` burst) and only sessions whose cluster's desired state changed are woken; a session
 * then reads the *latest* desired state, so a slow agent never makes the server queue generations.
 * @module
 */
import type { Clock } from "../clock.ts";
import { GrpcStatus, PermissionDeniedError, UnavailableError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  type ClusterDesiredState,
  ClusterRegistry,
  type ConfigSource,
  DesiredStateTracker,
  discoveryChangeMatters,
  Inventory,
  type InventoryChange,
  type KubeObject,
  type ObjectKey,
  type ObjectStatus,
  readsDiscoveredContent,
  type ResourceVersion,
} from "../state/mod.ts";
import type { MetricsRegistry } from "./metrics.ts";
import { describeOversized, type DiscoveredUpsert, type OversizedObject } from "./wire.ts";

/** What the hub needs from a live Sync stream (implemented by the Sync service). */
export interface SyncSession {
  /** The cluster, as identified from the caller's credentials. */
  readonly cluster: string;
  /** The hub has a new desired state for this cluster, or started serving desired states. */
  desiredChanged(): void;
  /** Ends the stream now with a gRPC status code and a message for the agent (no secrets). */
  close(code: number, message: string): void;
}

/** What the hub knows about one cluster, for logs, metrics, status pages and tests. */
export interface ClusterStatus {
  cluster: string;
  /** A Sync stream is attached. */
  connected: boolean;
  /** The agent's build version from its Hello. */
  agentVersion?: string;
  connectedAt?: Date;
  /** A complete discovery push arrived in this server's lifetime. */
  warmed: boolean;
  inventoryObjects: number;
  /** Generation of the last discovery diff applied (per session; resets on reconnect). */
  discoveryGeneration?: number;
  /** Current desired-state generation. */
  desiredGeneration?: number;
  /** Desired-state generation last sent to the agent. */
  sentGeneration?: number;
  /** Generation of the last status report received. */
  reportedGeneration?: number;
  reportedAt?: Date;
  /** Per-object statuses: the agent's last report, plus objects the server could not send (too large). */
  statuses: ObjectStatus[];
  /** Number of `failed` entries in `statuses`. */
  failed: number;
  /** Problems computing this cluster's desired state (conflicting declarations). */
  conflicts: number;
}

/** Options of {@linkcode RelayHub}. */
export interface RelayHubOptions {
  config: ConfigSource;
  clock: Clock;
  log: Logger;
  metrics: MetricsRegistry;
  /** Quiet period that coalesces bursts of changes into one recomputation. Default 100 ms. */
  debounceMs?: number;
  /**
   * After a (re)start, desired states are held back until every registered cluster pushed its
   * discovery once, or this long passed: otherwise the first agent to reconnect would be told to
   * prune what other clusters' not-yet-pushed Services federate to it. Default 30,000 ms; 0 disables.
   */
  warmupMs?: number;
  /** First desired-state generation; default: the clock's Unix seconds, so a restarted server counts on. */
  firstGeneration?: number;
}

interface ClusterRecord {
  inventory: Inventory;
  warmed: boolean;
  discoveryGeneration?: number;
  agentVersion?: string;
  // Times as epoch milliseconds, not Dates: one record per cluster, thousands held.
  connectedAtMs?: number;
  sentGeneration?: number;
  oversized: OversizedObject[];
  report?: { generation: number; statuses: ObjectStatus[]; atMs: number };
}

/** Server-side state and fan-out of the relay. */
export class RelayHub {
  #opts: Required<Omit<RelayHubOptions, "firstGeneration">>;
  #log: Logger;
  #registry = new ClusterRegistry();
  #tracker: DesiredStateTracker;
  #configs: readonly KubeObject[] = [];
  #records = new Map<string, ClusterRecord>();
  #sessions = new Map<string, SyncSession>();
  #loaded = false;
  #recomputing = false;
  #shuttingDown = false;
  #serving = false;
  #dirty = false;
  #configDirty = false;
  #wake?: () => void;
  #lastErrors = "";
  #m: {
    generation: ReturnType<MetricsRegistry["gauge"]>;
    reconcile: ReturnType<MetricsRegistry["histogram"]>;
    pushes: ReturnType<MetricsRegistry["counter"]>;
    pushedObjects: ReturnType<MetricsRegistry["counter"]>;
    registered: ReturnType<MetricsRegistry["gauge"]>;
  };

  constructor(opts: RelayHubOptions) {
    this.#opts = { debounceMs: 100, warmupMs: 30_000, ...opts };
    this.#log = opts.log.child({ component: "relay-hub" });
    this.#tracker = new DesiredStateTracker({
      firstGeneration: opts.firstGeneration ?? Math.max(1, Math.floor(opts.clock.now().getTime() / 1000)),
    });
    const m = opts.metrics;
    this.#m = {
      generation: m.gauge("meshrelay_config_generation", "Current desired-state generation per cluster."),
      reconcile: m.histogram(
        "meshrelay_reconcile_duration_seconds",
        "Time to recompute every cluster's desired state after a change.",
      ),
      pushes: m.counter(
        "meshrelay_discovery_pushes_total",
        "Complete discovery diffs applied to inventories.",
      ),
      pushedObjects: m.counter(
        "meshrelay_discovery_objects_total",
        "Objects upserted or deleted by discovery diffs (including unchanged re-sends).",
      ),
      registered: m.gauge(
        "meshrelay_registered_clusters",
        "Clusters declared by KubernetesCluster documents.",
      ),
    };
  }

  /** The declared config was loaded and every desired state computed once. */
  get ready(): boolean {
    return this.#loaded;
  }

  /** No recomputation is pending or running: every change seen so far is in the desired states. */
  get idle(): boolean {
    return !this.#dirty && !this.#recomputing;
  }

  /** Desired states are being served (warm-up over). */
  get serving(): boolean {
    return this.#serving;
  }

  /** Reads the declared config and computes every desired state. Idempotent after the first success. */
  async load(signal?: AbortSignal): Promise<void> {
    if (this.#loaded) return;
    await this.#recompute(true, signal);
    this.#loaded = true;
    if (this.#opts.warmupMs <= 0) this.#startServing("warm-up disabled");
    else this.#checkWarm();
  }

  /**
   * Loads (if needed), then follows config changes and recomputes until `signal` aborts. The warm-up
   * timer starts here.
   */
  async run(signal: AbortSignal): Promise<void> {
    await this.load(signal);
    const tasks = [this.#worker(signal), this.#followConfig(signal)];
    if (!this.#serving) tasks.push(this.#warmupTimer(signal));
    await Promise.all(tasks);
  }

  /** Whether `cluster` is registered (a `KubernetesCluster` declares it). */
  isRegistered(cluster: string): boolean {
    return this.#registry.has(cluster);
  }

  /** The declared config documents last loaded (every kind, RootTrustPolicies included). */
  documents(): readonly KubeObject[] {
    return this.#configs;
  }

  /** Registered cluster names, sorted (shared and frozen: no copy per call). */
  clusters(): readonly string[] {
    return this.#registry.names();
  }

  /**
   * Makes `session` the cluster's live stream. An older stream of the same cluster is closed with
   * ABORTED: one stream per agent, and the newest is the one whose agent is alive.
   */
  attach(session: SyncSession, info: { agentVersion?: string } = {}): void {
    if (this.#shuttingDown) throw new UnavailableError("server shutting down");
    if (!this.#registry.has(session.cluster)) {
      throw new PermissionDeniedError(`cluster ${JSON.stringify(session.cluster)} is not registered`);
    }
    const old = this.#sessions.get(session.cluster);
    this.#sessions.set(session.cluster, session);
    if (old && old !== session) {
      this.#log.info("sync stream replaced by a newer one", { cluster: session.cluster });
      old.close(GrpcStatus.ABORTED, "replaced by a newer Sync stream for this cluster");
    }
    const rec = this.#record(session.cluster);
    rec.connectedAtMs = this.#opts.clock.now().getTime();
    rec.agentVersion = info.agentVersion;
    rec.discoveryGeneration = undefined;
    rec.sentGeneration = undefined;
  }

  /** Records the agent version once the Hello arrived. */
  setAgentVersion(session: SyncSession, agentVersion: string): void {
    if (this.#sessions.get(session.cluster) === session) {
      this.#record(session.cluster).agentVersion = agentVersion;
    }
  }

  /** Forgets `session` if it is still the cluster's live stream (a replaced one is not). */
  detach(session: SyncSession): void {
    if (this.#sessions.get(session.cluster) === session) this.#sessions.delete(session.cluster);
  }

  /** Whether `session` is the cluster's live stream. */
  isCurrent(session: SyncSession): boolean {
    return this.#sessions.get(session.cluster) === session;
  }

  /**
   * Ends the cluster's stream at once (revocation, deregistration) with `code` (default
   * PERMISSION_DENIED). Returns whether a stream was open.
   */
  disconnect(cluster: string, reason: string, code: number = GrpcStatus.PERMISSION_DENIED): boolean {
    const s = this.#sessions.get(cluster);
    if (!s) return false;
    this.#sessions.delete(cluster);
    this.#log.info("disconnecting cluster", { cluster, reason });
    s.close(code, reason);
    return true;
  }

  /**
   * Ends every stream and refuses new ones (server shutdown): agents see UNAVAILABLE and reconnect
   * with backoff, to this server's successor.
   */
  closeAll(reason = "server shutting down"): void {
    this.#shuttingDown = true;
    for (const c of [...this.#sessions.keys()]) this.disconnect(c, reason, GrpcStatus.UNAVAILABLE);
  }

  /** What the server holds of `cluster`'s discovered inventory: key → version (for the Welcome). */
  inventoryVersions(cluster: string): Map<ObjectKey, ResourceVersion> {
    return this.#record(cluster).inventory.versions();
  }

  /**
   * Applies a complete discovery diff from `cluster`'s agent. Returns the keys that really changed;
   * schedules a recomputation when one of them can alter a desired state. `partial`: more generations
   * of the same push follow, so the cluster does not count as warmed yet.
   */
  applyDiscovery(
    cluster: string,
    generation: number,
    diff: { upserts: readonly DiscoveredUpsert[]; deletes: readonly ObjectKey[] },
    partial = false,
  ): InventoryChange {
    if (!this.#registry.has(cluster)) {
      throw new PermissionDeniedError(`cluster ${JSON.stringify(cluster)} is not registered`);
    }
    const rec = this.#record(cluster);
    const change = rec.inventory.applyDiff(diff);
    rec.discoveryGeneration = generation;
    this.#m.pushes.inc();
    this.#m.pushedObjects.inc(undefined, diff.upserts.length + diff.deletes.length);
    // A push split into generations warms the cluster only when its last generation arrives: until
    // then the inventory lacks objects (Services other clusters federate) that the agent holds.
    const firstPush = !rec.warmed && !partial;
    if (!partial) rec.warmed = true;
    if (discoveryChangeMatters([...change.upserts, ...change.deletes])) this.requestRecompute();
    if (firstPush) this.#checkWarm();
    return change;
  }

  /** The desired state to send to `cluster`, or undefined while none is served (not loaded, warm-up). */
  desiredFor(cluster: string): ClusterDesiredState | undefined {
    if (!this.#serving) return undefined;
    return this.#tracker.get(cluster);
  }

  /** Notes what a session sent: a generation and the objects it could not send (too large). */
  recordSent(cluster: string, generation: number, oversized: OversizedObject[]): void {
    const rec = this.#record(cluster);
    rec.sentGeneration = generation;
    rec.oversized = oversized;
    for (const o of oversized) {
      this.#log.error(
        "desired object too large to send; it stays failed until it shrinks or the limit grows",
        {
          cluster,
          key: o.key,
          bytes: o.bytes,
          maxBytes: o.maxBytes,
        },
      );
    }
  }

  /** Keeps an agent's status report (the last one per cluster). */
  recordStatus(cluster: string, generation: number, statuses: ObjectStatus[]): void {
    const rec = this.#record(cluster);
    rec.report = { generation, statuses, atMs: this.#opts.clock.now().getTime() };
    const failed = statuses.filter((s) => s.state === "failed");
    const fields = {
      cluster,
      generation,
      applied: statuses.filter((s) => s.state === "applied").length,
      pruned: statuses.filter((s) => s.state === "pruned").length,
      failed: failed.length,
    };
    if (failed.length > 0) {
      this.#log.warn("agent reported failures", { ...fields, firstFailed: failed[0].key });
    } else this.#log.debug("agent reported status", fields);
  }

  /** Everything known about `cluster`, or undefined if it is neither registered nor seen. */
  status(cluster: string): ClusterStatus | undefined {
    if (!this.#registry.has(cluster) && !this.#records.has(cluster)) return undefined;
    const rec = this.#record(cluster);
    const oversized: ObjectStatus[] = rec.oversized.map((o) => ({
      key: o.key,
      state: "failed",
      message: describeOversized(o),
    }));
    const skip = new Set(oversized.map((s) => s.key));
    const statuses = [...(rec.report?.statuses.filter((s) => !skip.has(s.key)) ?? []), ...oversized]
      .sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
    const desired = this.#tracker.get(cluster);
    return {
      cluster,
      connected: this.#sessions.has(cluster),
      agentVersion: rec.agentVersion,
      connectedAt: dateOf(rec.connectedAtMs),
      warmed: rec.warmed,
      inventoryObjects: rec.inventory.size,
      discoveryGeneration: rec.discoveryGeneration,
      desiredGeneration: desired?.generation,
      sentGeneration: rec.sentGeneration,
      reportedGeneration: rec.report?.generation,
      reportedAt: dateOf(rec.report?.atMs),
      statuses,
      failed: statuses.filter((s) => s.state === "failed").length,
      conflicts: desired?.conflicts.length ?? 0,
    };
  }

  /** Asks for a recomputation (coalesced); `reloadConfig` re-reads the declared config first. */
  requestRecompute(reloadConfig = false): void {
    this.#dirty = true;
    this.#configDirty ||= reloadConfig;
    this.#wake?.();
  }

  /** Recomputes now, without debouncing (tests, and `load`). */
  async recomputeNow(reloadConfig = false, signal?: AbortSignal): Promise<void> {
    await this.#recompute(reloadConfig, signal);
  }

  #record(cluster: string): ClusterRecord {
    let r = this.#records.get(cluster);
    if (!r) {
      r = { inventory: new Inventory({ keepContent: readsDiscoveredContent }), warmed: false, oversized: [] };
      this.#records.set(cluster, r);
    }
    return r;
  }

  async #worker(signal: AbortSignal): Promise<void> {
    const onAbort = () => this.#wake?.();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      while (!signal.aborted) {
        if (!this.#dirty) {
          await new Promise<void>((r) => this.#wake = r);
          this.#wake = undefined;
          if (signal.aborted) return;
        }
        if (this.#opts.debounceMs > 0) {
          try {
            await this.#opts.clock.sleep(this.#opts.debounceMs, signal);
          } catch {
            return;
          }
        }
        const reload = this.#configDirty;
        this.#dirty = false;
        this.#configDirty = false;
        try {
          await this.#recompute(reload, signal);
        } catch (e) {
          if (signal.aborted) return;
          this.#log.error("recomputing desired state failed; keeping the previous state", {
            error: errText(e),
          });
          // The next change retries; a config read failure asks for the reload again.
          if (reload) this.#configDirty = true;
        }
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  async #followConfig(signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      try {
        for await (const _ of this.#opts.config.changes(signal)) {
          failures = 0;
          this.requestRecompute(true);
        }
        return;
      } catch (e) {
        if (signal.aborted) return;
        failures++;
        const waitMs = Math.min(30_000, 1000 * 2 ** Math.min(failures, 5));
        this.#log.error("watching the declared config failed; retrying", { error: errText(e), waitMs });
        try {
          await this.#opts.clock.sleep(waitMs, signal);
        } catch {
          return;
        }
        this.requestRecompute(true);
      }
    }
  }

  async #warmupTimer(signal: AbortSignal): Promise<void> {
    try {
      await this.#opts.clock.sleep(this.#opts.warmupMs, signal);
    } catch {
      return;
    }
    if (!this.#serving) {
      const cold = this.clusters().filter((c) => !this.#records.get(c)?.warmed);
      this.#startServing("warm-up time over", { notPushedYet: cold });
    }
  }

  #checkWarm(): void {
    if (this.#serving || !this.#loaded) return;
    // Counted, not listed: this runs on every cluster's first push, and `clusters()` copies every
    // registration — quadratic in a reconnect storm (12% of the server's CPU at 500 agents).
    let warmed = 0;
    for (const [name, rec] of this.#records) if (rec.warmed && this.#registry.has(name)) warmed++;
    if (warmed < this.#registry.size) return;
    // Serve states that already include every push, not the ones computed before the last arrived.
    this.#updateDesired(this.#opts.clock.now().getTime());
    this.#startServing("every cluster pushed");
  }

  #startServing(why: string, fields: Record<string, unknown> = {}): void {
    if (this.#serving) return;
    this.#serving = true;
    this.#log.info("serving desired state", { why, ...fields });
    for (const s of [...this.#sessions.values()]) s.desiredChanged();
  }

  async #recompute(reloadConfig: boolean, signal?: AbortSignal): Promise<void> {
    this.#recomputing = true;
    try {
      await this.#recomputeInner(reloadConfig, signal);
    } finally {
      this.#recomputing = false;
    }
  }

  async #recomputeInner(reloadConfig: boolean, signal?: AbortSignal): Promise<void> {
    const started = this.#opts.clock.now().getTime();
    if (reloadConfig) {
      const docs = await this.#opts.config.list(signal);
      signal?.throwIfAborted();
      this.#configs = docs;
      const change = this.#registry.update(docs);
      this.#m.registered.set(this.#registry.size);
      if (change.added.length + change.removed.length + change.updated.length > 0) {
        this.#log.info("cluster registry changed", { ...change });
      }
      for (const c of change.removed) {
        this.disconnect(c, "cluster deregistered", GrpcStatus.PERMISSION_DENIED);
        this.#records.delete(c);
      }
    }
    this.#updateDesired(started);
    if (reloadConfig) this.#checkWarm();
  }

  /** Recomputes every desired state from the current config and inventories; wakes changed clusters. */
  #updateDesired(started: number): void {
    const inventories = new Map<string, Inventory>();
    for (const c of this.clusters()) inventories.set(c, this.#record(c).inventory);
    const upd = this.#tracker.update(this.#registry.list(), this.#configs, inventories);
    const errors = upd.errors.join("\n");
    if (errors !== this.#lastErrors) {
      this.#lastErrors = errors;
      for (const e of upd.errors) this.#log.warn("declared config document skipped", { error: e });
    }
    for (const c of upd.removed) this.#m.generation.remove({ cluster: c });
    for (const st of upd.changed) {
      this.#m.generation.set(st.generation, { cluster: st.cluster });
      this.#log.info("desired state changed", {
        cluster: st.cluster,
        generation: st.generation,
        objects: st.items.size,
        conflicts: st.conflicts.length,
      });
      this.#sessions.get(st.cluster)?.desiredChanged();
    }
    this.#m.reconcile.observe((this.#opts.clock.now().getTime() - started) / 1000);
  }
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function dateOf(ms: number | undefined): Date | undefined {
  return ms === undefined ? undefined : new Date(ms);
}
