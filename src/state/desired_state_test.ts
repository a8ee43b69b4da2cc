import { assert, assertEquals } from "../testing/assert.ts";
import { resourceVersionOf } from "./canonical.ts";
import {
  DECLARED_BY_ANNOTATION,
  desiredStateFor,
  DesiredStatePlan,
  MANAGED_BY_LABEL,
} from "./desired_state.ts";
import { Inventory } from "./inventory.ts";
import { istioProtocolOf, serviceEntryFor } from "./service_entry.ts";
import { type ClusterInfo, type KubeObject, objectKey } from "./types.ts";

const V = "meshrelay.io/v1alpha1";
const kc = (name: string, labels: Record<string, string>, clusterDomain?: string): KubeObject => ({
  apiVersion: V,
  kind: "KubernetesCluster",
  metadata: { name, labels },
  ...(clusterDomain ? { spec: { clusterDomain } } : {}),
});
const cm = (name: string, ns = "apps", data: Record<string, string> = {}): KubeObject => ({
  apiVersion: "v1",
  kind: "ConfigMap",
  metadata: { name, namespace: ns },
  data,
});
const cc = (name: string, target: Record<string, unknown>, objects: KubeObject[]): KubeObject => ({
  apiVersion: V,
  kind: "ClusterConfig",
  metadata: { name },
  spec: { ...target, objects },
});
const fed = (name: string, target: Record<string, unknown>, namespace?: string): KubeObject => ({
  apiVersion: V,
  kind: "ServiceFederation",
  metadata: { name },
  spec: { ...target, exportSelector: { matchLabels: { "meshrelay.io/export": "true" } }, namespace },
});
const svc = (name: string, ns: string, exported: boolean, ports: unknown[]): KubeObject => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: ns, labels: exported ? { "meshrelay.io/export": "true" } : { app: name } },
  spec: { ports },
});
const inv = (...objs: KubeObject[]) => {
  const i = new Inventory();
  i.applySnapshot(objs);
  return i;
};

const c1: ClusterInfo = { name: "c1", labels: { env: "prod" } };
const c2: ClusterInfo = { name: "c2", labels: { env: "prod" } };
const c3: ClusterInfo = { name: "c3", labels: { env: "dev" } };
const registry = [
  kc("c1", { env: "prod" }, "one.example"),
  kc("c2", { env: "prod" }),
  kc("c3", { env: "dev" }),
];

Deno.test("desiredStateFor: ClusterConfig targeting", async (t) => {
  const configs = [
    ...registry,
    cc("by-name", { clusters: ["c1"] }, [cm("only-c1")]),
    cc("by-label", { clusterSelector: { matchLabels: { env: "prod" } } }, [cm("prod")]),
    cc("all", { clusterSelector: {} }, [cm("everyone", "kube-system")]),
  ];
  const cases: [string, ClusterInfo, string[]][] = [
    ["c1 gets name + label + all", c1, [
      "v1|ConfigMap|apps|only-c1",
      "v1|ConfigMap|apps|prod",
      "v1|ConfigMap|kube-system|everyone",
    ]],
    ["c2 gets label + all", c2, ["v1|ConfigMap|apps|prod", "v1|ConfigMap|kube-system|everyone"]],
    ["c3 gets all only", c3, ["v1|ConfigMap|kube-system|everyone"]],
    ["an unregistered name still matches by name only", { name: "c1", labels: {} }, [
      "v1|ConfigMap|apps|only-c1",
      "v1|ConfigMap|kube-system|everyone",
    ]],
  ];
  for (const [name, cluster, keys] of cases) {
    await t.step(name, () => assertEquals(desiredStateFor(cluster, configs, new Map()).map(objectKey), keys));
  }
  await t.step("every object is labelled managed-by and names its source", () => {
    for (const o of desiredStateFor(c1, configs, new Map())) {
      assertEquals(o.metadata.labels?.[MANAGED_BY_LABEL], "meshrelay");
      assertEquals(typeof o.metadata.annotations?.[DECLARED_BY_ANNOTATION], "string");
    }
  });
  await t.step("input objects are not modified", () => {
    const before = structuredClone(configs);
    desiredStateFor(c1, configs, new Map());
    assertEquals(configs, before);
  });
  await t.step("conflicting documents: first by name wins, conflict reported", () => {
    const plan = new DesiredStatePlan([
      cc("b", { clusters: ["c1"] }, [cm("x", "apps", { v: "b" })]),
      cc("a", { clusters: ["c1"] }, [cm("x", "apps", { v: "a" })]),
    ], new Map());
    const r = plan.for(c1);
    assertEquals(r.objects.map((o) => o.data), [{ v: "a" }]);
    assertEquals(r.conflicts, [{
      key: "v1|ConfigMap|apps|x",
      kept: "ClusterConfig/a",
      dropped: "ClusterConfig/b",
    }]);
  });
  await t.step("clusters targeted by one document share its labelled copies, hashed once", () => {
    const configs = [cc("all", { clusterSelector: { matchLabels: {} } }, [cm("x"), cm("y")])];
    const before = structuredClone(configs);
    const plan = new DesiredStatePlan(configs, new Map());
    const a = plan.for({ name: "c1", labels: {} }).objects;
    const b = plan.for({ name: "c2", labels: {} }).objects;
    assertEquals(a.length, 2);
    for (let i = 0; i < a.length; i++) assert(a[i] === b[i], `object ${i} is one shared copy`);
    assertEquals(plan.versionOf(a[0]), resourceVersionOf(a[0]));
    assertEquals(plan.keyOf(a[1]), objectKey(a[1]));
    assertEquals(configs, before, "the declared objects are not labelled in place");
  });
});

