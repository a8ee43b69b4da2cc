import { systemClock } from "../../src/clock.ts";
import { nullLogger } from "../../src/log.ts";
import { KubeDiscoverySource } from "../../src/kube/mod.ts";
import { type DiscoveryEvent, type KubeObject, objectKey, resourceVersionOf } from "../../src/state/mod.ts";
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { Collector, TestKube, waitUntil } from "./backend_helpers.ts";
import { kubeAvailable, startTestCluster } from "./harness.ts";

type Item = DiscoveryEvent | { type: "resync" };

const ns = (name: string): KubeObject => ({ apiVersion: "v1", kind: "Namespace", metadata: { name } });
const svc = (name: string, namespace: string, labels: Record<string, string> = {}): KubeObject => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace, labels },
  spec: { ports: [{ name: "http", port: 9080 }], selector: { app: name } },
});
const workload = (
  kind: string,
  name: string,
  namespace: string,
  extra: Record<string, unknown> = {},
): KubeObject => {
  const labels = { app: name };
  const template = {
    metadata: { labels },
    spec: { containers: [{ name: "c", image: "registry.example/istio/pilot:1.27.1" }] },
  };
  return {
    apiVersion: "apps/v1",
    kind,
    metadata: { name, namespace, labels },
    spec: {
      selector: { matchLabels: labels },
      template,
      ...(kind === "StatefulSet" ? { serviceName: name } : {}),
    },
    ...extra,
  };
};

const istioOperatorCrd: KubeObject = {
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: { name: "istiooperators.install.istio.io" },
  spec: {
    group: "install.istio.io",
    names: {
      kind: "IstioOperator",
      plural: "istiooperators",
      singular: "istiooperator",
      listKind: "IstioOperatorList",
    },
    scope: "Namespaced",
    versions: [{
      name: "v1alpha1",
      served: true,
      storage: true,
      schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } },
    }],
  },
};

const upsertKeys = (items: Item[]) => items.flatMap((i) => i.type === "upsert" ? [objectKey(i.object)] : []);
const deleteKeys = (items: Item[]) => items.flatMap((i) => i.type === "delete" ? [i.key] : []);

