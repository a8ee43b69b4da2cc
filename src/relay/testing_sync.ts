/**
 * In-memory ConfigSource, DiscoverySource and Applier for the sync tests (unit and end-to-end).
 * They implement the src/state interfaces faithfully (changes are observable, apply prunes), so a
 * test that passes with them exercises the real protocol; only the backend is memory.
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { type Clock, systemClock } from "../clock.ts";
import { AuthenticationError } from "../errors.ts";
import { type Logger, nullLogger } from "../log.ts";
import { RelayClient, RelayService } from "../proto/mod.ts";
import {
  type Applier,
  type ConfigSource,
  type DiscoveryEvent,
  type DiscoverySource,
  type KubeObject,
  type ObjectKey,
  objectKey,
  type ObjectStatus,
  resourceVersionOf,
} from "../state/mod.ts";
import { MetricsRegistry } from "./metrics.ts";
import { closeClient } from "./close_client.ts";
import { RelayHub } from "./relay_hub.ts";
import type { SyncDialer } from "./sync_agent.ts";
import { type Identify, relayServiceImpl } from "./sync_service.ts";
import { grpcMessageOptions } from "./wire.ts";

/** Metadata key naming the cluster in the tests' insecure loopback setup. */
export const TEST_CLUSTER_METADATA = "x-meshrelay-cluster";

/**
 * Test-only identity: the cluster named in call metadata, over insecure loopback gRPC. The sync
 * layer takes `identify` as a dependency, so its tests need no certificates; the real mTLS identity
 * (the client certificate's SAN) is R1's `identify` and is tested with the TLS end-to-end tests.
 */
export const metadataIdentify: Identify = (call) => {
  const v = call.metadata.get(TEST_CLUSTER_METADATA)[0];
  if (typeof v !== "string" || v === "") {
    return Promise.reject(new AuthenticationError(`no ${TEST_CLUSTER_METADATA} metadata`));
  }
  return Promise.resolve({ cluster: v });
};

/** A grpc-js server on 127.0.0.1 serving Relay.Sync for `hub`. */
export interface TestSyncServer {
  port: number;
  server: grpc.Server;
  /** Stops at once: open streams are cut (as a crash would, minus the process exit). */
  kill(): void;
}

/** Starts {@linkcode TestSyncServer} (port 0: any free port). */
export function startTestSyncServer(opts: {
  hub: RelayHub;
  clock: Clock;
  log: Logger;
  metrics: MetricsRegistry;
  port?: number;
  maxMessageBytes?: number;
  identify?: Identify;
}): Promise<TestSyncServer> {
  const server = new grpc.Server(grpcMessageOptions(opts.maxMessageBytes));
  server.addService(
    RelayService,
    relayServiceImpl({
      hub: opts.hub,
      identify: opts.identify ?? metadataIdentify,
      clock: opts.clock,
      log: opts.log,
      metrics: opts.metrics,
      maxMessageBytes: opts.maxMessageBytes,
    }),
  );
  return new Promise((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${opts.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err) return reject(err);
      resolve({
        port,
        server,
        kill: () => {
          opts.hub.closeAll("server stopped");
          server.forceShutdown();
        },
      });
    });
  });
}

/** A running hub and its Sync server, as the sync unit tests use them. */
export interface TestRelay {
  hub: RelayHub;
  srv: TestSyncServer;
  config: MemoryConfigSource;
  metrics: MetricsRegistry;
  /** Cuts the server's streams, stops the hub and waits for it. */
  stop(): Promise<void>;
}

/**
 * A hub over the declared documents `docs` (no warm-up, 1 ms debounce, wall clock), loaded and running,
 * with {@linkcode startTestSyncServer} in front of it.
 */
