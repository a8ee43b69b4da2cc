import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { InvalidInputError, UnavailableError } from "../errors.ts";
import { buildKubeConfig, createKubeClient, isDefaultFallbackConfig } from "./client.ts";
import { KubeSecretStore } from "./kube_secret_store.ts";

Deno.test("buildKubeConfig makes a one-context KubeConfig from inline credentials", async (t) => {
  await t.step("token", () => {
    const kc = buildKubeConfig({ server: "https://10.0.0.1:6443", caPem: "CA", token: "t0k" });
    assertEquals(kc.getCurrentCluster()?.server, "https://10.0.0.1:6443");
    assertEquals(atob(kc.getCurrentCluster()!.caData!), "CA");
    assertEquals(kc.getCurrentUser()?.token, "t0k");
    assertEquals(kc.getCurrentCluster()?.skipTLSVerify, false);
  });
  await t.step("client certificate", () => {
    const kc = buildKubeConfig({
      server: "https://k:6443",
      clientCertPem: "C",
      clientKeyPem: "K",
      name: "wl1",
    });
    assertEquals(kc.getCurrentContext(), "wl1");
    assertEquals(atob(kc.getCurrentUser()!.certData!), "C");
    assertEquals(atob(kc.getCurrentUser()!.keyData!), "K");
  });
  const bad: [string, Parameters<typeof buildKubeConfig>[0]][] = [
    ["not a URL", { server: "nope" }],
    ["not http(s)", { server: "ftp://k" }],
    ["cert without key", { server: "https://k", clientCertPem: "C" }],
    ["key without cert", { server: "https://k", clientKeyPem: "K" }],
  ];
  for (const [name, opts] of bad) {
    await t.step(`refused: ${name}`, () => {
      let err: unknown;
      try {
        buildKubeConfig(opts);
      } catch (e) {
        err = e;
      }
      assert(err instanceof InvalidInputError, String(err));
    });
  }
});

Deno.test("createKubeClient refuses loadFromDefault's silent localhost:8080 fallback", () => {
  const kc = new KubeConfig();
  // What loadFromDefault() ends with when it could read neither a kubeconfig nor the service account.
  kc.loadFromClusterAndUser({ name: "cluster", server: "http://localhost:8080", skipTLSVerify: false }, {
    name: "user",
  });
  assert(isDefaultFallbackConfig(kc));
  let err: unknown;
  try {
    createKubeClient(kc);
  } catch (e) {
    err = e;
  }
  assert(err instanceof InvalidInputError, String(err));
  assert(!isDefaultFallbackConfig(buildKubeConfig({ server: "http://localhost:8080", token: "t" })));
});

Deno.test("createKubeClient gives typed clients for the current context", () => {
  const c = createKubeClient(buildKubeConfig({ server: "https://127.0.0.1:6443", token: "t" }));
  assertEquals(c.server, "https://127.0.0.1:6443");
  assert(c.core instanceof CoreV1Api);
});

Deno.test("an API server that is not listening is UnavailableError naming the request", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const client = createKubeClient(buildKubeConfig({ server: `https://127.0.0.1:${port}`, token: "t" }));
  const store = new KubeSecretStore({ client, namespace: "gloo-mesh" });
  const err = await assertRejects(() => store.get("relay-root-tls-secret"), UnavailableError);
  assertEquals(
    err.message,
    "kubernetes get secrets/relay-root-tls-secret in namespace gloo-mesh: cannot reach the API server (ECONNREFUSED)",
  );
});
