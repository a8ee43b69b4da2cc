/**
 * No loss, no duplicates across reconnects: three agents and a server in one process (grpc-js on
 * 127.0.0.1, insecure, cluster named in metadata by the test-only identify), changes on both sides,
 * and the stream cut at random points in every way we can produce in-process — the server closes
 * the call, the client cancels, the client's channel is closed, the agent restarts, the server
 * restarts (forgetting every inventory). Small messages (1 KiB) make most diffs multi-chunk, so cuts
 * land mid-Welcome, mid-diff and before acknowledgements. At the end every server inventory equals
 * what its cluster holds, every applier holds exactly its desired state, and the desired states
 * equal those computed from scratch from the truth.
 *
 * Randomness is seeded (the seeds are the step names), so the sequence of changes and cut kinds
 * reproduces; where a cut lands in the protocol still depends on timing, which is the point.
 */
import * as grpc from "@grpc/grpc-js";
import { systemClock } from "../src/clock.ts";
import { GrpcStatus } from "../src/errors.ts";
import { nullLogger } from "../src/log.ts";
import { RelayClient } from "../src/proto/mod.ts";
import {
  grpcMessageOptions,
  MetricsRegistry,
  RelayHub,
  SyncAgent,
  type SyncDialer,
} from "../src/relay/mod.ts";
import {
  MemoryApplier,
  MemoryConfigSource,
  MemoryDiscoverySource,
  objects as o,
  startTestSyncServer,
  TEST_CLUSTER_METADATA,
  type TestSyncServer,
} from "../src/relay/testing_sync.ts";
import {
  ClusterRegistry,
  DesiredStateTracker,
  Inventory,
  type KubeObject,
  objectKey,
} from "../src/state/mod.ts";
import { assertEquals } from "../src/testing/assert.ts";

const CLUSTERS = ["c1", "c2", "c3"];
const MAX = 1024;

function lcg(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

const pad = (n: number) => "p".repeat(n);

function configDocs(version: number): KubeObject[] {
  return [
    ...CLUSTERS.map((c) => o.cluster(c)),
    o.federation(),
    o.clusterConfig(
      "base",
      CLUSTERS,
      Array.from(
        { length: 3 + (version % 4) },
        (_, i) => o.configMap(`cfg-${i}`, { v: `${version}`, p: pad(300) }),
      ),
    ),
    o.clusterConfig(
      "only-c1",
      ["c1"],
      version % 2 === 0 ? [o.configMap("c1-only", { v: `${version}` })] : [],
    ),
  ];
}

async function waitUntil(pred: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 3000; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`${what}: not reached`);
}

const versionsEqual = (a: Map<string, string>, b: Map<string, string>) =>
  a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);

class World {
  rnd: () => number;
  config = new MemoryConfigSource(configDocs(0));
  configVersion = 0;
  port = 0;
  hub!: RelayHub;
  srv!: TestSyncServer;
  #hubStop = new AbortController();
  #hubRun?: Promise<void>;
  discovery = new Map(CLUSTERS.map((c) => [c, new MemoryDiscoverySource()]));
  appliers = new Map(CLUSTERS.map((c) => [c, new MemoryApplier()]));
  agents = new Map<string, { agent: SyncAgent; stop: () => Promise<void> }>();
  clients = new Map<string, RelayClient>();
  cuts: Record<string, number> = {};

  constructor(seed: number) {
    this.rnd = lcg(seed);
    for (const c of CLUSTERS) {
      for (let i = 0; i < 6; i++) this.discovery.get(c)!.upsert(this.service(c, i, i % 2 === 0));
    }
  }

  service(c: string, i: number, exported: boolean): KubeObject {
    const s = o.service(`${c}-svc-${i}`, exported);
    return { ...s, spec: { ...(s.spec as object), note: pad(Math.floor(this.rnd() * 400)) } };
  }

