import { assertEquals, assertThrows } from "../testing/assert.ts";
import { ClusterRegistry } from "./cluster_registry.ts";
import type { KubeObject } from "./types.ts";

const kc = (name: string, labels: Record<string, string> = {}): KubeObject => ({
  apiVersion: "meshrelay.io/v1alpha1",
  kind: "KubernetesCluster",
  metadata: { name, labels },
});

Deno.test("ClusterRegistry", async (t) => {
  const r = ClusterRegistry.fromConfig([kc("b", { env: "dev" }), kc("a", { env: "prod" })]);
  await t.step("lists registered clusters by name, ignoring other documents", () => {
    assertEquals(r.list().map((c) => c.name), ["a", "b"]);
    assertEquals(r.get("a")?.labels, { env: "prod" });
    assertEquals([r.has("a"), r.has("zz"), r.get("zz")], [true, false, undefined]);
  });
  const steps: [string, KubeObject[], { added: string[]; removed: string[]; updated: string[] }][] = [
    ["relabel and add", [kc("a", { env: "dev" }), kc("b", { env: "dev" }), kc("c")], {
      added: ["c"],
      removed: [],
      updated: ["a"],
    }],
    ["remove (deregistration)", [kc("a", { env: "dev" })], { added: [], removed: ["b", "c"], updated: [] }],
    ["unchanged", [kc("a", { env: "dev" })], { added: [], removed: [], updated: [] }],
  ];
  for (const [name, docs, want] of steps) await t.step(name, () => assertEquals(r.update(docs), want));
  await t.step("returned objects are frozen: the registry cannot be changed through them", () => {
    assertThrows(() => {
      (r.get("a")!.labels as Record<string, string>).env = "tampered";
    }, TypeError);
    assertThrows(() => (r.names() as string[]).push("zz"), TypeError);
    assertEquals([r.get("a")?.labels.env, r.names()], ["dev", ["a"]]);
  });
});