Deno.test({
  name: "KubeDiscoverySource against a real kube-apiserver: snapshot, watch, resync after expiry, late CRDs",
  ignore: !kubeAvailable(),
  fn: async (t) => {
    // No watch cache and compaction every second: a watch from an old version really expires (410).
    await using cluster = await startTestCluster({
      name: "discovery",
      apiServerFlags: ["--watch-cache=false", "--etcd-compaction-interval=1s"],
    });
    const kube = new TestKube(cluster.kubeConfig);
    await kube.apply(ns("apps"), ns("istio-system"));
    await kube.apply(
      svc("reviews", "apps", { "meshrelay.io/export": "true" }),
      workload("Deployment", "reviews-v1", "apps"),
      workload("StatefulSet", "ledger", "apps"),
      workload("DaemonSet", "node-agent", "apps"),
      workload("Deployment", "istiod", "istio-system", {
        metadata: {
          name: "istiod",
          namespace: "istio-system",
          labels: { app: "istiod", "istio.io/rev": "default" },
        },
      }),
    );
    const newSource = (kinds?: string[]) =>
      new KubeDiscoverySource({
        kubeConfig: cluster.kubeConfig,
        clock: systemClock,
        log: nullLogger,
        kinds,
        absentKindRecheckMs: 200,
      });

    await t.step(
      "snapshot lists every default kind, trimmed, and skips IstioOperator without its CRD",
      async () => {
        const src = newSource();
        const snap = await src.snapshot();
        const keys = snap.map(objectKey);
        for (
          const k of [
            "v1|Namespace||apps",
            "v1|Service|apps|reviews",
            "apps/v1|Deployment|apps|reviews-v1",
            "apps/v1|StatefulSet|apps|ledger",
            "apps/v1|DaemonSet|apps|node-agent",
            "apps/v1|Deployment|istio-system|istiod",
          ]
        ) assert(keys.includes(k), `${k} in ${keys.join(", ")}`);
        assertEquals(keys, [...keys].sort());
        assert(!src.servedKinds.includes("install.istio.io/v1alpha1/IstioOperator"));
        for (const o of snap) {
          for (const f of ["managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"]) {
            assert(!(f in o.metadata), `${objectKey(o)} still has metadata.${f}`);
          }
          if (o.kind !== "Service" && o.kind !== "Namespace") {
            assert(!("status" in o), `${objectKey(o)} has status`);
          }
        }
        const istiod = snap.find((o) => objectKey(o) === "apps/v1|Deployment|istio-system|istiod")!;
        assertEquals(istiod.metadata.labels, { app: "istiod", "istio.io/rev": "default" });
        // Versions are content hashes of stable content: a second source lists the same versions.
        const again = await newSource().snapshot();
        assertEquals(again.map(resourceVersionOf), snap.map(resourceVersionOf));
      },
    );

    await t.step("a kinds list narrows discovery", async () => {
      const snap = await newSource(["Service", "apps/v1/StatefulSet"]).snapshot();
      assertEquals([...new Set(snap.map((o) => o.kind))].sort(), ["Service", "StatefulSet"]);
    });

    await t.step("watch yields upserts for real changes only, and deletes", async () => {
      const src = newSource();
      await src.snapshot();
      const c = new Collector<Item>((signal) => src.watch(signal));
      try {
        await kube.apply(svc("ratings", "apps"));
        await c.waitFor("upsert of ratings", (i) => upsertKeys(i).includes("v1|Service|apps|ratings"));
        // Noise only (an annotation trimmed away), then a real change: the next event is the real one.
        await kube.mergePatch(workload("Deployment", "reviews-v1", "apps"), {
          metadata: { annotations: { "deployment.kubernetes.io/revision": "7" } },
        });
        await kube.mergePatch(svc("ratings", "apps"), { metadata: { labels: { tier: "backend" } } });
        await c.waitFor("upsert of relabelled ratings", (i) => upsertKeys(i).length === 2);
        assertEquals(upsertKeys(c.items), ["v1|Service|apps|ratings", "v1|Service|apps|ratings"]);
        const last = c.items.at(-1)!;
        assert(last.type === "upsert" && last.object.metadata.labels?.tier === "backend");
        await kube.delete(svc("ratings", "apps"));
        await c.waitFor("delete of ratings", (i) => deleteKeys(i).includes("v1|Service|apps|ratings"));
        assertEquals(c.items.filter((i) => i.type === "resync"), []);
      } finally {
        await c.stop();
      }
    });

    /** Waits until etcd has compacted away every version up to now (the API server compacts each second). */
    const waitCompactedPastNow = async () => {
      const list = await kube.rest.request<{ metadata: { resourceVersion: string } }>({
        path: "/api/v1/namespaces",
      });
      const rv = list.metadata.resourceVersion;
      // A later write, so the compaction can move past `rv`.
      await kube.apply({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "tick", namespace: "apps" },
        data: { rv },
      });
      await waitUntil(`compaction past ${rv}`, 60_000, async () => {
        try {
          await kube.rest.request({
            path: "/api/v1/namespaces",
            query: { resourceVersion: rv, resourceVersionMatch: "Exact", limit: 1 },
          });
          return false;
        } catch (e) {
          return (e as { httpStatus?: number }).httpStatus === 410;
        }
      });
    };

    await t.step("expired watch: resync, then the differences when the caller keeps iterating", async () => {
      const src = newSource();
      const before = await src.snapshot();
      await kube.apply(svc("details", "apps"));
      await waitCompactedPastNow();
      const c = new Collector<Item>((signal) => src.watch(signal));
      try {
        await c.waitFor("upsert of details", (i) => upsertKeys(i).includes("v1|Service|apps|details"));
        assertEquals(c.items[0], { type: "resync" });
        // Re-listing yields only what changed: nothing already known is sent again.
        assertEquals(upsertKeys(c.items), ["v1|Service|apps|details"]);
        assertEquals(deleteKeys(c.items), []);
        // And the watch goes on from the fresh list.
        await kube.delete(svc("details", "apps"));
        await c.waitFor("delete of details", (i) => deleteKeys(i).includes("v1|Service|apps|details"));
        assert(before.every((o) => objectKey(o) !== "v1|Service|apps|details"));
      } finally {
        await c.stop();
      }
    });

    await t.step(
      "expired watch: a caller that re-snapshots gets the full state and the watch continues",
      async () => {
        const src = newSource();
        await src.snapshot();
        await kube.apply(svc("productpage", "apps"));
        await waitCompactedPastNow();
        const ctl = new AbortController();
        const it = src.watch(ctl.signal)[Symbol.asyncIterator]();
        try {
          const first = await it.next();
          assertEquals(first.value, { type: "resync" });
          const snap = await src.snapshot();
          assert(snap.some((o) => objectKey(o) === "v1|Service|apps|productpage"));
          await kube.apply(svc("productpage", "apps", { version: "v2" }));
          // Everything after the new snapshot arrives; nothing before it is replayed.
          for (;;) {
            const r = await it.next();
            if (r.value?.type === "resync") continue;
            assert(r.value?.type === "upsert", JSON.stringify(r.value));
            assertEquals(objectKey(r.value.object), "v1|Service|apps|productpage");
            assertEquals(r.value.object.metadata.labels, { version: "v2" });
            break;
          }
        } finally {
          ctl.abort();
          await it.return?.();
        }
      },
    );

    await t.step("a kind whose CRD appears later is discovered without a restart", async () => {
      const src = newSource();
      await src.snapshot();
      const c = new Collector<Item>((signal) => src.watch(signal));
      try {
        await kube.installCrds([istioOperatorCrd]);
        await kube.apply({
          apiVersion: "install.istio.io/v1alpha1",
          kind: "IstioOperator",
          metadata: { name: "control-plane", namespace: "istio-system" },
          spec: { profile: "minimal", revision: "1-27" },
        });
        await c.waitFor(
          "upsert of the IstioOperator",
          (i) => upsertKeys(i).includes("install.istio.io/v1alpha1|IstioOperator|istio-system|control-plane"),
        );
        const ev = c.items.find((i) => i.type === "upsert" && i.object.kind === "IstioOperator");
        assert(ev?.type === "upsert");
        assertEquals(ev.object.spec, { profile: "minimal", revision: "1-27" });
      } finally {
        await c.stop();
      }
    });
  },
});
