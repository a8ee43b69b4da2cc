import { InvalidInputError } from "../errors.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { DEFAULT_DISCOVERY_KINDS, parseDiscoveryKinds } from "./kube_discovery.ts";

Deno.test("parseDiscoveryKinds", async (t) => {
  const ok: [string, string[], { apiVersion: string; kind: string }[]][] = [
    ["apiVersion/Kind", ["apps/v1/Deployment"], [{ apiVersion: "apps/v1", kind: "Deployment" }]],
    ["core apiVersion/Kind", ["v1/Service"], [{ apiVersion: "v1", kind: "Service" }]],
    ["a bare well-known kind", ["StatefulSet"], [{ apiVersion: "apps/v1", kind: "StatefulSet" }]],
    ["duplicates collapse", ["Service", "v1/Service"], [{ apiVersion: "v1", kind: "Service" }]],
    [
      "a CRD kind",
      ["networking.istio.io/v1/ServiceEntry"],
      [{ apiVersion: "networking.istio.io/v1", kind: "ServiceEntry" }],
    ],
  ];
  for (const [name, input, want] of ok) {
    await t.step(name, () => assertEquals(parseDiscoveryKinds(input), want));
  }
  for (const bad of ["Widget", "apps/Deployment", "apps/v1/deployment", "/v1/Service", ""]) {
    await t.step(`refuses ${JSON.stringify(bad)}`, () => {
      assertThrows(() => parseDiscoveryKinds([bad]), InvalidInputError);
    });
  }
  await t.step("the defaults parse: namespaces, Services, workloads, IstioOperator", () => {
    assertEquals(parseDiscoveryKinds(DEFAULT_DISCOVERY_KINDS).map((k) => k.kind), [
      "Namespace",
      "Service",
      "Deployment",
      "StatefulSet",
      "DaemonSet",
      "IstioOperator",
    ]);
  });
});
