/**
 * The server side of `Relay.Sync`: one stream per agent. The cluster comes only from the injected
 * `identify` (the client certificate's SAN in mTLS; call metadata in insecure test setups), never
 * from a message. Resync by difference both ways:
 *
 * - server → agent: Welcome (chunked) lists the inventory versions the server holds for the
 *   cluster; the agent then pushes only the discovery difference, acknowledged per generation.
 * - agent → server: Hello (chunked) lists what the agent's applier holds; the server sends only the
 *   desired difference, then one diff per new desired generation. At most one desired generation is
 *   unacknowledged (the agent's StatusReport acknowledges it); meanwhile changes coalesce into the
 *   latest desired state, so a slow agent costs a map of versions, not a queue.
 *
 * Every handler catches: a broken or vanished peer ends its own session, never the process.
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import type { Clock } from "../clock.ts";
import { GrpcStatus, grpcStatusOf, InvalidInputError, MeshrelayError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type AgentMessage, type RelayServer, RelayService, type ServerMessage } from "../proto/mod.ts";
import {
  diffByVersion,
  DISCOVERED_CONTENT_KEY_PREFIXES,
  type ObjectKey,
  readsDiscoveredContent,
  type ResourceVersion,
} from "../state/mod.ts";
import type { MetricsRegistry } from "./metrics.ts";
import { connectionDestroyedUnder, grpcRefusalOf, logRefusal } from "./grpc_refusals.ts";
import type { RelayHub, SyncSession } from "./relay_hub.ts";
import {
  checkMaxMessageBytes,
  chunkDiff,
  DEFAULT_MAX_MESSAGE_BYTES,
  DiscoveryAssembler,
  HeldAssembler,
  SharedResourceEncoder,
  StatusAssembler,
  welcomeMessages,
} from "./wire.ts";

/** Who is calling: the cluster from the caller's credentials. Throws AuthenticationError / PermissionDeniedError. */
export type Identify = (
  // deno-lint-ignore no-explicit-any
  call: grpc.ServerDuplexStream<any, any> | grpc.ServerUnaryCall<any, any>,
) => Promise<{ cluster: string; serial?: string; notAfter?: Date }>;

/** Options of {@linkcode createSyncHandler}. */
export interface SyncServiceOptions {
  hub: RelayHub;
  identify: Identify;
  /** Time source (session durations in logs). */
  clock: Clock;
  log: Logger;
  metrics: MetricsRegistry;
  /** Largest message sent or accepted (configure gRPC with `grpcMessageOptions` to match). Default 4 MiB. */
  maxMessageBytes?: number;
  /** Most objects one pending diff (or Hello) may carry, bounding memory per stream. Default 500,000. */
  maxObjectsPerDiff?: number;
}

/** Counters and gauges of the Sync service (names the seeds' users alert on). */
function syncMetrics(m: MetricsRegistry) {
  return {
    push: m.gauge("relay_push_clients_connected", "Agents with an identified Sync stream (discovery push)."),
    pull: m.gauge("relay_pull_clients_connected", "Agents whose Hello arrived (desired-state pull)."),
    warmed: m.gauge(
      "relay_push_clients_warmed",
      "Agents whose first discovery push of the stream was applied.",
    ),
    errors: m.counter("meshrelay_stream_errors_total", "Sync streams that ended abnormally, by reason."),
    sentObjects: m.counter(
      "meshrelay_sync_objects_sent_total",
      "Objects sent in desired-state diffs (upserts).",
    ),
    sentDeletes: m.counter("meshrelay_sync_deletes_sent_total", "Keys deleted in desired-state diffs."),
    sentBytes: m.counter(
      "meshrelay_sync_bytes_sent_total",
      "Encoded bytes of objects and keys sent in diffs.",
    ),
    oversized: m.counter("meshrelay_sync_oversized_total", "Desired objects too large for one message."),
    streams: m.counter("meshrelay_sync_streams_total", "Sync streams accepted (identified and registered)."),
  };
}

let nextSessionId = 1;

/**
 * The `sync` handler for grpc-js (`server.addService(RelayService, relayServiceImpl(opts))`). Never
 * throws out of an event handler.
 */
