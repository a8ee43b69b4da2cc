import { assertEquals } from "../testing/assert.ts";
import { trimObject } from "./trim.ts";

Deno.test("trimObject keeps stable content only", async (t) => {
  const live = {
    kind: "Deployment",
    apiVersion: "apps/v1",
    metadata: {
      name: "reviews",
      namespace: "apps",
      uid: "u-1",
      resourceVersion: "812",
      generation: 4,
      creationTimestamp: "2026-01-01T00:00:00Z",
      managedFields: [{ manager: "kubectl" }],
      labels: { app: "reviews" },
      annotations: {
        "deployment.kubernetes.io/revision": "4",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        team: "bookinfo",
      },
      ownerReferences: [{ apiVersion: "v1", kind: "X", name: "owner", uid: "u-0", controller: true }],
      finalizers: [],
    },
    spec: { replicas: 2 },
    status: { readyReplicas: 1, observedGeneration: 4 },
  };
  const cases: { name: string; input: Record<string, unknown>; statusKinds?: string[]; want: unknown }[] = [
    {
      name: "a workload loses server bookkeeping, noisy annotations, owner uids and its status",
      input: live,
      want: {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: {
          name: "reviews",
          namespace: "apps",
          labels: { app: "reviews" },
          annotations: { team: "bookinfo" },
          ownerReferences: [{ apiVersion: "v1", kind: "X", name: "owner", controller: true }],
        },
        spec: { replicas: 2 },
      },
    },
    {
      name: "a Service keeps its status (load-balancer addresses matter)",
      input: {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "s", namespace: "n", uid: "x", labels: {} },
        spec: { clusterIP: "10.0.0.7" },
        status: { loadBalancer: { ingress: [{ ip: "203.0.113.9" }] } },
      },
      want: {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "s", namespace: "n" },
        spec: { clusterIP: "10.0.0.7" },
        status: { loadBalancer: { ingress: [{ ip: "203.0.113.9" }] } },
      },
    },
    {
      name: "statusKinds overrides which kinds keep status",
      input: live,
      statusKinds: ["Deployment"],
      want: {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: {
          name: "reviews",
          namespace: "apps",
          labels: { app: "reviews" },
          annotations: { team: "bookinfo" },
          ownerReferences: [{ apiVersion: "v1", kind: "X", name: "owner", controller: true }],
        },
        spec: { replicas: 2 },
        status: { readyReplicas: 1, observedGeneration: 4 },
      },
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      assertEquals(trimObject(c.input, { statusKinds: c.statusKinds }), c.want);
    });
  }
  await t.step("the input is not modified", () => {
    const before = structuredClone(live);
    trimObject(live);
    assertEquals(live, before);
  });
});
