/**
 * The sync half of the relay end to end, in one process: a grpc-js server and two agents on
 * 127.0.0.1, on the shipped examples (examples/clusters/cluster-1, cluster-2, examples/config)
 * through the directory-backed discovery, config source and applier in temp dirs.
 *
 * Identity here is the test-only `metadataIdentify` (cluster named in call metadata over insecure
 * loopback): the sync layer takes `identify` as a dependency; the mTLS identity is R1's and has its
 * own end-to-end tests.
 */
import { systemClock } from "../src/clock.ts";
import { GrpcStatus } from "../src/errors.ts";
import { nullLogger } from "../src/log.ts";
import { MetricsRegistry, RelayHub, type SessionEnd, SyncAgent } from "../src/relay/mod.ts";
import { startTestSyncServer, testDialer, type TestSyncServer } from "../src/relay/testing_sync.ts";
import {
  DirectoryApplier,
  DirectoryConfigSource,
  DirectoryDiscoverySource,
  type ObjectKey,
} from "../src/state/mod.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";

const EXAMPLES = new URL("../examples/", import.meta.url).pathname;
const CLUSTERS = ["cluster-1", "cluster-2"] as const;
type Cluster = typeof CLUSTERS[number];

async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyTree(`${from}/${e.name}`, `${to}/${e.name}`);
    else await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

/** Number of object files under `dir` (the applier writes one file per object). */
async function countFiles(dir: string): Promise<number> {
  let n = 0;
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.name.startsWith(".")) continue;
      n += e.isDirectory ? await countFiles(`${dir}/${e.name}`) : 1;
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return n;
}