export function createSyncHandler(
  opts: SyncServiceOptions,
): grpc.handleBidiStreamingCall<AgentMessage, ServerMessage> {
  const maxBytes = checkMaxMessageBytes(opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES);
  const maxObjects = opts.maxObjectsPerDiff ?? 500_000;
  const log = opts.log.child({ component: "sync-service" });
  // One deps object for every session (thousands of them), not a copy each.
  const deps: SessionDeps = {
    ...opts,
    log,
    maxBytes,
    maxObjects,
    m: syncMetrics(opts.metrics),
    encoder: new SharedResourceEncoder(),
  };
  return (call) => {
    const session = new ServerSyncSession(call, deps);
    session.start();
  };
}

/** The Relay service implementation for `server.addService(RelayService, …)`. */
export function relayServiceImpl(opts: SyncServiceOptions): RelayServer {
  return { sync: createSyncHandler(opts) };
}

interface SessionDeps extends SyncServiceOptions {
  maxBytes: number;
  maxObjects: number;
  m: ReturnType<typeof syncMetrics>;
  encoder: SharedResourceEncoder;
}

class ServerSyncSession implements SyncSession {
  readonly id = nextSessionId++;
  cluster = "";
  #call: grpc.ServerDuplexStream<AgentMessage, ServerMessage>;
  #d: SessionDeps;
  #log: Logger;
  #closed = false;
  #attached = false;
  #openedAt = 0;
  #pulling = false;
  #warmed = false;
  // Made on first use and the Hello's dropped once complete: a server holds thousands of sessions.
  #hello?: HeldAssembler;
  #discovery?: DiscoveryAssembler;
  #status?: StatusAssembler;
  /** What the agent holds of its desired state, as far as we sent it (key → version). */
  #agentView?: Map<ObjectKey, ResourceVersion>;
  #awaitingStatus?: number;
  #lastSentGeneration?: number;
  #pumping = false;
  #pumpAgain = false;
  #onClose?: (() => void)[];

  constructor(call: grpc.ServerDuplexStream<AgentMessage, ServerMessage>, deps: SessionDeps) {
    this.#call = call;
    this.#d = deps;
    this.#log = deps.log.child({ stream: this.id });
  }

  start(): void {
    // Listeners first: a peer can vanish while we are still identifying it.
    this.#call.on("error", (e) => this.#ended("error", e));
    this.#call.on("cancelled", () => this.#ended("cancelled"));
    this.#call.on("end", () => this.#ended("end"));
    this.#identify().catch((e) => this.#fail(e, "internal"));
  }

  async #identify(): Promise<void> {
    let cluster: string;
    try {
      ({ cluster } = await this.#d.identify(this.#call));
    } catch (e) {
      this.#fail(e, "identify");
      return;
    }
    if (this.#closed) return;
    this.cluster = cluster;
    this.#log = this.#d.log.child({ stream: this.id, cluster });
    if (!this.#d.hub.ready) {
      this.close(GrpcStatus.UNAVAILABLE, "server is starting: declared config not loaded yet", "not_ready");
      return;
    }
    if (!this.#d.hub.isRegistered(cluster)) {
      this.close(
        GrpcStatus.PERMISSION_DENIED,
        `cluster ${JSON.stringify(cluster)} is not registered`,
        "not_registered",
      );
      return;
    }
    this.#d.hub.attach(this);
    this.#attached = true;
    this.#openedAt = this.#d.clock.now().getTime();
    this.#d.m.push.inc();
    this.#d.m.streams.inc();
    this.#log.info("sync stream open");
    for (
      const msg of welcomeMessages(
        cluster,
        this.#d.hub.inventoryVersions(cluster),
        this.#d.maxBytes,
        DISCOVERED_CONTENT_KEY_PREFIXES,
      )
    ) {
      await this.#write(msg);
      if (this.#closed) return;
    }
    this.#call.on("data", (msg: AgentMessage) => {
      try {
        this.#onMessage(msg);
      } catch (e) {
        this.#fail(e, "protocol");
      }
    });
  }

