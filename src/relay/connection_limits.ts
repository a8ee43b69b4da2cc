/**
 * Connection limits in front of the gRPC server: how many TCP connections one peer address, and all
 * peers together, may hold. grpc-js has no such knob, so the relay server accepts TCP itself (node:net)
 * and hands each accepted socket to grpc-js (`Server.createConnectionInjector`), which then does TLS
 * and HTTP/2 as if it had accepted it. A connection over a limit is closed at once, before any TLS
 * work, and counted; one warning line per peer and minute says so (a flood must not flood the log).
 *
 * The other limits live where they act: the TLS handshake timeout in the server credentials
 * (`handshakeTimeout` of node:tls), streams per connection and idle connections in grpc-js options
 * (`grpc.max_concurrent_streams`, `grpc.max_connection_idle_ms`); see {@linkcode grpcLimitOptions}.
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import net from "node:net";
import { InvalidInputError, UnavailableError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { MetricsRegistry } from "./metrics.ts";
import { peerAddress } from "./rate_limit.ts";

/** The server's resource limits. 0 means unlimited where noted. */
export interface ConnectionLimitOptions {
  /** TCP connections one peer address may hold (0: unlimited). Default 1024. */
  maxConnectionsPerPeer?: number;
  /** TCP connections in all (0: unlimited). Default 16384 (keep below the open-files limit). */
  maxConnections?: number;
  /**
   * A TLS handshake not finished in this time is abandoned. Default 30,000 ms: in a storm of a thousand
   * agents bootstrapping at once a handshake waits its turn for seconds (10 s cut many of them off).
   */
  handshakeTimeoutMs?: number;
  /** Concurrent HTTP/2 streams (calls) per connection. Default 100. */
  maxStreamsPerConnection?: number;
  /** A connection with no call for this long is closed (0: never). Default 300,000 ms. */
  idleTimeoutMs?: number;
}

/** Defaults of {@linkcode ConnectionLimitOptions}. */
export const DEFAULT_CONNECTION_LIMITS: Required<ConnectionLimitOptions> = {
  maxConnectionsPerPeer: 1024,
  maxConnections: 16384,
  handshakeTimeoutMs: 30_000,
  maxStreamsPerConnection: 100,
  idleTimeoutMs: 300_000,
};

/** Fills defaults and checks ranges. */
export function resolveConnectionLimits(o: ConnectionLimitOptions = {}): Required<ConnectionLimitOptions> {
  const r = { ...DEFAULT_CONNECTION_LIMITS };
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (r as Record<string, number>)[k] = v;
  for (const [k, v] of Object.entries(r)) {
    if (!Number.isInteger(v) || v < 0) {
      throw new InvalidInputError(`connection limit ${k} must be an integer >= 0`);
    }
  }
  if (r.handshakeTimeoutMs === 0) throw new InvalidInputError("the TLS handshake timeout must be positive");
  if (r.maxStreamsPerConnection === 0) throw new InvalidInputError("streams per connection must be positive");
  return r;
}

/** grpc-js server options for the stream and idle limits. */
export function grpcLimitOptions(l: Required<ConnectionLimitOptions>): grpc.ServerOptions {
  return {
    "grpc.max_concurrent_streams": l.maxStreamsPerConnection,
    ...(l.idleTimeoutMs > 0 ? { "grpc.max_connection_idle_ms": l.idleTimeoutMs } : {}),
  };
}

/** Counts connections per peer and in all; pure bookkeeping. */
export class ConnectionCounter {
  #perPeer = new Map<string, number>();
  #total = 0;
  readonly limits: Required<ConnectionLimitOptions>;

  constructor(limits: Required<ConnectionLimitOptions>) {
    this.limits = limits;
  }