async function waitUntil(pred: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 1500; i++) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${what}: not reached`);
}

const sameVersions = (a: Map<ObjectKey, string>, b: Map<ObjectKey, string>) =>
  a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);

async function editFile(path: string, from: string, to: string): Promise<void> {
  const text = await Deno.readTextFile(path);
  assert(text.includes(from), `${path} contains ${from}`);
  await Deno.writeTextFile(path, text.replace(from, to));
}

class Harness {
  tmp = "";
  port = 0;
  hub!: RelayHub;
  srv!: TestSyncServer;
  metrics = new MetricsRegistry();
  #hubStop = new AbortController();
  #hubRun?: Promise<void>;
  agents = new Map<Cluster, { agent: SyncAgent; applier: DirectoryApplier; stop: () => Promise<void> }>();
  ends = new Map<Cluster, SessionEnd[]>(CLUSTERS.map((c) => [c, []]));

  async init(): Promise<void> {
    this.tmp = await Deno.makeTempDir({ prefix: "mr-sync-e2e-" });
    await copyTree(`${EXAMPLES}clusters`, `${this.tmp}/clusters`);
    await copyTree(`${EXAMPLES}config`, `${this.tmp}/config`);
    await this.startServer();
  }

  /** A fresh hub and server (in-process restart: the new server remembers nothing). */
  async startServer(): Promise<void> {
    this.metrics = new MetricsRegistry();
    this.#hubStop = new AbortController();
    this.hub = new RelayHub({
      config: new DirectoryConfigSource({
        root: `${this.tmp}/config`,
        clock: systemClock,
        log: nullLogger,
        rescanIntervalMs: 100,
        debounceMs: 10,
      }),
      clock: systemClock,
      log: nullLogger,
      metrics: this.metrics,
      debounceMs: 20,
      warmupMs: 5000,
    });
    await this.hub.load();
    this.#hubRun = this.hub.run(this.#hubStop.signal);
    this.srv = await startTestSyncServer({
      hub: this.hub,
      clock: systemClock,
      log: nullLogger,
      metrics: this.metrics,
      port: this.port,
    });
    this.port = this.srv.port;
  }

  async stopServer(): Promise<void> {
    this.srv.kill();
    this.#hubStop.abort();
    await this.#hubRun;
  }

  /** Starts (or restarts, as a new process would: fresh sources over the same folders) an agent. */
  startAgent(c: Cluster): void {
    const applier = new DirectoryApplier({ root: `${this.tmp}/applied/${c}`, log: nullLogger });
    const agent = new SyncAgent({
      dial: testDialer(c, () => this.port),
      discovery: new DirectoryDiscoverySource({
        root: `${this.tmp}/clusters/${c}`,
        clock: systemClock,
        log: nullLogger,
        kinds: ["Namespace", "Service", "Deployment"],
        rescanIntervalMs: 100,
        debounceMs: 10,
      }),
      applier,
      clock: systemClock,
      random: Math.random,
      log: nullLogger,
      agentVersion: "e2e",
      backoff: { initialMs: 20, maxMs: 200 },
      stopGraceMs: 500,
      onSessionEnd: (e) => this.ends.get(c)!.push(e),
    });
    const ac = new AbortController();
    const run = agent.run(ac.signal);
    this.agents.set(c, {
      agent,
      applier,
      stop: async () => {
        ac.abort();
        await run;
      },
    });
  }

  async stopAgent(c: Cluster): Promise<void> {
    await this.agents.get(c)?.stop();
    this.agents.delete(c);
  }

  /** Server inventory == agent's discovered set, and what is applied == server's desired state, on disk. */
  async converged(c: Cluster): Promise<boolean> {
    const a = this.agents.get(c);
    const desired = this.hub.desiredFor(c);
    if (!a || !desired || a.agent.state !== "synced" || !this.hub.idle) return false;
    if (!sameVersions(this.hub.inventoryVersions(c), a.agent.discovered())) return false;
    const held = await a.applier.held();
    const want = new Map([...desired.items].map(([k, v]) => [k, v.version]));
    const heldVersions = new Map([...held].map(([k, v]) => [k, v.version]));
    // One file per object: no duplicates, nothing stale left behind.
    return sameVersions(heldVersions, want) && await countFiles(`${this.tmp}/applied/${c}`) === want.size;
  }

  async allConverged(what: string): Promise<void> {
    await waitUntil(
      async () => (await this.converged("cluster-1")) && (await this.converged("cluster-2")),
      what,
    );
  }

  desiredKeys(c: Cluster): string[] {
    return [...this.hub.desiredFor(c)!.items.keys()];
  }

  async close(): Promise<void> {
    for (const c of [...this.agents.keys()]) await this.stopAgent(c);
    await this.stopServer();
    await Deno.remove(this.tmp, { recursive: true });
  }
}

Deno.test("sync e2e on the examples: converge, propagate, resync by difference, restart, deregister", async (t) => {
  const h = new Harness();
  await h.init();
  try {
    await t.step("both clusters converge", async () => {
      for (const c of CLUSTERS) h.startAgent(c);
      await h.allConverged("initial convergence");
      assertEquals(h.desiredKeys("cluster-1").sort(), [
        "security.istio.io/v1|PeerAuthentication|istio-system|default",
        "v1|ConfigMap|apps|region-settings",
        "v1|Namespace||mesh-config",
      ]);
      assertEquals(h.desiredKeys("cluster-2").sort(), [
        "networking.istio.io/v1|ServiceEntry|istio-system|reviews-apps-cluster-1",
        "security.istio.io/v1|PeerAuthentication|istio-system|default",
        "v1|Namespace||mesh-config",
      ]);
    });

    await t.step("a config change reaches both clusters", async () => {
      await editFile(`${h.tmp}/config/prod-baseline.yaml`, "mode: STRICT", "mode: PERMISSIVE");
      await waitUntil(async () => {
        for (const c of CLUSTERS) {
          const f = `${h.tmp}/applied/${c}/istio-system/PeerAuthentication.security.istio.io_v1.default.yaml`;
          if (!(await Deno.readTextFile(f)).includes("mode: PERMISSIVE")) return false;
        }
        return true;
      }, "config change applied in both clusters");
      await h.allConverged("converged after the config change");
    });

    await t.step(
      "an exported Service discovered in cluster-2 reaches cluster-1's desired state",
      async () => {
        await editFile(
          `${h.tmp}/clusters/cluster-2/apps/ratings.yaml`,
          "    app: ratings\nspec:",
          '    app: ratings\n    meshrelay.io/export: "true"\nspec:',
        );
        const se = "networking.istio.io/v1|ServiceEntry|istio-system|ratings-apps-cluster-2";
        await waitUntil(
          async () => (await h.agents.get("cluster-1")!.applier.held()).has(se),
          "ServiceEntry applied",
        );
        await h.allConverged("converged after the discovery change");
      },
    );

    await t.step("an agent restart sends only differences, both ways", async () => {
      await h.stopAgent("cluster-1");
      // While it is down: one Service changes in its cluster.
      await editFile(`${h.tmp}/clusters/cluster-1/apps/reviews.yaml`, "port: 9090", "port: 9091");
      h.startAgent("cluster-1");
      await h.allConverged("converged after the agent restart");
      const s = h.agents.get("cluster-1")!.agent.stats;
      assertEquals(s.discoveryObjectsSent, 1, "only the changed Service is pushed");
      assertEquals(s.discoveryDeletesSent, 0);
      assertEquals(s.desiredObjectsReceived, 0, "the applier's files are held: nothing desired is re-sent");
      assertEquals(s.desiredDeletesReceived, 0);
    });

    await t.step("a server restart: agents reconnect, desired state is not re-sent", async () => {
      const before = new Map(CLUSTERS.map((c) => [c, h.agents.get(c)!.agent.stats]));
      await h.stopServer();
      await h.startServer();
      await waitUntil(
        () =>
          CLUSTERS.every((c) => h.agents.get(c)!.agent.stats.syncedSessions > before.get(c)!.syncedSessions),
        "reconnected",
      );
      await h.allConverged("converged after the server restart");
      for (const c of CLUSTERS) {
        const now = h.agents.get(c)!.agent.stats;
        // The new server holds no inventory, so discovery is pushed in full; desired state is held by the agent.
        assertEquals(
          now.desiredObjectsReceived,
          before.get(c)!.desiredObjectsReceived,
          `${c}: nothing re-sent`,
        );
        assertEquals(
          now.discoveryObjectsSent - before.get(c)!.discoveryObjectsSent,
          h.agents.get(c)!.agent.discovered().size,
        );
      }
    });

    await t.step("deregistration closes the stream; the cluster's exports leave the others", async () => {
      const ends = h.ends.get("cluster-2")!;
      const n = ends.length;
      const clusters = `${h.tmp}/config/clusters.yaml`;
      const text = await Deno.readTextFile(clusters);
      await Deno.writeTextFile(clusters, text.slice(0, text.indexOf("---")));
      await waitUntil(() => ends.length > n, "cluster-2's stream ended");
      assertEquals(ends[n].code, GrpcStatus.PERMISSION_DENIED);
      assertEquals(ends[n].message, "cluster deregistered");
      await waitUntil(
        () => !h.desiredKeys("cluster-1").some((k) => k.includes("cluster-2")),
        "exports withdrawn",
      );
      await waitUntil(async () => await h.converged("cluster-1"), "cluster-1 converged without cluster-2");
      assert(!h.hub.status("cluster-2"));
      // It keeps retrying (with backoff) and keeps being refused.
      await waitUntil(() => ends.length > n + 1, "a refused retry");
      assertEquals(ends.at(-1)!.code, GrpcStatus.PERMISSION_DENIED);
      assertEquals(h.agents.get("cluster-2")!.agent.state !== "synced", true);
      await Deno.writeTextFile(clusters, text);
      await h.allConverged("re-registered cluster-2 converged again");
    });
  } finally {
    await h.close();
  }
});