export async function startTestRelay(
  docs: KubeObject[],
  opts: { maxMessageBytes?: number } = {},
): Promise<TestRelay> {
  const config = new MemoryConfigSource(docs);
  const metrics = new MetricsRegistry();
  const hub = new RelayHub({
    config,
    clock: systemClock,
    log: nullLogger,
    metrics,
    warmupMs: 0,
    debounceMs: 1,
  });
  const ac = new AbortController();
  const running = hub.run(ac.signal);
  await hub.load();
  const srv = await startTestSyncServer({
    hub,
    clock: systemClock,
    log: nullLogger,
    metrics,
    maxMessageBytes: opts.maxMessageBytes,
  });
  return {
    hub,
    srv,
    config,
    metrics,
    stop: async () => {
      srv.kill();
      ac.abort();
      await running;
    },
  };
}

/** A dialer making a fresh insecure channel per attempt, naming `cluster` in metadata. */
export function testDialer(
  cluster: string,
  port: () => number,
  opts: { maxMessageBytes?: number; onDial?: () => void } = {},
): SyncDialer {
  return () => {
    opts.onDial?.();
    const client = new RelayClient(`127.0.0.1:${port()}`, grpc.credentials.createInsecure(), {
      ...grpcMessageOptions(opts.maxMessageBytes),
      // Tests restart servers on the same port: retry the connection quickly.
      "grpc.initial_reconnect_backoff_ms": 50,
      "grpc.max_reconnect_backoff_ms": 200,
    });
    const md = new grpc.Metadata();
    md.set(TEST_CLUSTER_METADATA, cluster);
    return { stream: client.sync(md), release: () => closeClient(client) };
  };
}

/** A queue that an async iterator drains; `push` wakes the reader. */
class Channel<T> {
  #items: T[] = [];
  #wake?: () => void;

  push(v: T): void {
    this.#items.push(v);
    this.#wake?.();
  }

