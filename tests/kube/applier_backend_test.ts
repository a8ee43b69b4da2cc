import { systemClock } from "../../src/clock.ts";
import { nullLogger } from "../../src/log.ts";
import { APPLIED_RECORD_NAME, KubeApplier, ORIGIN_ANNOTATION } from "../../src/kube/mod.ts";
import {
  type KubeObject,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  objectKey,
  type ObjectStatus,
  resourceVersionOf,
} from "../../src/state/mod.ts";
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { TestKube } from "./backend_helpers.ts";
import { kubeAvailable, startTestCluster } from "./harness.ts";

const managed = { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE };
const ns = (name: string): KubeObject => ({
  apiVersion: "v1",
  kind: "Namespace",
  metadata: { name, labels: managed },
});
const cm = (namespace: string, name: string, data: Record<string, string>, labels = managed): KubeObject => ({
  apiVersion: "v1",
  kind: "ConfigMap",
  metadata: { name, namespace, labels, annotations: { "meshrelay.io/declared-by": "ClusterConfig/test" } },
  data,
});
const svc: KubeObject = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "reviews", namespace: "apps", labels: managed },
  spec: {
    ports: [{ name: "http", port: 9080 }, { name: "grpc", port: 9090, protocol: "TCP" }],
    selector: { app: "r" },
  },
};
const widgetCrd: KubeObject = {
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: { name: "widgets.example.meshrelay.io", labels: managed },
  spec: {
    group: "example.meshrelay.io",
    names: { kind: "Widget", plural: "widgets", singular: "widget", listKind: "WidgetList" },
    scope: "Namespaced",
    versions: [{
      name: "v1",
      served: true,
      storage: true,
      schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } },
    }],
  },
};
const widget: KubeObject = {
  apiVersion: "example.meshrelay.io/v1",
  kind: "Widget",
  metadata: { name: "w", namespace: "apps", labels: managed },
  spec: { size: 3, tags: ["a", "b"] },
};

const byKey = (s: ObjectStatus[]) =>
  Object.fromEntries(s.map((x) => [x.key, `${x.state}:${x.message ?? ""}`]));