  #onMessage(msg: AgentMessage): void {
    if (this.#closed) return;
    if (msg.hello) {
      if (this.#agentView) throw new InvalidInputError("Hello received after it was complete");
      this.#hello ??= new HeldAssembler("Hello", this.#d.maxObjects);
      const held = this.#hello.add(msg.hello.applied, msg.hello.more);
      if (held) {
        this.#hello = undefined;
        this.#agentView = held;
        this.#d.hub.setAgentVersion(this, msg.hello.agentVersion);
        this.#pulling = true;
        this.#d.m.pull.inc();
        this.#log.info("agent hello", { agentVersion: msg.hello.agentVersion, holds: held.size });
        this.desiredChanged();
      }
    } else if (msg.discovery) {
      this.#discovery ??= new DiscoveryAssembler(this.#d.maxObjects, versionSuffices);
      const done = this.#discovery.add(msg.discovery);
      if (!done) return;
      const change = this.#d.hub.applyDiscovery(this.cluster, done.generation, done.diff, done.partial);
      this.#log.debug("discovery applied", {
        generation: done.generation,
        upserts: done.diff.upserts.length,
        deletes: done.diff.deletes.length,
        changed: change.upserts.length + change.deletes.length,
      });
      if (!this.#warmed && !done.partial) {
        this.#warmed = true;
        this.#d.m.warmed.inc();
      }
      void this.#write({ discoveryAck: { generation: done.generation } });
    } else if (msg.status) {
      this.#status ??= new StatusAssembler(this.#d.maxObjects);
      const report = this.#status.add(msg.status);
      if (!report) return;
      this.#d.hub.recordStatus(this.cluster, report.generation, report.statuses);
      if (this.#awaitingStatus !== undefined && report.generation >= this.#awaitingStatus) {
        this.#awaitingStatus = undefined;
        this.desiredChanged();
      }
    } else {
      throw new EmptyMessageError();
    }
  }

  /** Sends the latest desired state's difference if the agent is ready for it; coalesces calls. */
  desiredChanged(): void {
    if (this.#closed || this.#agentView === undefined) return;
    this.#pumpAgain = true;
    if (this.#pumping) return;
    this.#pumping = true;
    (async () => {
      try {
        // Re-checked after every await, so a wake-up during a send is never lost.
        while (this.#pumpAgain && !this.#closed) {
          this.#pumpAgain = false;
          await this.#pumpOnce();
        }
      } finally {
        this.#pumping = false;
      }
    })().catch((e) => this.#fail(e, "internal"));
  }

  async #pumpOnce(): Promise<void> {
    if (this.#closed || this.#awaitingStatus !== undefined || this.#agentView === undefined) return;
    const desired = this.#d.hub.desiredFor(this.cluster);
    if (!desired || desired.generation === this.#lastSentGeneration) return;
    const diff = diffByVersion(this.#agentView, desired.items);
    const first = this.#lastSentGeneration === undefined;
    this.#lastSentGeneration = desired.generation;
    // After the first diff (always sent, even empty, so the agent knows it is in sync), an empty
    // difference needs no message: the agent already holds this generation's content.
    if (!first && diff.upserts.length === 0 && diff.deletes.length === 0) {
      this.#d.hub.recordSent(this.cluster, desired.generation, []);
      return;
    }
    const out = chunkDiff(diff, desired.generation, this.#d.maxBytes, (u) => this.#d.encoder.encode(u));
    for (const k of out.sent.deletes) this.#agentView.delete(k);
    for (const u of out.sent.upserts) this.#agentView.set(u.key, u.version);
    this.#awaitingStatus = desired.generation;
    this.#d.hub.recordSent(this.cluster, desired.generation, out.oversized);
    this.#d.m.sentObjects.inc(undefined, out.sent.upserts.length);
    this.#d.m.sentDeletes.inc(undefined, out.sent.deletes.length);
    this.#d.m.sentBytes.inc(undefined, out.bytes);
    if (out.oversized.length > 0) this.#d.m.oversized.inc(undefined, out.oversized.length);
    this.#log.debug("desired diff sent", {
      generation: desired.generation,
      upserts: out.sent.upserts.length,
      deletes: out.sent.deletes.length,
      chunks: out.chunks.length,
    });
    for (const chunk of out.chunks) {
      await this.#write({ desired: chunk });
      if (this.#closed) return;
    }
  }

  /** Writes one message, waiting for the transport to drain when its buffer is full. */
  async #write(msg: ServerMessage): Promise<void> {
    if (this.#closed) return;
    let ok: boolean;
    try {
      ok = this.#call.write(msg);
    } catch (e) {
      this.#ended("error", e);
      return;
    }
    if (ok || this.#closed) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.#call.off("drain", done);
        this.#onClose = this.#onClose?.filter((f) => f !== done);
        resolve();
      };
      this.#call.on("drain", done);
      (this.#onClose ??= []).push(done);
    });
  }

  /** Ends the stream with `code` (hub: replaced, deregistered, revoked, shutdown). */
  close(code: number, message: string, reason?: string): void {
    if (this.#closed) return;
    this.#teardown(reason ?? codeReason(code));
    this.#log.info("sync stream closed", { code, message, ...this.#duration() });
    try {
      if (this.#call.cancelled || this.#call.destroyed) return;
      if (code === GrpcStatus.OK) this.#call.end();
      else this.#call.emit("error", { code, details: message, metadata: undefined });
    } catch (e) {
      this.#log.debug("closing a stream that was already gone", { error: errText(e) });
    }
  }

  #fail(e: unknown, reason: string): void {
    const code = e instanceof MeshrelayError ? grpcStatusOf(e) : GrpcStatus.INTERNAL;
    // Only our own errors carry vetted messages; anything else is reported without details.
    const message = e instanceof MeshrelayError ? e.message : "internal error";
    if (!(e instanceof MeshrelayError)) this.#log.error("sync stream failed", { error: errText(e) });
    else this.#log.warn("sync stream refused", { code, error: e.message });
    this.close(code, message, reason);
  }

  /** The peer went away or half-closed (or grpc-js reported a transport error). */
  #ended(kind: "error" | "cancelled" | "end", e?: unknown): void {
    if (this.#closed) return;
    if (kind === "end") {
      if (connectionDestroyedUnder(this.#call)) {
        // Not a half-close: under Deno's node:http2 a stream whose connection was destroyed (our keepalive
        // gave up on it, the socket failed) reads as ended first.
        this.#ended("cancelled");
        return;
      }
      // The agent finished sending (graceful stop): end ours with OK.
      this.close(GrpcStatus.OK, "agent ended the stream", "agent_end");
      return;
    }
    const refused = grpcRefusalOf(this.#call);
    if (refused) {
      // grpc-js ended the stream itself (a message over --max-message-bytes, say): bad input, one line.
      this.#teardown("refused_by_grpc");
      logRefusal(this.#log, RelayService.sync.path, refused, this.#duration());
      return;
    }
    this.#teardown(kind === "cancelled" ? "cancelled" : "transport_error");
    this.#log.info("sync stream ended by the peer", {
      how: kind,
      ...this.#duration(),
      ...(e ? { error: errText(e) } : {}),
    });
  }

  #duration(): { durationMs?: number } {
    return this.#attached ? { durationMs: this.#d.clock.now().getTime() - this.#openedAt } : {};
  }

  #teardown(reason: string): void {
    this.#closed = true;
    if (this.#attached) {
      this.#d.hub.detach(this);
      this.#d.m.push.dec();
      if (this.#pulling) this.#d.m.pull.dec();
      if (this.#warmed) this.#d.m.warmed.dec();
    }
    if (reason !== "agent_end" && reason !== "replaced") this.#d.m.errors.inc({ reason });
    const waiting = this.#onClose ?? [];
    this.#onClose = undefined;
    for (const f of waiting) f();
  }
}

class EmptyMessageError extends MeshrelayError {
  constructor() {
    super("invalid_argument", "empty AgentMessage");
  }
}

function codeReason(code: number): string {
  switch (code) {
    case GrpcStatus.OK:
      return "agent_end";
    case GrpcStatus.ABORTED:
      return "replaced";
    case GrpcStatus.PERMISSION_DENIED:
      return "permission_denied";
    case GrpcStatus.UNAVAILABLE:
      return "shutdown";
    default:
      return "closed";
  }
}

function errText(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (e && typeof e === "object" && "details" in e) return String((e as { details: unknown }).details);
  return String(e);
}

/** The server keeps only the version of discovered objects it does not read (Inventory keepContent). */
const versionSuffices = (key: ObjectKey) => !readsDiscoveredContent(key);