  /** Takes a slot for `peer`, or says which limit refuses it. */
  acquire(peer: string): "ok" | "per_peer" | "total" {
    const l = this.limits;
    if (l.maxConnections > 0 && this.#total >= l.maxConnections) return "total";
    const n = this.#perPeer.get(peer) ?? 0;
    if (l.maxConnectionsPerPeer > 0 && n >= l.maxConnectionsPerPeer) return "per_peer";
    this.#perPeer.set(peer, n + 1);
    this.#total++;
    return "ok";
  }

  /** Gives back a slot taken by `acquire`. */
  release(peer: string): void {
    const n = this.#perPeer.get(peer) ?? 0;
    if (n <= 1) this.#perPeer.delete(peer);
    else this.#perPeer.set(peer, n - 1);
    if (n > 0) this.#total--;
  }

  /** Open connections in all. */
  get total(): number {
    return this.#total;
  }

  /** Open connections of one peer. */
  of(peer: string): number {
    return this.#perPeer.get(peer) ?? 0;
  }
}

/** Options of {@linkcode LimitedListener.listen}. */
export interface LimitedListenerOptions {
  host: string;
  port: number;
  limits: Required<ConnectionLimitOptions>;
  /** Where accepted sockets go (grpc-js `ConnectionInjector.injectConnection`). */
  inject: (socket: net.Socket) => void;
  log: Logger;
  metrics?: MetricsRegistry;
  /** Milliseconds since the epoch (for log throttling). Default Date.now. */
  now?: () => number;
}

/** A TCP listener enforcing the connection limits (see the module comment). */
export class LimitedListener {
  readonly port: number;
  readonly counter: ConnectionCounter;
  #server: net.Server;
  #sockets = new Set<net.Socket>();
  #closed?: Promise<void>;

  private constructor(server: net.Server, port: number, counter: ConnectionCounter) {
    this.#server = server;
    this.port = port;
    this.counter = counter;
  }

  /** Binds host:port (port 0: any free port). */
  static async listen(o: LimitedListenerOptions): Promise<LimitedListener> {
    const counter = new ConnectionCounter(o.limits);
    const now = o.now ?? Date.now;
    const refused = o.metrics?.counter(
      "meshrelay_connections_refused_total",
      "TCP connections closed at accept because a connection limit was reached, by limit.",
    );
    const open = o.metrics?.gauge("meshrelay_connections_open", "TCP connections open on the gRPC port.");
    // Accepted minus open is the number of connections that have closed: on Deno 2.9.3 each keeps memory
    // (docs/relay.md, Known limits), so this is what to watch next to process_resident_memory_bytes.
    const accepted = o.metrics?.counter(
      "meshrelay_connections_accepted_total",
      "TCP connections accepted on the gRPC port (within the limits).",
    );
    const lastWarned = new Map<string, number>();
    const sockets = new Set<net.Socket>();
    const server = net.createServer({ pauseOnConnect: false }, (socket) => {
      const peer = peerAddress(socket.remoteAddress ?? "unknown");
      const verdict = counter.acquire(peer);
      if (verdict !== "ok") {
        refused?.inc({ limit: verdict });
        const t = now();
        const key = verdict === "total" ? "*" : peer;
        if ((lastWarned.get(key) ?? -Infinity) < t - 60_000) {
          lastWarned.set(key, t);
          if (lastWarned.size > 10_000) lastWarned.clear();
          o.log.warn(
            "connection refused: limit reached (further refusals of this peer are counted, not logged)",
            {
              peer,
              limit: verdict === "total" ? "max-connections" : "max-connections-per-peer",
              value: verdict === "total" ? o.limits.maxConnections : o.limits.maxConnectionsPerPeer,
            },
          );
        }
        socket.on("error", () => {});
        socket.destroy();
        return;
      }
      sockets.add(socket);
      open?.inc();
      accepted?.inc();
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        sockets.delete(socket);
        counter.release(peer);
        open?.dec();
      };
      socket.once("close", release);
      // grpc-js adds its own listeners; a reset before that must not become an uncaught error.
      socket.on("error", () => {});
      try {
        o.inject(socket);
      } catch (e) {
        o.log.warn("could not hand a connection to gRPC", {
          error: e instanceof Error ? e.message : String(e),
        });
        socket.destroy();
        release();
      }
    });
    const port = await new Promise<number>((resolve, reject) => {
      server.once("error", (e: Error) =>
        reject(
          new UnavailableError(
            `cannot listen on ${o.host}:${o.port} (port in use or address not available)`,
            {
              cause: e,
            },
          ),
        ));
      server.listen(
        { host: o.host, port: o.port },
        () => resolve((server.address() as net.AddressInfo).port),
      );
    });
    server.on("error", (e: Error) => o.log.error("gRPC listener error", { error: e.message }));
    const l = new LimitedListener(server, port, counter);
    l.#sockets = sockets;
    return l;
  }

  /** Stops accepting new connections; open ones are left to grpc-js' shutdown. */
  stopAccepting(): void {
    this.#closed ??= new Promise((resolve) => this.#server.close(() => resolve()));
  }

  /** Stops accepting, cuts the connections still open, and resolves when the listener is gone. */
  async close(): Promise<void> {
    this.stopAccepting();
    for (const s of this.#sockets) s.destroy();
    await this.#closed;
  }
}
