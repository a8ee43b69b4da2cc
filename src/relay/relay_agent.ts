/**
 * The relay agent, composed: its identity (client certificate lifecycle, mTLS mode), the Sync session
 * loop (discovery push, desired-state pull, apply), and optional HTTP endpoints. No flags or
 * environment here: `src/agent.ts` builds the options.
 *
 * Every dial builds a channel with the credentials current at that moment, and a new certificate
 * (renewed, bootstrapped, replaced in the secret) triggers an immediate reconnect, so the server always
 * sees the newest certificate. A session refused with UNAUTHENTICATED / PERMISSION_DENIED tells the
 * identity manager, which re-bootstraps once if it has a token.
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import type { Clock } from "../clock.ts";
import { GrpcStatus, PreconditionError, UnavailableError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { RelayClient } from "../proto/mod.ts";
import type { Applier, DiscoverySource } from "../state/mod.ts";
import type { SecretStore } from "../store/mod.ts";
import { AgentIdentity, type ClientCredentials } from "./agent_identity.ts";
import type { BackoffOptions } from "./backoff.ts";
import { channelFor, sessionMetadata } from "./client_credentials.ts";
import { closeClient } from "./close_client.ts";
import { type HttpEndpoints, Readiness, serveHttpEndpoints } from "./http_endpoints.ts";
import { grpcIdentityTransport } from "./identity_transport.ts";
import { MeshCaAgent } from "./mesh_ca_agent.ts";
import { MetricsRegistry } from "./metrics.ts";
import { isExpired, type RotationOptions } from "./rotation.ts";
import type { SecurityMode } from "./server_material.ts";
import { SESSION_BINDING_METADATA } from "./session_binding.ts";
import { SyncAgent, type SyncDialer } from "./sync_agent.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, grpcMessageOptions } from "./wire.ts";

/** Default quiet time before the agent pings the server (`--keepalive-interval`). */
export const DEFAULT_KEEPALIVE_MS = 30_000;
/** Default time the agent waits for a keepalive answer before it gives the connection up. */
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 10_000;

/** Options of {@linkcode RelayAgent.start}. */
export interface RelayAgentOptions {
  mode: SecurityMode;
  cluster: string;
  /** host:port of the relay server. */
  serverAddress: string;
  /** TLS server name (SNI passthrough ingress); the server certificate must match it. */
  authority?: string;
  /** The agent's own secrets (client certificate; possibly root CA and token). */
  store: SecretStore;
  /** Default `relay-client-tls-secret`. */
  clientSecretName?: string;
  /** Trust anchors for the server (TLS, mTLS); read when dialing. Undefined: the client secret's `ca.crt`. */
  rootCaPem: () => Promise<string | undefined>;
  /** Bootstrap token (mTLS bootstrap; every call in simple TLS; insecure if the server wants one). */
  token: () => Promise<string | undefined>;
  discovery: DiscoverySource;
  applier: Applier;
  clock: Clock;
  random: () => number;
  log: Logger;
  metrics?: MetricsRegistry;
  agentVersion: string;
  rotation?: RotationOptions;
  /** Secret re-read interval of the identity manager. Default 60,000 ms. */
  identityPollMs?: number;
  /**
   * HTTP/2 keepalive: a ping after this much quiet on the connection (default 30,000 ms), and the
   * connection given up when its answer takes longer than `keepaliveTimeoutMs` (default 10,000 ms).
   * This is how an agent notices a server or link that hangs without closing the connection.
   */
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  backoff?: BackoffOptions;
  maxMessageBytes?: number;
  /** HTTP endpoints (/metrics, /healthz, /readyz); null disables. */
  metricsHost?: string;
  metricsPort?: number | null;
  /**
   * Istio federated trust (mTLS only): keep Istio's `cacerts` in `store` signed by the server's
   * RootTrustPolicy root (see mesh_ca_agent.ts); `restart` rolls Istio's workloads after a change.
   */
  istioCa?: { store: SecretStore; secretName?: string; restart?: () => Promise<string[]> };
}

/** A running agent. */
export class RelayAgent {
  readonly identity?: AgentIdentity;
  /** Set with `istioCa`. */
  readonly istioCa?: MeshCaAgent;
  readonly sync: SyncAgent;
  readonly metrics: MetricsRegistry;
  readonly metricsPort?: number;
  #abort: AbortController;
  #tasks: Promise<unknown>[];
  #http?: HttpEndpoints;
  #log: Logger;

