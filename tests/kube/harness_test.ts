import { CoreV1Api, KubeConfig, VersionApi } from "@kubernetes/client-node";
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { kubeAvailable, startTestCluster } from "./harness.ts";

async function portClosed(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  try {
    const conn = await Deno.connect({ hostname, port: Number(port) });
    conn.close();
    return false;
  } catch (e) {
    return e instanceof Deno.errors.ConnectionRefused;
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

Deno.test({
  name:
    "test cluster: real kube-apiserver v1.34 with a Namespace and a Secret made by client-node, then stopped",
  ignore: !kubeAvailable(),
  fn: async (t) => {
    const cluster = await startTestCluster({ name: "harness" });
    try {
      const core = cluster.kubeConfig.makeApiClient(CoreV1Api);

      await t.step("the API server is a real kube-apiserver at the pinned version", async () => {
        const v = await cluster.kubeConfig.makeApiClient(VersionApi).getCode();
        assert(/^v1\.34\.\d+$/.test(v.gitVersion), v.gitVersion);
        assertEquals(v.major, "1");
        assertEquals(v.minor, "34");
      });

      await t.step("a Namespace and a Secret round-trip through etcd", async () => {
        await core.createNamespace({ body: { metadata: { name: "gloo-mesh" } } });
        const created = await core.createNamespacedSecret({
          namespace: "gloo-mesh",
          body: {
            metadata: { name: "relay-root-tls-secret" },
            data: { "ca.crt": btoa("not a real CA") },
          },
        });
        const read = await core.readNamespacedSecret({
          namespace: "gloo-mesh",
          name: "relay-root-tls-secret",
        });
        assertEquals(read.metadata?.resourceVersion, created.metadata?.resourceVersion);
        assertEquals(atob(read.data!["ca.crt"]), "not a real CA");
        assertEquals(read.type, "Opaque");
      });

      await t.step("the kubeconfig file is the admin identity too", async () => {
        const text = await Deno.readTextFile(cluster.kubeconfigPath);
        assert(text.includes(cluster.url), "kubeconfig names the server URL");
        const kc = new KubeConfig();
        kc.loadFromFile(cluster.kubeconfigPath);
        const list = await kc.makeApiClient(CoreV1Api).listNamespacedSecret({ namespace: "gloo-mesh" });
        assertEquals(list.items.map((s) => s.metadata?.name), ["relay-root-tls-secret"]);
      });

      await t.step("RBAC applies to other identities: a user with no role is forbidden", async () => {
        const bob = await cluster.user("bob", ["dev"]);
        const err = await bob.kubeConfig.makeApiClient(CoreV1Api)
          .readNamespacedSecret({ namespace: "gloo-mesh", name: "relay-root-tls-secret" })
          .then(() => undefined, (e) => e as { code?: number });
        assertEquals(err?.code, 403);
      });

      await t.step(
        "service accounts can be given tokens (TokenRequest works without a controller-manager)",
        async () => {
          await core.createNamespacedServiceAccount({
            namespace: "gloo-mesh",
            body: { metadata: { name: "agent" } },
          });
          const tr = await core.createNamespacedServiceAccountToken({
            namespace: "gloo-mesh",
            name: "agent",
            body: { spec: { audiences: [cluster.serviceAccountIssuer], expirationSeconds: 600 } },
          });
          assert((tr.status?.token ?? "").split(".").length === 3, "a JWT");
        },
      );
    } finally {
      await cluster.stop();
    }
    assert(await portClosed(cluster.url), "API server port is closed after stop");
    assert(!(await exists(cluster.dir)), "temp dir removed after stop");
    // stop() is idempotent.
    await cluster.stop();
  },
});

Deno.test({
  name: "test cluster: two clusters at once are separate API servers with separate data",
  ignore: !kubeAvailable(),
  fn: async () => {
    const [mgmt, workload] = await Promise.all([
      startTestCluster({ name: "mgmt" }),
      startTestCluster({ name: "workload" }),
    ]);
    try {
      assert(mgmt.url !== workload.url);
      await mgmt.kubeConfig.makeApiClient(CoreV1Api).createNamespace({
        body: { metadata: { name: "only-in-mgmt" } },
      });
      const names = async (c: typeof mgmt) =>
        (await c.kubeConfig.makeApiClient(CoreV1Api).listNamespace()).items.map((n) => n.metadata?.name);
      assert((await names(mgmt)).includes("only-in-mgmt"));
      assert(!(await names(workload)).includes("only-in-mgmt"));
      // Each cluster has its own CA: the management admin's certificate means nothing to the workload cluster.
      const crossed = new KubeConfig();
      crossed.loadFromString(mgmt.kubeConfig.exportConfig());
      crossed.clusters[0] = { ...crossed.clusters[0], server: workload.url, caData: btoa(workload.caPem) };
      const err = await crossed.makeApiClient(CoreV1Api).listNamespace().then(() => undefined, (e) => e);
      assertEquals((err as { code?: number })?.code, 401);
    } finally {
      await Promise.all([mgmt.stop(), workload.stop()]);
    }
  },
});

Deno.test({
  name: "test cluster: a failing start reports the process log and leaves nothing behind",
  ignore: !kubeAvailable(),
  fn: async () => {
    const tmp = Deno.env.get("TMPDIR") || "/tmp";
    const leftovers = async () => {
      const found: string[] = [];
      for await (const e of Deno.readDir(tmp)) {
        if (e.name.startsWith("meshrelay-badflag-")) found.push(e.name);
      }
      return found;
    };
    const err = await startTestCluster({ name: "badflag", apiServerFlags: ["--no-such-flag=1"] })
      .then(() => undefined, (e) => e as Error);
    assert(err, "start must fail");
    assert(err.message.includes("kube-apiserver exited"), err.message);
    assert(err.message.includes("no-such-flag"), err.message);
    assertEquals(await leftovers(), []);
  },
});
