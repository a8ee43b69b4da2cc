/**
 * The relay server, composed: one gRPC port serving `Identity` and `Relay` with the credentials of the
 * security mode, the hub (declared config → desired state per cluster, inventories), the identity
 * machinery (tokens, signing, revocation, rate limit), and the HTTP endpoints (/metrics, /healthz,
 * /readyz). No flags or environment here: `src/server.ts` builds the options.
 *
 * Revocation on deregistration: the hub closes a removed cluster's stream at once and its identity
 * checks consult the registry on every call; this module also records the deregistration in the
 * persisted revocation list, so the cluster's existing certificates stay refused if the name is
 * registered again later.
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { IdentityService, RelayService } from "../proto/mod.ts";
import { type ConfigSource, parseDeclaredConfig } from "../state/mod.ts";
import type { SecretStore } from "../store/mod.ts";
import { AdmissionGate, type AdmissionLimits } from "./admission.ts";
import {
  type ConnectionLimitOptions,
  grpcLimitOptions,
  LimitedListener,
  resolveConnectionLimits,
} from "./connection_limits.ts";
import { refusalLogInterceptor } from "./grpc_refusals.ts";
import { type HttpEndpoints, Readiness, serveHttpEndpoints } from "./http_endpoints.ts";
import {
  DEFAULT_CLIENT_CERT_TTL_MS,
  IdentityHandlers,
  identityServiceImpl,
  SIGNING_BUSY_MESSAGE,
} from "./identity_service.ts";
import { MeshCaAuthority } from "./mesh_ca.ts";
import { MetricsRegistry } from "./metrics.ts";
import { certificateIdentify, type Identify, insecureIdentify, tokenIdentify } from "./peer_identity.ts";
import { FailureLimiter, type FailureLimiterOptions } from "./rate_limit.ts";
import { RelayHub } from "./relay_hub.ts";
import { RevocationList } from "./revocation.ts";
import { SecretCache } from "./secret_cache.ts";
import { ensureServerMaterial, type SecurityMode, type ServerMaterialReport } from "./server_material.ts";
import { ServerTls } from "./server_tls.ts";
import { DEFAULT_SESSION_BINDING_TTL_MS, identifyWithBinding, SessionBindings } from "./session_binding.ts";
import { relayServiceImpl } from "./sync_service.ts";
import { TokenAuthority } from "./tokens.ts";
import { tolerantDecoding } from "./tolerant_decoding.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, grpcMessageOptions } from "./wire.ts";

/** Default quiet time before the server pings an agent's connection (`--keepalive-interval`). */
export const DEFAULT_SERVER_KEEPALIVE_MS = 60_000;
/** Default time the server waits for a keepalive answer before it closes the connection. */
export const DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS = 20_000;

/** Options of {@linkcode RelayServer.start}. */
export interface RelayServerOptions {
  mode: SecurityMode;
  store: SecretStore;
  config: ConfigSource;
  clock: Clock;
  log: Logger;
  metrics?: MetricsRegistry;
  /** gRPC listen address. Default 0.0.0.0:9900. */
  host?: string;
  port?: number;
  /** HTTP endpoints; `metricsPort: null` disables them. Default 0.0.0.0:9091. */
  metricsHost?: string;
  metricsPort?: number | null;
  /** Create missing CA/server/token material at startup (the chart's behaviour). */
  generateCerts?: boolean;
  generateToken?: boolean;
  /** mTLS without a signing CA: bring-your-own client certificates, Bootstrap/Renew refused. */
  disableCa?: boolean;
  /** SANs of a generated server certificate. Default localhost, 127.0.0.1, ::1. */
  serverDnsNames?: string[];
  serverIpAddresses?: string[];
  serverSecret?: string;
  signingSecret?: string;
  rootSecret?: string;
  clientCertTtlMs?: number;
  /** How often TLS secrets and the revocation list are re-read. Default 10,000 ms. */
  reloadIntervalMs?: number;
  rateLimit?: FailureLimiterOptions;
  /** Admission control of certificate signing: concurrent signings, queue length, longest queue wait. */
  signing?: AdmissionLimits;
  /**
   * Staleness bound (ms) of the signing CA, root CA and shared token as the identity service reads them
   * (a SecretCache, so a Bootstrap storm does not read the store per call). Default 5,000; 0: no cache.
   */
  secretCacheMaxAgeMs?: number;
  maxMessageBytes?: number;
  /**
   * HTTP/2 keepalive towards agents: a ping after this much quiet on a connection (default
   * {@linkcode DEFAULT_SERVER_KEEPALIVE_MS}), and the connection closed when its answer takes longer than
   * `keepaliveTimeoutMs` (default {@linkcode DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS}). This is how the server
   * frees an agent that vanished without closing (a cluster cut off, a node gone): until then its stream
   * and memory stay held.
   */
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  /**
   * mTLS: how long the session binding a Bootstrap returns stays redeemable by the first Sync stream on
   * the same connection (session_binding.ts). Default 60,000; 0: Bootstrap offers none.
   */
  sessionBindingTtlMs?: number;
  /** Connections per peer and in all, TLS handshake timeout, streams per connection, idle timeout. */
  limits?: ConnectionLimitOptions;
  /** Hub knobs (see RelayHubOptions). */
  warmupMs?: number;
  debounceMs?: number;
}