  async startServer(): Promise<void> {
    this.#hubStop = new AbortController();
    this.hub = new RelayHub({
      config: this.config,
      clock: systemClock,
      log: nullLogger,
      metrics: new MetricsRegistry(),
      debounceMs: 5,
      warmupMs: 2000,
    });
    await this.hub.load();
    this.#hubRun = this.hub.run(this.#hubStop.signal);
    this.srv = await startTestSyncServer({
      hub: this.hub,
      clock: systemClock,
      log: nullLogger,
      metrics: new MetricsRegistry(),
      port: this.port,
      maxMessageBytes: MAX,
    });
    this.port = this.srv.port;
  }

  async stopServer(): Promise<void> {
    this.srv.kill();
    this.#hubStop.abort();
    await this.#hubRun;
  }

  dialer(c: string): SyncDialer {
    return () => {
      const client = new RelayClient(`127.0.0.1:${this.port}`, grpc.credentials.createInsecure(), {
        ...grpcMessageOptions(MAX),
        "grpc.initial_reconnect_backoff_ms": 20,
        "grpc.max_reconnect_backoff_ms": 100,
      });
      this.clients.set(c, client);
      const md = new grpc.Metadata();
      md.set(TEST_CLUSTER_METADATA, c);
      return { stream: client.sync(md), release: () => client.close() };
    };
  }

  startAgent(c: string): void {
    const agent = new SyncAgent({
      dial: this.dialer(c),
      discovery: this.discovery.get(c)!,
      applier: this.appliers.get(c)!,
      clock: systemClock,
      random: this.rnd,
      log: nullLogger,
      agentVersion: "cuts",
      maxMessageBytes: MAX,
      backoff: { initialMs: 10, maxMs: 80 },
      stopGraceMs: 0,
    });
    const ac = new AbortController();
    const run = agent.run(ac.signal);
    this.agents.set(c, {
      agent,
      stop: async () => {
        ac.abort();
        await run;
      },
    });
  }

  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rnd() * xs.length)];
  }

  mutate(): void {
    const n = Math.floor(this.rnd() * 4);
    for (let k = 0; k < n; k++) {
      const c = this.pick(CLUSTERS);
      const d = this.discovery.get(c)!;
      const i = Math.floor(this.rnd() * 9);
      const r = this.rnd();
      if (r < 0.6) d.upsert(this.service(c, i, this.rnd() < 0.5));
      else if (r < 0.8) d.remove(objectKey(this.service(c, i, false)));
      else d.upsert(o.deployment(`${c}-dep-${i}`, Math.floor(this.rnd() * 5)));
    }
    if (this.rnd() < 0.3) this.config.set(configDocs(++this.configVersion));
  }

  async cut(): Promise<void> {
    const kind = this.pick([
      "server-closes",
      "client-cancels",
      "channel-closed",
      "agent-restart",
      "server-restart",
    ]);
    this.cuts[kind] = (this.cuts[kind] ?? 0) + 1;
    const c = this.pick(CLUSTERS);
    switch (kind) {
      case "server-closes":
        this.hub.disconnect(c, "test cut", GrpcStatus.UNAVAILABLE);
        break;
      case "client-cancels":
        this.agents.get(c)!.agent.reconnect("test cut");
        break;
      case "channel-closed":
        this.clients.get(c)?.close();
        break;
      case "agent-restart":
        await this.agents.get(c)!.stop();
        this.startAgent(c);
        break;
      case "server-restart":
        await this.stopServer();
        await this.startServer();
        break;
    }
  }

  /** Desired states computed from scratch from the truth (what each cluster really holds). */
  expectedDesired(): Map<string, Map<string, string>> {
    const docs = configDocs(this.configVersion);
    const inventories = new Map(CLUSTERS.map((c) => {
      const inv = new Inventory();
      inv.applySnapshot([...this.discovery.get(c)!.versions().keys()].map((k) => this.#objectOf(c, k)));
      return [c, inv];
    }));
    const tracker = new DesiredStateTracker();
    tracker.update(ClusterRegistry.fromConfig(docs).list(), docs, inventories);
    return new Map(
      CLUSTERS.map((c) => [c, new Map([...tracker.get(c)!.items].map(([k, v]) => [k, v.version]))]),
    );
  }

  #snapshots = new Map<string, Map<string, KubeObject>>();
  #objectOf(c: string, key: string): KubeObject {
    return this.#snapshots.get(c)!.get(key)!;
  }

  async takeTruth(): Promise<void> {
    for (const c of CLUSTERS) {
      const snap = await this.discovery.get(c)!.snapshot();
      this.#snapshots.set(c, new Map(snap.map((x) => [objectKey(x), x])));
    }
  }

  converged(expected: Map<string, Map<string, string>>): boolean {
    if (!this.hub.idle || !this.hub.serving) return false;
    return CLUSTERS.every((c) => {
      const agent = this.agents.get(c)!.agent;
      return agent.state === "synced" &&
        versionsEqual(this.hub.inventoryVersions(c), this.discovery.get(c)!.versions()) &&
        versionsEqual(this.appliers.get(c)!.versions(), expected.get(c)!);
    });
  }

  /** What differs, for a failure message. */
  describe(expected: Map<string, Map<string, string>>): string {
    const diff = (a: Map<string, string>, b: Map<string, string>) =>
      [...new Set([...a.keys(), ...b.keys()])].filter((k) => a.get(k) !== b.get(k));
    return JSON.stringify(
      {
        idle: this.hub.idle,
        serving: this.hub.serving,
        cuts: this.cuts,
        clusters: CLUSTERS.map((c) => ({
          c,
          state: this.agents.get(c)!.agent.state,
          stats: this.agents.get(c)!.agent.stats,
          status: { ...this.hub.status(c), statuses: undefined },
          inventoryVsTruth: diff(this.hub.inventoryVersions(c), this.discovery.get(c)!.versions()),
          agentVsTruth: diff(this.agents.get(c)!.agent.discovered(), this.discovery.get(c)!.versions()),
          appliedVsExpected: diff(this.appliers.get(c)!.versions(), expected.get(c)!),
          hubDesiredVsExpected: diff(
            new Map([...this.hub.desiredFor(c)?.items ?? []].map(([k, v]) => [k, v.version])),
            expected.get(c)!,
          ),
        })),
      },
      null,
      1,
    );
  }

  async stopAll(): Promise<void> {
    for (const a of this.agents.values()) await a.stop();
    await this.stopServer();
  }
}