Deno.test("desiredStateFor: ServiceFederation from discovery", async (t) => {
  const configs = [...registry, fed("f", { clusterSelector: { matchLabels: { env: "prod" } } })];
  const inventories = new Map([
    [
      "c1",
      inv(
        svc("reviews", "apps", true, [{ name: "http", port: 9080 }]),
        svc("private", "apps", false, [{ port: 1 }]),
      ),
    ],
    ["c2", inv(svc("ratings", "apps", true, [{ name: "grpc-x", port: 7070 }]))],
    ["c3", inv(svc("dev", "apps", true, [{ port: 1234 }]))],
  ]);
  const cases: [string, ClusterInfo, string[]][] = [
    ["c1 receives exports of the others (not its own), incl. an untargeted source", c1, [
      "networking.istio.io/v1|ServiceEntry|istio-system|dev-apps-c3",
      "networking.istio.io/v1|ServiceEntry|istio-system|ratings-apps-c2",
    ]],
    ["c2 receives c1's and c3's", c2, [
      "networking.istio.io/v1|ServiceEntry|istio-system|dev-apps-c3",
      "networking.istio.io/v1|ServiceEntry|istio-system|reviews-apps-c1",
    ]],
    ["c3 is not targeted", c3, []],
  ];
  for (const [name, cluster, keys] of cases) {
    await t.step(
      name,
      () => assertEquals(desiredStateFor(cluster, configs, inventories).map(objectKey), keys),
    );
  }
  await t.step("the ServiceEntry uses the source cluster's domain, ports and labels", () => {
    const se = desiredStateFor(c2, configs, inventories).find((o) => o.metadata.name === "reviews-apps-c1")!;
    assertEquals(se.metadata.labels, {
      "meshrelay.io/source-cluster": "c1",
      "meshrelay.io/federation": "f",
      "app.kubernetes.io/managed-by": "meshrelay",
    });
    assertEquals(se.spec, {
      hosts: ["reviews.apps.svc.one.example"],
      location: "MESH_INTERNAL",
      resolution: "DNS",
      ports: [{ number: 9080, name: "http", protocol: "HTTP" }],
    });
  });
  await t.step("a custom namespace", () => {
    const r = desiredStateFor(c1, [...registry, fed("f", { clusters: ["c1"] }, "mesh")], inventories);
    assertEquals(r.map((o) => o.metadata.namespace), ["mesh", "mesh"]);
  });
});

Deno.test("serviceEntryFor and istioProtocolOf", async (t) => {
  const protos: [string, Record<string, unknown>, string | undefined][] = [
    ["appProtocol wins", { port: 1, name: "tcp-x", appProtocol: "grpc" }, "GRPC"],
    ["name prefix", { port: 1, name: "https-web" }, "HTTPS"],
    ["unknown prefix is TCP", { port: 1, name: "postgres" }, "TCP"],
    ["no name is TCP", { port: 1 }, "TCP"],
    ["h2c appProtocol", { port: 1, appProtocol: "kubernetes.io/h2c" }, "HTTP2"],
    ["UDP is not expressible", { port: 53, protocol: "UDP" }, undefined],
  ];
  for (const [name, port, want] of protos) {
    await t.step(name, () => assertEquals(istioProtocolOf(port), want));
  }
  const opts = {
    sourceCluster: "C_1",
    clusterDomain: "cluster.local",
    namespace: "istio-system",
    federation: "f",
  };
  await t.step("a Service with only UDP ports yields none", () => {
    assertEquals(
      serviceEntryFor(svc("dns", "kube-system", true, [{ port: 53, protocol: "UDP" }]), opts),
      undefined,
    );
  });
  await t.step("unnamed ports get a name; names are DNS-safe", () => {
    const se = serviceEntryFor(svc("a", "b", true, [{ port: 81 }, { port: 80, name: "http" }]), opts)!;
    assertEquals(se.metadata.name, "a-b-c-1");
    assertEquals((se.spec as { ports: unknown }).ports, [
      { number: 80, name: "http", protocol: "HTTP" },
      { number: 81, name: "tcp-81", protocol: "TCP" },
    ]);
  });
});