/** A running relay server. */
export class RelayServer {
  readonly port: number;
  readonly metricsPort?: number;
  readonly hub: RelayHub;
  readonly tokens: TokenAuthority;
  readonly revocations: RevocationList;
  readonly metrics: MetricsRegistry;
  readonly material: ServerMaterialReport;
  readonly tls?: ServerTls;
  #server: grpc.Server;
  #listener: LimitedListener;
  #http?: HttpEndpoints;
  #abort: AbortController;
  #tasks: Promise<unknown>[];
  #log: Logger;
  #stopped = false;

  private constructor(f: {
    port: number;
    metricsPort?: number;
    hub: RelayHub;
    tokens: TokenAuthority;
    revocations: RevocationList;
    metrics: MetricsRegistry;
    material: ServerMaterialReport;
    tls?: ServerTls;
    server: grpc.Server;
    listener: LimitedListener;
    http?: HttpEndpoints;
    abort: AbortController;
    tasks: Promise<unknown>[];
    log: Logger;
  }) {
    this.port = f.port;
    this.metricsPort = f.metricsPort;
    this.hub = f.hub;
    this.tokens = f.tokens;
    this.revocations = f.revocations;
    this.metrics = f.metrics;
    this.material = f.material;
    this.tls = f.tls;
    this.#server = f.server;
    this.#listener = f.listener;
    this.#http = f.http;
    this.#abort = f.abort;
    this.#tasks = f.tasks;
    this.#log = f.log;
  }