Deno.test({
  name: "KubeApplier against a real kube-apiserver: server-side apply, record, prune, held after restart",
  ignore: !kubeAvailable(),
  fn: async (t) => {
    await using cluster = await startTestCluster({ name: "applier" });
    const kube = new TestKube(cluster.kubeConfig);
    await kube.apply(
      { apiVersion: "v1", kind: "Namespace", metadata: { name: "meshrelay" } },
      { apiVersion: "v1", kind: "Namespace", metadata: { name: "apps" } },
    );
    const newApplier = () =>
      new KubeApplier({
        kubeConfig: cluster.kubeConfig,
        clock: systemClock,
        log: nullLogger,
        namespace: "meshrelay",
        origin: "relay.example:9900",
      });
    const applier = newApplier();
    const a1 = cm("apps", "region-settings", { region: "eu-west", residency: "eu" });
    const b1 = cm("mesh-config", "b", { k: "v" });
    let desired = [ns("mesh-config"), a1, b1, svc, widgetCrd, widget];

    await t.step("creates everything, namespaces and CRDs before what lives in them", async () => {
      const s = await applier.apply(desired);
      assertEquals(byKey(s), Object.fromEntries(desired.map((o) => [objectKey(o), "applied:created"])));
      for (const o of desired) {
        const live = await kube.get(o) as KubeObject;
        assertEquals(live.metadata.labels?.[MANAGED_BY_LABEL], MANAGED_BY_VALUE, objectKey(o));
        assertEquals(live.metadata.annotations?.[ORIGIN_ANNOTATION], "relay.example:9900", objectKey(o));
      }
      const record = await kube.get({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: APPLIED_RECORD_NAME, namespace: "meshrelay" },
      }) as { data: Record<string, string> };
      const rec = JSON.parse(record.data["applied.json"]);
      assertEquals(Object.keys(rec.objects).sort(), desired.map(objectKey).sort());
      assertEquals(rec.objects[objectKey(a1)].version, resourceVersionOf(a1));
    });

    await t.step("the same set again writes nothing", async () => {
      const rvs = await Promise.all(
        desired.map(async (o) => (await kube.get(o) as KubeObject).metadata.resourceVersion),
      );
      const s = await applier.apply(desired);
      assert(s.every((x) => x.state === "applied" && x.message === "unchanged"), JSON.stringify(s));
      assertEquals(
        await Promise.all(
          desired.map(async (o) => (await kube.get(o) as KubeObject).metadata.resourceVersion),
        ),
        rvs,
      );
    });

    await t.step("updates: fields meshrelay stops setting go, fields others set stay", async () => {
      await kube.mergePatch(a1, { metadata: { labels: { team: "ops" } } });
      const a2 = cm("apps", "region-settings", { region: "eu-central" });
      desired = desired.map((o) => objectKey(o) === objectKey(a2) ? a2 : o);
      const s = await applier.apply(desired);
      assertEquals(byKey(s)[objectKey(a2)], "applied:updated");
      const live = await kube.get(a2) as KubeObject;
      assertEquals(live.data, { region: "eu-central" });
      assertEquals(live.metadata.labels?.team, "ops");
    });

    await t.step("conflicts: meshrelay forces its fields back (a hand edit is reverted)", async () => {
      await kube.apply({
        ...cm("apps", "region-settings", { region: "hand-edited" }),
        metadata: { name: "region-settings", namespace: "apps" },
      });
      const s = await applier.apply(desired);
      assertEquals(byKey(s)["v1|ConfigMap|apps|region-settings"], "applied:updated");
      assertEquals((await kube.get(a1) as KubeObject).data, { region: "eu-central" });
    });

    await t.step("an existing object without meshrelay's label is never touched", async () => {
      const foreign = {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "foreign", namespace: "apps" },
        data: { owner: "someone" },
      };
      await kube.apply(foreign);
      const s = await applier.apply([...desired, cm("apps", "foreign", { owner: "meshrelay" })]);
      assertEquals(
        byKey(s)["v1|ConfigMap|apps|foreign"],
        "failed:exists and is not managed by meshrelay (no label app.kubernetes.io/managed-by=meshrelay); left untouched",
      );
      const live = await kube.get(foreign) as KubeObject;
      assertEquals(live.data, { owner: "someone" });
      assertEquals(live.metadata.labels, undefined);
    });

    await t.step("failed statuses carry the API's reason; the other objects still apply", async () => {
      const pa: KubeObject = {
        apiVersion: "security.istio.io/v1",
        kind: "PeerAuthentication",
        metadata: { name: "default", namespace: "istio-system", labels: managed },
        spec: { mtls: { mode: "STRICT" } },
      };
      const missingNs = cm("nope", "x", { a: "1" });
      const bad = { ...cm("apps", "bad", {}), data: { "not a key!": "x" } };
      const s = byKey(await applier.apply([...desired, pa, missingNs, bad]));
      assertEquals(
        s[objectKey(pa)],
        "failed:no kind PeerAuthentication in group security.istio.io: API security.istio.io/v1 is not served (is its CustomResourceDefinition installed?)",
      );
      assertEquals(s[objectKey(missingNs)], 'failed:namespaces "nope" not found');
      assert(s[objectKey(bad)].startsWith('failed:ConfigMap "bad" is invalid'), s[objectKey(bad)]);
      for (const o of desired) assert(s[objectKey(o)].startsWith("applied:"), objectKey(o));
    });

    await t.step(
      "prunes what it applied and no longer wants, only if it still carries the label",
      async () => {
        // Someone takes the Widget over (removes meshrelay's label): it is released, not deleted.
        await kube.mergePatch(widget, { metadata: { labels: { [MANAGED_BY_LABEL]: null } } });
        desired = desired.filter((o) => o !== b1 && o !== widget);
        const s = byKey(await applier.apply(desired));
        assertEquals(s[objectKey(b1)], "pruned:");
        assertEquals(
          s[objectKey(widget)],
          "pruned:not deleted: it no longer carries app.kubernetes.io/managed-by=meshrelay; meshrelay released it",
        );
        assertEquals(await kube.get(b1), undefined);
        assert(await kube.get(widget), "the released Widget is still there");
        assert(
          await kube.get({
            apiVersion: "v1",
            kind: "ConfigMap",
            metadata: { name: "foreign", namespace: "apps" },
          }),
        );
      },
    );

    await t.step("after a restart, held() is exactly what is in the cluster as applied", async () => {
      const restarted = newApplier();
      const held = await restarted.held();
      assertEquals([...held.keys()].sort(), desired.map(objectKey).sort());
      for (const o of desired) {
        const h = held.get(objectKey(o))!;
        assertEquals(h.version, resourceVersionOf(o), objectKey(o));
        assertEquals(h.object, o);
      }
      // A hand edit of a field meshrelay owns makes that object "not held", so the server resends it.
      await kube.apply({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "region-settings", namespace: "apps" },
        data: { region: "x" },
      });
      const after = await restarted.held();
      assert(!after.has("v1|ConfigMap|apps|region-settings"));
      assertEquals(after.size, held.size - 1);
    });

    await t.step("a restarted applier prunes what the previous one applied", async () => {
      const restarted = newApplier();
      const s = byKey(await restarted.apply([ns("mesh-config")]));
      assertEquals(s["v1|Service|apps|reviews"], "pruned:");
      assertEquals(s["v1|ConfigMap|apps|region-settings"], "pruned:");
      assertEquals(s["v1|Namespace||mesh-config"], "applied:unchanged");
      assertEquals(await kube.get(svc), undefined);
      assertEquals((await restarted.held()).size, 1);
    });
  },
});
