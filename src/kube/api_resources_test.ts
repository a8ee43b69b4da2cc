import { assertEquals } from "../testing/assert.ts";
import {
  type ApiResource,
  groupVersionPath,
  KindNotServedError,
  resourcePath,
  splitApiVersion,
} from "./api_resources.ts";

const deployments: ApiResource = {
  apiVersion: "apps/v1",
  kind: "Deployment",
  plural: "deployments",
  namespaced: true,
  verbs: [],
};
const namespaces: ApiResource = {
  apiVersion: "v1",
  kind: "Namespace",
  plural: "namespaces",
  namespaced: false,
  verbs: [],
};

Deno.test("REST paths of resources", async (t) => {
  const cases: [string, string, string][] = [
    ["core group version", groupVersionPath("v1"), "/api/v1"],
    ["named group version", groupVersionPath("apps/v1"), "/apis/apps/v1"],
    ["all-namespaces collection", resourcePath(deployments), "/apis/apps/v1/deployments"],
    ["namespaced collection", resourcePath(deployments, "apps"), "/apis/apps/v1/namespaces/apps/deployments"],
    [
      "namespaced object",
      resourcePath(deployments, "apps", "r"),
      "/apis/apps/v1/namespaces/apps/deployments/r",
    ],
    [
      "cluster-scoped ignores the namespace",
      resourcePath(namespaces, "x", "apps"),
      "/api/v1/namespaces/apps",
    ],
    [
      "names are escaped",
      resourcePath(deployments, "a b", "c/d"),
      "/apis/apps/v1/namespaces/a%20b/deployments/c%2Fd",
    ],
  ];
  for (const [name, got, want] of cases) await t.step(name, () => assertEquals(got, want));
});

Deno.test("splitApiVersion and the not-served message", async (t) => {
  await t.step("core", () => assertEquals(splitApiVersion("v1"), ["", "v1"]));
  await t.step(
    "group",
    () => assertEquals(splitApiVersion("security.istio.io/v1"), ["security.istio.io", "v1"]),
  );
  await t.step("group absent", () => {
    assertEquals(
      new KindNotServedError("security.istio.io/v1", "PeerAuthentication", false).message,
      "no kind PeerAuthentication in group security.istio.io: API security.istio.io/v1 is not served (is its CustomResourceDefinition installed?)",
    );
  });
  await t.step("group served, kind absent", () => {
    const e = new KindNotServedError("v1", "Widget", true);
    assertEquals(
      e.message,
      "no kind Widget in group core version v1 (is its CustomResourceDefinition installed?)",
    );
    assertEquals(e.code, "not_found");
  });
});