  /** Prepares material, loads config, binds the ports, and starts the background loops. */
  static async start(o: RelayServerOptions): Promise<RelayServer> {
    const log = o.log.child({ component: "relay-server" });
    const metrics = o.metrics ?? new MetricsRegistry();
    const { clock, store, mode } = o;
    const abort = new AbortController();

    if (mode === "insecure") {
      log.warn(
        "INSECURE MODE: plaintext gRPC, no server or client authentication beyond an optional token; " +
          "anyone who can reach this port can claim a registered cluster. Use only for demos.",
      );
    }
    const material = await ensureServerMaterial({
      store,
      log,
      now: clock.now(),
      mode,
      generateCerts: o.generateCerts ?? true,
      generateToken: o.generateToken ?? true,
      disableCa: o.disableCa ?? false,
      serverDnsNames: o.serverDnsNames ?? ["localhost"],
      serverIpAddresses: o.serverIpAddresses ?? ["127.0.0.1", "::1"],
      serverSecret: o.serverSecret,
      signingSecret: o.signingSecret,
      rootSecret: o.rootSecret,
    });
    if (mode === "tls" && material.sharedToken) {
      log.warn(
        "simple TLS with the shared token: any holder of the token can act as any registered cluster; " +
          "prefer per-cluster tokens (meshrelay server token create) or mTLS",
      );
    }

    // Created before anything listens, so bad limits fail the start, not the first Bootstrap.
    const signingGate = new AdmissionGate({
      clock,
      metrics,
      busyMessage: SIGNING_BUSY_MESSAGE,
      name: "signing",
      ...o.signing,
    });
    const secrets = new SecretCache({ store, clock, maxAgeMs: o.secretCacheMaxAgeMs });
    const tokens = new TokenAuthority({ store, sharedTokenReader: secrets });
    const revocations = await RevocationList.load(store);
    const limiter = new FailureLimiter(o.rateLimit);
    const limits = resolveConnectionLimits(o.limits);
    const tls = mode === "insecure" ? undefined : await ServerTls.load({
      store,
      clock,
      log,
      requestClientCert: mode === "mtls",
      serverSecret: o.serverSecret,
      rootSecret: o.rootSecret,
      signingSecret: o.signingSecret,
      reloadIntervalMs: o.reloadIntervalMs,
      handshakeTimeoutMs: limits.handshakeTimeoutMs,
    });
    const hub = new RelayHub({
      config: o.config,
      clock,
      log,
      metrics,
      ...(o.warmupMs !== undefined ? { warmupMs: o.warmupMs } : {}),
      ...(o.debounceMs !== undefined ? { debounceMs: o.debounceMs } : {}),
    });
    await hub.load(abort.signal);
    // Istio federated trust: RootTrustPolicies come with the declared config; parsed per request (rare).
    const meshCa = new MeshCaAuthority({ store, declared: () => parseDeclaredConfig(hub.documents()), log });
    const isRegistered = (c: string) => hub.isRegistered(c);

    const failures = metrics.counter(
      "meshrelay_bootstrap_failures_total",
      "Refused Bootstrap and Renew calls, by reason.",
    );
    const expiry = metrics.gauge(
      "meshrelay_client_cert_expiry_seconds",
      "Seconds until the client certificate an agent last connected with expires, by cluster.",
    );
    /** The certificate each cluster last connected with, so a revoked one can be cut off at once. */
    const inUse = new Map<string, { serial: string; notBefore: Date }>();
    let identify: Identify;
    // The Sync service's identity: in mTLS it also takes a session binding (session_binding.ts).
    let syncIdentify: Identify;
    const bindingTtlMs = o.sessionBindingTtlMs ?? DEFAULT_SESSION_BINDING_TTL_MS;
    const sessionBindings = mode === "mtls" && bindingTtlMs > 0
      ? new SessionBindings({ clock, metrics, ttlMs: bindingTtlMs })
      : undefined;
    if (mode === "mtls") {
      const byCert = certificateIdentify({ trust: () => tls!.trust, clock, isRegistered, revocations });
      const byBinding = sessionBindings
        ? identifyWithBinding({ bindings: sessionBindings, isRegistered, revocations }, byCert)
        : byCert;
      const tracked = (by: Identify): Identify => async (call) => {
        const id = await by(call);
        if (id.serial && id.notBefore) inUse.set(id.cluster, { serial: id.serial, notBefore: id.notBefore });
        if (id.notAfter) {
          expiry.set(Math.round((id.notAfter.getTime() - clock.now().getTime()) / 1000), {
            cluster: id.cluster,
          });
        }
        return id;
      };
      identify = tracked(byCert);
      syncIdentify = tracked(byBinding);
    } else {
      const byToken = tokenIdentify({
        tokens,
        clock,
        isRegistered,
        limiter,
        onFailure: (reason) => failures.inc({ rpc: "session", reason }),
      }, mode === "tls" ? "token" : "insecure");
      const byName = insecureIdentify({ isRegistered });
      // Insecure with no token anywhere: the name alone (demo). Any token configured: it is required.
      identify = mode === "tls"
        ? byToken
        : async (call) => (await tokens.anyConfigured()) ? byToken(call) : byName(call);
      syncIdentify = identify;
    }

    if (tls) {
      const notAfter = metrics.gauge(
        "meshrelay_server_cert_not_after_seconds",
        "Expiry of the served server certificate (Unix seconds); alert when it comes near.",
      );
      const setNotAfter = () => notAfter.set(Math.floor(tls.certificate.notAfter.getTime() / 1000));
      setNotAfter();
      tls.onReload(setNotAfter);
    }
    const maxMessageBytes = o.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    const server = new grpc.Server({
      ...grpcMessageOptions(maxMessageBytes),
      "grpc.keepalive_time_ms": o.keepaliveMs ?? DEFAULT_SERVER_KEEPALIVE_MS,
      "grpc.keepalive_timeout_ms": o.keepaliveTimeoutMs ?? DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS,
      ...grpcLimitOptions(limits),
      // A unary call grpc-js refuses before our handler runs gets one log line (grpc_refusals.ts).
      interceptors: [refusalLogInterceptor(o.log)],
    });
    const handlers = new IdentityHandlers({
      store,
      secrets,
      admission: signingGate,
      tokens,
      clock,
      log,
      limiter,
      isRegistered,
      identifyCertificate: mode === "mtls" ? identify : undefined,
      issuesCertificates: mode === "mtls",
      revocations,
      metrics,
      clientCertTtlMs: o.clientCertTtlMs ?? DEFAULT_CLIENT_CERT_TTL_MS,
      signingSecret: o.signingSecret,
      rootSecret: o.rootSecret,
      meshCa: mode === "mtls" ? meshCa : undefined,
      sessionBindings,
    });
    // Undecodable requests reach the handlers as empty messages (see tolerant_decoding.ts).
    server.addService(tolerantDecoding(IdentityService), identityServiceImpl(handlers, log));
    server.addService(
      tolerantDecoding(RelayService),
      relayServiceImpl({ hub, identify: syncIdentify, clock, log, metrics, maxMessageBytes }),
    );
    const creds = tls ? tls.credentials : grpc.ServerCredentials.createInsecure();
    const host = o.host ?? "0.0.0.0";
    // We accept TCP ourselves to enforce the connection limits, then hand each socket to grpc-js,
    // which does TLS and HTTP/2 on it (see connection_limits.ts).
    const injector = server.createConnectionInjector(creds);
    const listener = await LimitedListener.listen({
      host,
      port: o.port ?? 9900,
      limits,
      inject: (socket) => injector.injectConnection(socket),
      log,
      metrics,
    });
    const port = listener.port;

    let http: HttpEndpoints | undefined;
    if (o.metricsPort !== null) {
      const readiness = new Readiness({ clock });
      readiness.set("config", () => hub.ready || "declared config not loaded yet");
      readiness.set("grpc", () => true);
      if (tls) {
        readiness.set("server-certificate", () => {
          const na = tls.certificate.notAfter;
          return na.getTime() > clock.now().getTime() || `server certificate expired at ${na.toISOString()}`;
        });
      }
      try {
        http = await serveHttpEndpoints({
          metrics,
          readiness,
          log,
          hostname: o.metricsHost ?? "0.0.0.0",
          port: o.metricsPort ?? 9091,
        });
      } catch (e) {
        server.forceShutdown();
        await listener.close();
        throw e;
      }
    }

    const tasks: Promise<unknown>[] = [
      hub.run(abort.signal).catch((e) => log.error("relay hub stopped", { error: errText(e) })),
      watchRegistry({
        hub,
        revocations,
        inUse,
        clock,
        log,
        signal: abort.signal,
        refreshMs: o.reloadIntervalMs ?? 10_000,
      }),
    ];
    if (tls) tasks.push(tls.watch(abort.signal));

    log.info("relay server listening", {
      security: mode,
      address: `${host}:${port}`,
      metricsPort: http?.port,
      clusters: hub.clusters(),
      issuesClientCertificates: mode === "mtls" && material.canIssue,
      createdSecrets: material.created,
    });
    return new RelayServer({
      port,
      metricsPort: http?.port,
      hub,
      tokens,
      revocations,
      metrics,
      material,
      tls,
      server,
      listener,
      http,
      abort,
      tasks,
      log,
    });
  }

