/**
 * The state pipeline end to end without the wire, on the shipped examples: discovery from cluster
 * folders → chunked snapshots → server inventories → desired state per cluster → diff by version →
 * apply with prune, then a "reconnect" after changes on both sides that converges with no loss and
 * no duplicates.
 */
import { systemClock } from "../src/clock.ts";
import { nullLogger } from "../src/log.ts";
import {
  applyVersionDiff,
  chunkBySize,
  ClusterRegistry,
  DesiredStateTracker,
  diffByVersion,
  DirectoryApplier,
  DirectoryConfigSource,
  DirectoryDiscoverySource,
  Inventory,
  jsonSize,
  type KubeObject,
  type ObjectKey,
  parseDeclaredConfig,
  parseManifests,
  versionedMap,
  type VersionedObject,
} from "../src/state/mod.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";

const EXAMPLES = new URL("../examples/", import.meta.url).pathname;

async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyTree(`${from}/${e.name}`, `${to}/${e.name}`);
    else await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

async function appliedObjects(dir: string): Promise<KubeObject[]> {
  const out: KubeObject[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.name.startsWith(".")) continue;
      if (e.isDirectory) await walk(`${d}/${e.name}`);
      else out.push(...parseManifests(await Deno.readTextFile(`${d}/${e.name}`), e.name).objects);
    }
  };
  await walk(dir);
  return out;
}

