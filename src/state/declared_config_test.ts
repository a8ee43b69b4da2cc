import { assertEquals, assertMatch } from "../testing/assert.ts";
import { matchesLabels, parseDeclaredConfig, rootTrustPolicyFor, targets } from "./declared_config.ts";
import type { KubeObject } from "./types.ts";

const V = "meshrelay.io/v1alpha1";
const doc = (kind: string, name: string, spec?: unknown, labels?: Record<string, string>): KubeObject => ({
  apiVersion: V,
  kind,
  metadata: { name, ...(labels ? { labels } : {}) },
  ...(spec !== undefined ? { spec } : {}),
});
const cm = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "c", namespace: "n" }, data: { a: "1" } };

Deno.test("parseDeclaredConfig accepts", async (t) => {
  await t.step("KubernetesCluster with labels and default domain", () => {
    const r = parseDeclaredConfig([doc("KubernetesCluster", "cluster-1", undefined, { env: "prod" })]);
    assertEquals(r.errors, []);
    assertEquals(r.clusters, [{
      name: "cluster-1",
      labels: { env: "prod" },
      clusterDomain: "cluster.local",
    }]);
  });
  await t.step("ClusterConfig by names and by selector, sorted by name", () => {
    const r = parseDeclaredConfig([
      doc("ClusterConfig", "z", { clusterSelector: { matchLabels: { env: "prod" } }, objects: [cm] }),
      doc("ClusterConfig", "a", { clusters: ["cluster-1"], objects: [] }),
    ]);
    assertEquals(r.errors, []);
    assertEquals(r.clusterConfigs.map((c) => [c.name, c.target]), [
      ["a", { clusters: ["cluster-1"], matchLabels: undefined }],
      ["z", { clusters: [], matchLabels: { env: "prod" } }],
    ]);
    assertEquals(r.clusterConfigs[1].objects, [cm]);
  });
  await t.step("ServiceFederation with default namespace", () => {
    const r = parseDeclaredConfig([
      doc("ServiceFederation", "f", {
        clusterSelector: {},
        exportSelector: { matchLabels: { "meshrelay.io/export": "true" } },
      }),
    ]);
    assertEquals(r.errors, []);
    assertEquals(r.federations, [{
      name: "f",
      target: { clusters: [], matchLabels: {} },
      exportLabels: { "meshrelay.io/export": "true" },
      namespace: "istio-system",
    }]);
  });
  await t.step("RootTrustPolicy: generated for every cluster, or a secret for selected ones", () => {
    const r = parseDeclaredConfig([
      doc("RootTrustPolicy", "z-own", {
        clusterSelector: { matchLabels: { env: "prod" } },
        mgmtServerCa: { secretRef: { name: "my-istio-root" } },
        intermediateCertOptions: { ttlDays: 30 },
      }),
      doc("RootTrustPolicy", "a-generated", { clusters: ["c2"], mgmtServerCa: { generated: {} } }),
      doc("RootTrustPolicy", "m-all", { mgmtServerCa: { generated: {} } }),
    ]);
    assertEquals(r.errors, []);
    assertEquals(r.rootTrustPolicies, [
      {
        name: "a-generated",
        target: { clusters: ["c2"], matchLabels: undefined },
        ca: { generated: true },
        ttlDays: 365,
      },
      { name: "m-all", ca: { generated: true }, ttlDays: 365 },
      {
        name: "z-own",
        target: { clusters: [], matchLabels: { env: "prod" } },
        ca: { secretRef: "my-istio-root" },
        ttlDays: 30,
      },
    ]);
    // The first by name that targets the cluster; one without target serves everyone.
    const c = (name: string, env: string) => ({ name, labels: { env } });
    assertEquals(rootTrustPolicyFor(r.rootTrustPolicies, c("c2", "dev"))?.name, "a-generated");
    assertEquals(rootTrustPolicyFor(r.rootTrustPolicies, c("c1", "prod"))?.name, "m-all");
    assertEquals(
      rootTrustPolicyFor(r.rootTrustPolicies.filter((p) => p.name !== "m-all"), c("c1", "prod"))?.name,
      "z-own",
    );
    assertEquals(
      rootTrustPolicyFor(r.rootTrustPolicies.filter((p) => p.name !== "m-all"), c("c1", "dev")),
      undefined,
    );
  });
});