  /** Ends every stream (UNAVAILABLE, so agents reconnect elsewhere or later), then stops. */
  async stop(graceMs = 2000): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#abort.abort();
    this.#listener.stopAccepting();
    this.hub.closeAll("server shutting down");
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, graceMs);
      this.#server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
    await this.#listener.close();
    await this.#http?.close();
    await Promise.allSettled(this.#tasks);
    this.#log.info("relay server stopped");
  }
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Records deregistrations in the revocation list (the hub already closed the streams), and re-reads
 * the list so revocations made elsewhere (another replica, the CLI) apply here too, closing the stream
 * of a cluster whose current certificate was revoked.
 */
async function watchRegistry(o: {
  hub: RelayHub;
  revocations: RevocationList;
  inUse: Map<string, { serial: string; notBefore: Date }>;
  clock: Clock;
  log: Logger;
  signal: AbortSignal;
  refreshMs: number;
}): Promise<void> {
  let known = new Set(o.hub.clusters());
  let sinceRefresh = 0;
  const tickMs = 500;
  while (!o.signal.aborted) {
    try {
      await o.clock.sleep(tickMs, o.signal);
    } catch {
      return;
    }
    try {
      const now = new Set(o.hub.clusters());
      for (const c of known) {
        if (!now.has(c)) {
          await o.revocations.revokeCluster(c, o.clock.now());
          o.log.info("cluster deregistered: its certificates are revoked", { cluster: c });
        }
      }
      known = now;
      sinceRefresh += tickMs;
      if (sinceRefresh >= o.refreshMs) {
        sinceRefresh = 0;
        await o.revocations.refresh();
        // A certificate revoked elsewhere (`meshrelay server revoke`) stops working now, not at the
        // agent's next reconnect.
        for (const [cluster, cert] of o.inUse) {
          const why = o.revocations.reasonRefused({ ...cert, cluster });
          if (why) {
            o.inUse.delete(cluster);
            o.hub.disconnect(cluster, why);
          }
        }
      }
    } catch (e) {
      o.log.error("updating the revocation list failed; will retry", { error: errText(e) });
    }
  }
}