Deno.test("sync: random cuts in every way, changes on both sides, then no loss and no duplicates", async (t) => {
  for (const seed of [1, 7, 42]) {
    await t.step(`seed ${seed}`, async () => {
      const w = new World(seed);
      await w.startServer();
      for (const c of CLUSTERS) w.startAgent(c);
      try {
        for (let round = 0; round < 25; round++) {
          w.mutate();
          await new Promise((r) => setTimeout(r, Math.floor(w.rnd() * 15)));
          await w.cut();
          await new Promise((r) => setTimeout(r, Math.floor(w.rnd() * 10)));
        }
        w.mutate();
        await w.takeTruth();
        const expected = w.expectedDesired();
        try {
          await waitUntil(() => w.converged(expected), `convergence (seed ${seed})`);
        } catch (e) {
          throw new Error(`${(e as Error).message}\n${w.describe(expected)}`);
        }
        for (const c of CLUSTERS) {
          // Server view and truth agree key for key; the applier holds exactly the desired set.
          assertEquals(w.hub.inventoryVersions(c), w.discovery.get(c)!.versions());
          assertEquals(w.appliers.get(c)!.versions(), expected.get(c));
          assertEquals(
            new Map([...w.hub.desiredFor(c)!.items].map(([k, v]) => [k, v.version])),
            expected.get(c),
          );
        }
      } finally {
        await w.stopAll();
      }
    });
  }
});