  async *drain(signal: AbortSignal): AsyncGenerator<T> {
    const onAbort = () => this.#wake?.();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      while (!signal.aborted) {
        if (this.#items.length === 0) {
          await new Promise<void>((r) => this.#wake = r);
          this.#wake = undefined;
          continue;
        }
        yield this.#items.shift()!;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }
}

/** Declared config held in memory; `set` replaces it and notifies `changes`. */
export class MemoryConfigSource implements ConfigSource {
  #docs: KubeObject[];
  #listeners = new Set<Channel<void>>();
  /** Number of `list` calls (tests check that bursts are coalesced). */
  lists = 0;

  constructor(docs: KubeObject[] = []) {
    this.#docs = structuredClone(docs);
  }

  set(docs: KubeObject[]): void {
    this.#docs = structuredClone(docs);
    for (const l of this.#listeners) l.push();
  }

  list(): Promise<KubeObject[]> {
    this.lists++;
    return Promise.resolve(structuredClone(this.#docs));
  }

  async *changes(signal: AbortSignal): AsyncIterable<void> {
    const ch = new Channel<void>();
    this.#listeners.add(ch);
    try {
      yield* ch.drain(signal);
    } finally {
      this.#listeners.delete(ch);
    }
  }
}

/** A cluster's discoverable objects in memory; `upsert`/`remove` feed every open watch. */
export class MemoryDiscoverySource implements DiscoverySource {
  #objects = new Map<ObjectKey, KubeObject>();
  #watchers = new Set<Channel<DiscoveryEvent | { type: "resync" }>>();
  #known?: Map<ObjectKey, string>;

  constructor(objects: KubeObject[] = []) {
    for (const o of objects) this.#objects.set(objectKey(o), structuredClone(o));
  }

  upsert(o: KubeObject): void {
    this.#objects.set(objectKey(o), structuredClone(o));
    for (const w of this.#watchers) w.push({ type: "upsert", object: structuredClone(o) });
  }

  remove(key: ObjectKey): void {
    this.#objects.delete(key);
    for (const w of this.#watchers) w.push({ type: "delete", key });
  }

  /** Changes state silently and tells watchers they lost track (as an expired Kubernetes watch would). */
  replaceAndResync(objects: KubeObject[]): void {
    this.#objects = new Map(objects.map((o) => [objectKey(o), structuredClone(o)]));
    for (const w of this.#watchers) w.push({ type: "resync" });
  }

  /** key → version of what is present now. */
  versions(): Map<ObjectKey, string> {
    return new Map([...this.#objects].map(([k, o]) => [k, resourceVersionOf(o)]));
  }

  snapshot(): Promise<KubeObject[]> {
    this.#known = this.versions();
    return Promise.resolve([...this.#objects.values()].map((o) => structuredClone(o)));
  }

  async *watch(signal: AbortSignal): AsyncIterable<DiscoveryEvent | { type: "resync" }> {
    const ch = new Channel<DiscoveryEvent | { type: "resync" }>();
    this.#watchers.add(ch);
    // The contract is "changes after the snapshot": replay what changed between it and now.
    const known = this.#known ?? this.versions();
    for (const [k, o] of this.#objects) {
      if (known.get(k) !== resourceVersionOf(o)) ch.push({ type: "upsert", object: structuredClone(o) });
    }
    for (const k of known.keys()) if (!this.#objects.has(k)) ch.push({ type: "delete", key: k });
    try {
      yield* ch.drain(signal);
    } finally {
      this.#watchers.delete(ch);
    }
  }
}

/** An Applier into a map, with held(); `failKeys` makes objects fail as a real backend can. */
export class MemoryApplier implements Applier {
  applied = new Map<ObjectKey, { object: KubeObject; version: string }>();
  /** Every `apply` call's desired keys, in order. */
  calls: ObjectKey[][] = [];
  failKeys = new Set<ObjectKey>();

  apply(desired: KubeObject[]): Promise<ObjectStatus[]> {
    const want = new Map(desired.map((o) => [objectKey(o), o]));
    this.calls.push([...want.keys()].sort());
    const out: ObjectStatus[] = [];
    for (const [k, o] of want) {
      if (this.failKeys.has(k)) {
        out.push({ key: k, state: "failed", message: "refused by test backend" });
        continue;
      }
      const version = resourceVersionOf(o);
      const unchanged = this.applied.get(k)?.version === version;
      this.applied.set(k, { object: structuredClone(o), version });
      out.push({ key: k, state: "applied", message: unchanged ? "unchanged" : "updated" });
    }
    for (const k of [...this.applied.keys()]) {
      if (!want.has(k)) {
        this.applied.delete(k);
        out.push({ key: k, state: "pruned" });
      }
    }
    return Promise.resolve(out.sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  held(): Promise<Map<ObjectKey, { object: KubeObject; version: string }>> {
    return Promise.resolve(new Map([...this.applied].map(([k, v]) => [k, structuredClone(v)])));
  }

  /** key → version of what is applied. */
  versions(): Map<ObjectKey, string> {
    return new Map([...this.applied].map(([k, v]) => [k, v.version]));
  }
}

/** Kubernetes-shaped test objects. */
export const objects = {
  cluster(name: string, labels: Record<string, string> = { env: "prod" }): KubeObject {
    return {
      apiVersion: "meshrelay.io/v1alpha1",
      kind: "KubernetesCluster",
      metadata: { name, labels },
      spec: {},
    };
  },
  clusterConfig(name: string, clusters: string[], objs: KubeObject[]): KubeObject {
    return {
      apiVersion: "meshrelay.io/v1alpha1",
      kind: "ClusterConfig",
      metadata: { name },
      spec: { clusters, objects: objs },
    };
  },
  federation(): KubeObject {
    return {
      apiVersion: "meshrelay.io/v1alpha1",
      kind: "ServiceFederation",
      metadata: { name: "exported" },
      spec: {
        clusterSelector: { matchLabels: { env: "prod" } },
        exportSelector: { matchLabels: { export: "true" } },
      },
    };
  },
  configMap(name: string, data: Record<string, string> = {}, namespace = "apps"): KubeObject {
    return { apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace }, data };
  },
  service(name: string, exported: boolean, namespace = "apps"): KubeObject {
    return {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace, labels: exported ? { export: "true" } : {} },
      spec: { ports: [{ name: "http", port: 8080 }] },
    };
  },
  deployment(name: string, replicas = 1, namespace = "apps"): KubeObject {
    return { apiVersion: "apps/v1", kind: "Deployment", metadata: { name, namespace }, spec: { replicas } };
  },
};