  private constructor(f: {
    identity?: AgentIdentity;
    istioCa?: MeshCaAgent;
    sync: SyncAgent;
    metrics: MetricsRegistry;
    http?: HttpEndpoints;
    abort: AbortController;
    tasks: Promise<unknown>[];
    log: Logger;
  }) {
    this.identity = f.identity;
    this.istioCa = f.istioCa;
    this.sync = f.sync;
    this.metrics = f.metrics;
    this.metricsPort = f.http?.port;
    this.#http = f.http;
    this.#abort = f.abort;
    this.#tasks = f.tasks;
    this.#log = f.log;
  }

  /** Starts the loops; returns at once (connecting, bootstrapping and syncing go on in the background). */
  static async start(o: RelayAgentOptions): Promise<RelayAgent> {
    const log = o.log.child({ component: "relay-agent", cluster: o.cluster });
    const metrics = o.metrics ?? new MetricsRegistry();
    const abort = new AbortController();
    const maxMessageBytes = o.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    const channelOptions = {
      ...grpcMessageOptions(maxMessageBytes),
      "grpc.keepalive_time_ms": o.keepaliveMs ?? DEFAULT_KEEPALIVE_MS,
      "grpc.keepalive_timeout_ms": o.keepaliveTimeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS,
    };
    if (o.mode === "insecure") {
      log.warn("INSECURE MODE: plaintext gRPC to the relay server; the server is not authenticated");
    }

    if (o.istioCa && o.mode !== "mtls") {
      throw new PreconditionError(
        "Istio federated trust needs --tls-mode mtls (the server signs for the cluster of a client certificate)",
      );
    }
    let identity: AgentIdentity | undefined;
    const rootFor = async (): Promise<string> => {
      const root = (await o.rootCaPem()) ?? identity?.current()?.caPem;
      if (!root) {
        throw new UnavailableError(
          "no relay root CA to verify the server (--root-ca, relay-root-tls-secret ca.crt, or ca.crt of the client secret)",
        );
      }
      return root;
    };

    let transport: ReturnType<typeof grpcIdentityTransport> | undefined;
    if (o.mode === "mtls") {
      transport = grpcIdentityTransport({
        serverAddress: o.serverAddress,
        authority: o.authority,
        rootCaPem: rootFor,
        channelOptions,
      });
      identity = new AgentIdentity({
        cluster: o.cluster,
        store: o.store,
        secretName: o.clientSecretName,
        transport,
        token: o.token,
        clock: o.clock,
        random: o.random,
        log,
        metrics,
        rotation: o.rotation,
        pollMs: o.identityPollMs,
      });
      await identity.reload();
    }

    let sync: SyncAgent | undefined = undefined;
    // Serial of the certificate the last Sync dial used: a new certificate only needs a reconnect when a
    // session was made with an older one (a dial still waiting for its first certificate takes it).
    let dialedSerial: string | undefined;
    // Whether the last Sync dial used a session binding: a refused binding (too late, say) is no verdict
    // on the certificate, and the next dial simply uses mTLS.
    let dialedBound = false;
    const dial: SyncDialer = async (signal) => {
      let client: RelayClient;
      if (o.mode === "insecure") {
        const ch = channelFor({
          serverAddress: o.serverAddress,
          insecure: true,
          authority: o.authority,
          options: channelOptions,
        });
        client = new RelayClient(ch.target, ch.credentials, ch.options);
        return {
          stream: client.sync(sessionMetadata(o.cluster, await o.token())),
          release: () => closeClient(client),
        };
      }
      if (o.mode === "tls") {
        const ch = channelFor({
          serverAddress: o.serverAddress,
          authority: o.authority,
          rootCaPem: await rootFor(),
          options: channelOptions,
        });
        client = new RelayClient(ch.target, ch.credentials, ch.options);
        return {
          stream: client.sync(sessionMetadata(o.cluster, await o.token())),
          release: () => closeClient(client),
        };
      }
      let creds = identity!.current();
      if (!creds || isExpired(o.clock.now(), creds)) {
        // Wait for the identity loop (bootstrap) rather than failing sessions while it works.
        dialedSerial = undefined;
        identity!.poke();
        creds = await new Promise<ClientCredentials>((resolve, reject) => {
          const off = identity!.onChange((c) => {
            off();
            signal.removeEventListener("abort", onAbort);
            resolve(c);
          });
          const onAbort = () => {
            off();
            reject(new UnavailableError("stopped while waiting for a client certificate"));
          };
          signal.addEventListener("abort", onAbort, { once: true });
        });
      }
      dialedSerial = creds.serial;
      // Right after a Bootstrap: the first stream runs on its connection (session_binding.ts).
      const bound = transport!.takeBoundChannel(creds.serial);
      dialedBound = bound !== undefined;
      if (bound) {
        // The client runs on the Bootstrap's channel (its TLS verified the server already): the address and
        // credentials grpc-js requires here are never used, so none are built from the certificate.
        client = new RelayClient(o.serverAddress, grpc.credentials.createInsecure(), {
          ...channelOptions,
          channelOverride: bound.channel,
        });
        const md = new grpc.Metadata();
        md.set(SESSION_BINDING_METADATA, bound.binding);
        return { stream: client.sync(md), release: () => closeClient(client) };
      }
      const ch = channelFor({
        serverAddress: o.serverAddress,
        authority: o.authority,
        rootCaPem: await rootFor(),
        client: creds,
        options: channelOptions,
      });
      client = new RelayClient(ch.target, ch.credentials, ch.options);
      return { stream: client.sync(), release: () => closeClient(client) };
    };

    sync = new SyncAgent({
      dial,
      discovery: o.discovery,
      applier: o.applier,
      clock: o.clock,
      random: o.random,
      log,
      metrics,
      agentVersion: o.agentVersion,
      maxMessageBytes,
      backoff: o.backoff,
      onSessionEnd: (end) => {
        if (
          !dialedBound &&
          (end.code === GrpcStatus.UNAUTHENTICATED || end.code === GrpcStatus.PERMISSION_DENIED)
        ) {
          identity?.markRefused(end.message);
        }
      },
    });
    let istioCa: MeshCaAgent | undefined;
    if (o.istioCa && identity && transport) {
      const id = identity;
      istioCa = new MeshCaAgent({
        cluster: o.cluster,
        store: o.istioCa.store,
        secretName: o.istioCa.secretName,
        transport,
        credentials: () => {
          const c = id.current();
          return c && !isExpired(o.clock.now(), c) ? c : undefined;
        },
        restart: o.istioCa.restart,
        clock: o.clock,
        random: o.random,
        log,
        metrics,
        rotation: o.rotation,
        pollMs: o.identityPollMs,
      });
    }
    identity?.onChange((c) => {
      log.info("using new client certificate", { serial: c.serial, notAfter: c.notAfter.toISOString() });
      if (dialedSerial !== undefined && dialedSerial !== c.serial) {
        sync!.reconnect("client certificate changed");
      }
      istioCa?.poke();
    });

    let http: HttpEndpoints | undefined;
    if (o.metricsPort !== null && o.metricsPort !== undefined) {
      const readiness = new Readiness({ clock: o.clock });
      readiness.set("sync", () => sync!.state === "synced" || `sync state: ${sync!.state}`);
      if (identity) {
        readiness.set("identity", () => {
          const s = identity!.status();
          return s.state === "ready" || `${s.state}${s.message ? `: ${s.message}` : ""}`;
        });
      }
      http = await serveHttpEndpoints({
        metrics,
        readiness,
        log,
        hostname: o.metricsHost ?? "0.0.0.0",
        port: o.metricsPort,
      });
    }

    const tasks: Promise<unknown>[] = [sync.run(abort.signal)];
    const identityTasks: Promise<unknown>[] = [];
    if (identity) identityTasks.push(identity.run(abort.signal));
    if (istioCa) identityTasks.push(istioCa.run(abort.signal));
    // The identity channel kept for a retry goes when the loops that call it have stopped.
    tasks.push(Promise.allSettled(identityTasks).then(() => transport?.close()));
    log.info("relay agent started", {
      security: o.mode,
      server: o.serverAddress,
      ...(o.authority ? { authority: o.authority } : {}),
      metricsPort: http?.port,
    });
    return new RelayAgent({ identity, istioCa, sync, metrics, http, abort, tasks, log });
  }

  /** Stops the loops and the HTTP endpoints. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await Promise.allSettled(this.#tasks);
    await this.#http?.close();
    this.#log.info("relay agent stopped");
  }
}
