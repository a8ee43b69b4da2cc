import { assert, assertEquals } from "../testing/assert.ts";
import { DesiredStateTracker, discoveryChangeMatters } from "./desired_tracker.ts";
import { Inventory } from "./inventory.ts";
import type { ClusterInfo, KubeObject } from "./types.ts";

const V = "meshrelay.io/v1alpha1";
const clusters: ClusterInfo[] = [{ name: "c1", labels: { env: "prod" } }, {
  name: "c2",
  labels: { env: "dev" },
}];
const cc = (name: string, target: Record<string, unknown>, value: string): KubeObject => ({
  apiVersion: V,
  kind: "ClusterConfig",
  metadata: { name },
  spec: {
    ...target,
    objects: [{ apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace: "n" }, data: { value } }],
  },
});
const fed: KubeObject = {
  apiVersion: V,
  kind: "ServiceFederation",
  metadata: { name: "f" },
  spec: { clusterSelector: {}, exportSelector: { matchLabels: { export: "yes" } } },
};
const svc = (port: number, exported = true): KubeObject => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "s", namespace: "n", labels: exported ? { export: "yes" } : {} },
  spec: { ports: [{ port }] },
});

Deno.test("DesiredStateTracker gives new generations only to clusters whose content changed", async (t) => {
  const tracker = new DesiredStateTracker();
  const i1 = new Inventory();
  const inventories = new Map([["c1", i1]]);
  let configs = [cc("prod", { clusterSelector: { matchLabels: { env: "prod" } } }, "1"), fed];
  const steps: [string, () => ReturnType<DesiredStateTracker["update"]>, [string, number][], string[]][] = [
    [
      "first computation: every cluster at generation 1",
      () => tracker.update(clusters, configs, inventories),
      [["c1", 1], [
        "c2",
        1,
      ]],
      [],
    ],
    ["nothing changed: nobody", () => tracker.update(clusters, configs, inventories), [], []],
    [
      "a config for c1 only changes: c1",
      () => {
        configs = [cc("prod", { clusterSelector: { matchLabels: { env: "prod" } } }, "2"), fed];
        return tracker.update(clusters, configs, inventories);
      },
      [["c1", 2]],
      [],
    ],
    [
      "an exported Service appears in c1: only c2 (c1 never gets its own)",
      () => {
        i1.applySnapshot([svc(80)]);
        return tracker.update(clusters, configs, inventories);
      },
      [["c2", 2]],
      [],
    ],
    [
      "an unexported Service: nobody",
      () => {
        i1.applyDeltas([{
          type: "upsert",
          object: { ...svc(1, false), metadata: { name: "t", namespace: "n" } },
        }]);
        return tracker.update(clusters, configs, inventories);
      },
      [],
      [],
    ],
    ["c2 deregistered: removed", () => tracker.update(clusters.slice(0, 1), configs, inventories), [], [
      "c2",
    ]],
    ["c2 back: its generation keeps growing", () => tracker.update(clusters, configs, inventories), [[
      "c2",
      3,
    ]], []],
  ];
  for (const [name, run, changed, removed] of steps) {
    await t.step(name, () => {
      const r = run();
      assertEquals(r.changed.map((c) => [c.cluster, c.generation]), changed);
      assertEquals(r.removed, removed);
    });
  }
  await t.step("get exposes items with versions for diffing", () => {
    const s = tracker.get("c2")!;
    assertEquals([...s.items.keys()], ["networking.istio.io/v1|ServiceEntry|istio-system|s-n-c1"]);
    assertEquals(tracker.clusters(), ["c1", "c2"]);
  });
  await t.step("document errors are reported", () => {
    const r = tracker.update(
      clusters,
      [{ apiVersion: V, kind: "Nope", metadata: { name: "x" } }],
      inventories,
    );
    assertEquals(r.errors.length, 1);
  });
  await t.step("firstGeneration", () => {
    const r = new DesiredStateTracker({ firstGeneration: 1000 }).update(clusters, configs, inventories);
    assertEquals(r.changed.map((c) => c.generation), [1000, 1000]);
  });
});

Deno.test("discoveryChangeMatters", async (t) => {
  const cases: [string, string[], boolean][] = [
    ["Service", ["v1|Service|n|s"], true],
    ["Deployment only", ["apps/v1|Deployment|n|d"], false],
    ["nothing", [], false],
  ];
  for (const [name, keys, want] of cases) {
    await t.step(name, () => assertEquals(discoveryChangeMatters(keys), want));
  }
});

Deno.test("DesiredStateTracker shares the content of clusters that want the same objects", async (t) => {
  const fleet: ClusterInfo[] = ["a", "b", "c"].map((name) => ({ name, labels: { env: "prod" } }));
  const odd: ClusterInfo = { name: "d", labels: { env: "dev" } };
  const tracker = new DesiredStateTracker();
  const prod = cc("prod", { clusterSelector: { matchLabels: { env: "prod" } } }, "1");
  tracker.update([...fleet, odd], [prod], new Map());
  await t.step("equal content: one items map and object list", () => {
    const [a, b, c] = fleet.map((x) => tracker.get(x.name)!);
    assert(a.items === b.items && b.items === c.items, "clusters with equal content share one items map");
    assert(a.objects === c.objects, "clusters with equal content share one object list");
    assertEquals(a.digest, c.digest);
  });
  await t.step("other content: its own", () => {
    const d = tracker.get("d")!;
    assertEquals(d.items === tracker.get("a")!.items, false);
    assertEquals(d.items.size, 0);
  });
  await t.step("a cluster that comes to want the same content joins it", () => {
    const before = tracker.get("a")!.items;
    const r = tracker.update([...fleet, { ...odd, labels: { env: "prod" } }], [prod], new Map());
    assertEquals(r.changed.map((s) => s.cluster), ["d"]);
    assert(tracker.get("d")!.items === before, "an unchanged cluster keeps its items map");
    assertEquals(tracker.get("d")!.generation, 2);
  });
});
