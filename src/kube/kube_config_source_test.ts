import { assertEquals } from "../testing/assert.ts";
import { declaredDocumentOf } from "./kube_config_source.ts";

Deno.test("declaredDocumentOf gives the document a config folder would hold", async (t) => {
  const cases: { name: string; live: Record<string, unknown>; kind: string; want: unknown }[] = [
    {
      name: "server fields, status and kubectl's copy are dropped",
      kind: "KubernetesCluster",
      live: {
        apiVersion: "meshrelay.io/v1alpha1",
        kind: "KubernetesCluster",
        metadata: {
          name: "cluster-1",
          uid: "u",
          resourceVersion: "9",
          generation: 2,
          creationTimestamp: "2026-01-01T00:00:00Z",
          managedFields: [],
          labels: { env: "prod" },
          annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
        },
        spec: { clusterDomain: "cluster.local" },
        status: { connected: true },
      },
      want: {
        apiVersion: "meshrelay.io/v1alpha1",
        kind: "KubernetesCluster",
        metadata: { name: "cluster-1", labels: { env: "prod" } },
        spec: { clusterDomain: "cluster.local" },
      },
    },
    {
      name: "no spec stays without spec; other annotations stay",
      kind: "KubernetesCluster",
      live: { metadata: { name: "c2", labels: {}, annotations: { note: "x" } } },
      want: {
        apiVersion: "meshrelay.io/v1alpha1",
        kind: "KubernetesCluster",
        metadata: { name: "c2", annotations: { note: "x" } },
      },
    },
  ];
  for (const c of cases) await t.step(c.name, () => assertEquals(declaredDocumentOf(c.live, c.kind), c.want));
});