Deno.test("parseDeclaredConfig rejects one document at a time", async (t) => {
  const cases: [string, KubeObject, RegExp][] = [
    [
      "wrong apiVersion",
      { ...doc("ClusterConfig", "x", { clusters: ["a"] }), apiVersion: "v1" },
      /apiVersion must be/,
    ],
    ["unknown kind", doc("Foo", "x", {}), /unknown kind/],
    ["cluster name not a DNS name", doc("KubernetesCluster", "Bad_Name"), /DNS name/],
    ["no target", doc("ClusterConfig", "x", { objects: [] }), /targets no cluster/],
    ["clusters not strings", doc("ClusterConfig", "x", { clusters: [1] }), /list of cluster names/],
    [
      "invalid object",
      doc("ClusterConfig", "x", { clusters: ["a"], objects: [{ kind: "X" }] }),
      /objects\[0\]: missing apiVersion/,
    ],
    [
      "unquoted label value",
      doc("ClusterConfig", "x", { clusterSelector: { matchLabels: { a: true } } }),
      /quote/,
    ],
    [
      "empty export selector",
      doc("ServiceFederation", "x", { clusters: ["a"], exportSelector: {} }),
      /at least one label/,
    ],
    [
      "bad namespace",
      doc("ServiceFederation", "x", {
        clusters: ["a"],
        exportSelector: { matchLabels: { a: "b" } },
        namespace: "A B",
      }),
      /namespace/,
    ],
    ["RootTrustPolicy without CA", doc("RootTrustPolicy", "x", {}), /mgmtServerCa/],
    [
      "RootTrustPolicy with both CAs",
      doc("RootTrustPolicy", "x", { mgmtServerCa: { generated: {}, secretRef: { name: "s" } } }),
      /exactly one/,
    ],
    [
      "RootTrustPolicy with a bad secret name",
      doc("RootTrustPolicy", "x", { mgmtServerCa: { secretRef: { name: "A B" } } }),
      /secretRef.name/,
    ],
    [
      "RootTrustPolicy with a zero TTL",
      doc("RootTrustPolicy", "x", {
        mgmtServerCa: { generated: {} },
        intermediateCertOptions: { ttlDays: 0 },
      }),
      /ttlDays/,
    ],
  ];
  for (const [name, d, re] of cases) {
    await t.step(name, () => {
      const good = doc("KubernetesCluster", "ok");
      const r = parseDeclaredConfig([d, good]);
      assertEquals(r.errors.length, 1);
      assertMatch(r.errors[0], re);
      assertEquals(r.clusters.map((c) => c.name), ["ok"]);
    });
  }
  await t.step("a duplicate name keeps the first", () => {
    const r = parseDeclaredConfig([
      doc("KubernetesCluster", "a", undefined, { v: "1" }),
      doc("KubernetesCluster", "a", undefined, { v: "2" }),
    ]);
    assertEquals(r.clusters.map((c) => c.labels.v), ["1"]);
    assertMatch(r.errors[0], /declared twice/);
  });
});

Deno.test("targets and matchesLabels", async (t) => {
  const c = { name: "c1", labels: { env: "prod", region: "eu" } };
  const cases: [string, Parameters<typeof targets>[0], boolean][] = [
    ["by name", { clusters: ["c1"] }, true],
    ["other name", { clusters: ["c2"] }, false],
    ["selector subset", { clusters: [], matchLabels: { env: "prod" } }, true],
    ["selector mismatch", { clusters: [], matchLabels: { env: "dev" } }, false],
    ["empty selector selects all", { clusters: [], matchLabels: {} }, true],
    ["no selector, no names", { clusters: [] }, false],
    ["union of name and selector", { clusters: ["c1"], matchLabels: { env: "dev" } }, true],
  ];
  for (const [name, target, want] of cases) await t.step(name, () => assertEquals(targets(target, c), want));
  await t.step(
    "matchesLabels with missing labels",
    () => assertEquals(matchesLabels(undefined, { a: "b" }), false),
  );
});