const keysOf = (objs: KubeObject[]) =>
  objs.map((o) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`).sort();

Deno.test("examples/config is valid declared config", async () => {
  const src = new DirectoryConfigSource({ root: `${EXAMPLES}config`, clock: systemClock, log: nullLogger });
  const parsed = parseDeclaredConfig(await src.list());
  assertEquals(parsed.errors, []);
  assertEquals(parsed.clusters.map((c) => c.name), ["cluster-1", "cluster-2"]);
  assertEquals(parsed.clusterConfigs.map((c) => c.name), ["eu-settings", "prod-baseline"]);
  assertEquals(parsed.federations.map((c) => c.name), ["exported-services"]);
});

Deno.test("state pipeline on the examples converges, then resyncs by difference", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "mr-pipeline-" });
  await copyTree(`${EXAMPLES}clusters`, `${tmp}/clusters`);
  const clusterNames = ["cluster-1", "cluster-2"];
  const configSource = new DirectoryConfigSource({
    root: `${EXAMPLES}config`,
    clock: systemClock,
    log: nullLogger,
  });
  const configs = await configSource.list();
  const registry = ClusterRegistry.fromConfig(configs);
  const tracker = new DesiredStateTracker();
  const inventories = new Map<string, Inventory>();
  const discovery = new Map(clusterNames.map((n) => [
    n,
    new DirectoryDiscoverySource({
      root: `${tmp}/clusters/${n}`,
      clock: systemClock,
      log: nullLogger,
      kinds: ["Namespace", "Service", "Deployment"],
    }),
  ]));
  const appliers = new Map(
    clusterNames.map((n) => [n, new DirectoryApplier({ root: `${tmp}/applied/${n}`, log: nullLogger })]),
  );
  // What each agent holds of its desired state (received objects), as it would keep in memory.
  const held = new Map<string, Map<ObjectKey, VersionedObject>>(clusterNames.map((n) => [n, new Map()]));
  let sentUpserts = 0;

  const push = async (n: string) => {
    const snap = await discovery.get(n)!.snapshot();
    const inv = inventories.get(n);
    if (!inv) {
      // First connection: a full snapshot in chunks of at most 1 KiB.
      const chunks = chunkBySize(snap, 1024, jsonSize);
      assert(chunks.length > 1, "the examples are big enough to need several chunks");
      for (const c of chunks) assert(c.reduce((a, o) => a + jsonSize(o), 0) <= 1024);
      const fresh = new Inventory();
      fresh.applySnapshot(chunks.flat());
      inventories.set(n, fresh);
      return;
    }
    // Reconnect: the server reports its versions, the agent sends only the difference.
    const d = diffByVersion(inv.versions(), versionedMap(snap));
    sentUpserts += d.upserts.length;
    inv.applyDiff(d);
  };
  const pull = async (n: string) => {
    const want = tracker.get(n)!.items;
    const have = held.get(n)!;
    const d = diffByVersion(new Map([...have].map(([k, v]) => [k, v.version])), want);
    sentUpserts += d.upserts.length;
    const next = applyVersionDiff(have, d);
    held.set(n, next);
    const statuses = await appliers.get(n)!.apply([...next.values()].map((v) => v.object));
    assertEquals(statuses.filter((s) => s.state === "failed"), []);
    return statuses;
  };

  await t.step(
    "first round: every cluster gets its declared objects and the other's exported Service",
    async () => {
      for (const n of clusterNames) await push(n);
      const r = tracker.update(registry.list(), configs, inventories);
      assertEquals(r.errors, []);
      assertEquals(r.changed.map((c) => [c.cluster, c.generation]), [["cluster-1", 1], ["cluster-2", 1]]);
      for (const n of clusterNames) await pull(n);
      assertEquals(keysOf(await appliedObjects(`${tmp}/applied/cluster-1`)), [
        "ConfigMap/apps/region-settings",
        "Namespace//mesh-config",
        "PeerAuthentication/istio-system/default",
      ]);
      assertEquals(keysOf(await appliedObjects(`${tmp}/applied/cluster-2`)), [
        "Namespace//mesh-config",
        "PeerAuthentication/istio-system/default",
        "ServiceEntry/istio-system/reviews-apps-cluster-1",
      ]);
      const se = (await appliedObjects(`${tmp}/applied/cluster-2`)).find((o) => o.kind === "ServiceEntry")!;
      assertEquals((se.spec as { hosts: string[] }).hosts, ["reviews.apps.svc.cluster.local"]);
    },
  );

  await t.step("while disconnected cluster-2 exports a Service and cluster-1 drops its export", async () => {
    const ratings = `${tmp}/clusters/cluster-2/apps/ratings.yaml`;
    await Deno.writeTextFile(
      ratings,
      (await Deno.readTextFile(ratings)).replace(
        "    app: ratings\nspec:",
        '    app: ratings\n    meshrelay.io/export: "true"\nspec:',
      ),
    );
    const reviews = `${tmp}/clusters/cluster-1/apps/reviews.yaml`;
    await Deno.writeTextFile(
      reviews,
      (await Deno.readTextFile(reviews)).replace(
        'meshrelay.io/export: "true"',
        'meshrelay.io/export: "false"',
      ),
    );
  });

  await t.step("reconnect: only differences travel, both clusters converge", async () => {
    sentUpserts = 0;
    for (const n of clusterNames) await push(n);
    const r = tracker.update(registry.list(), configs, inventories);
    assertEquals(r.changed.map((c) => [c.cluster, c.generation]), [["cluster-1", 2], ["cluster-2", 2]]);
    const s1 = await pull("cluster-1");
    const s2 = await pull("cluster-2");
    // Two changed Services pushed, one new ServiceEntry pulled: nothing else was re-sent.
    assertEquals(sentUpserts, 3);
    assertEquals(s1.filter((s) => s.message !== "unchanged").map((s) => `${s.state} ${s.key}`), [
      "applied networking.istio.io/v1|ServiceEntry|istio-system|ratings-apps-cluster-2",
    ]);
    assertEquals(s2.filter((s) => s.message !== "unchanged").map((s) => `${s.state} ${s.key}`), [
      "pruned networking.istio.io/v1|ServiceEntry|istio-system|reviews-apps-cluster-1",
    ]);
    for (const n of clusterNames) {
      const onDisk = await appliedObjects(`${tmp}/applied/${n}`);
      const want = tracker.get(n)!.objects;
      assertEquals(keysOf(onDisk), keysOf(want), `no loss and no duplicates in ${n}`);
      assertEquals(new Set(keysOf(onDisk)).size, onDisk.length);
    }
  });

  await t.step("a further round with no change sends nothing and writes nothing", async () => {
    sentUpserts = 0;
    for (const n of clusterNames) await push(n);
    const r = tracker.update(registry.list(), configs, inventories);
    assertEquals(r.changed, []);
    for (const n of clusterNames) {
      const s = await pull(n);
      assert(s.every((x) => x.message === "unchanged"));
    }
    assertEquals(sentUpserts, 0);
  });
  await t.step("an agent restart resyncs from what its applier still holds: nothing re-sent", async () => {
    for (const n of clusterNames) {
      const restarted = new DirectoryApplier({ root: `${tmp}/applied/${n}`, log: nullLogger });
      const have = await restarted.held();
      const d = diffByVersion(new Map([...have].map(([k, v]) => [k, v.version])), tracker.get(n)!.items);
      assertEquals(d, { upserts: [], deletes: [] });
    }
  });
  await Deno.remove(tmp, { recursive: true });
});
