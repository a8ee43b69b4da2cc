import { CoreV1Api, RbacAuthorizationV1Api } from "@kubernetes/client-node";
import { assert, assertEquals, assertRejects } from "../../src/testing/assert.ts";
import { ConflictError, NotFoundError, PermissionDeniedError } from "../../src/errors.ts";
import { secretStoreContract } from "../../src/store/contract_test_suite.ts";
import { createKubeClient, KubeSecretStore } from "../../src/kube/mod.ts";
import { kubeAvailable, startTestCluster } from "./harness.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test({
  name: "KubeSecretStore against a real kube-apiserver",
  ignore: !kubeAvailable(),
  fn: async (t) => {
    await using cluster = await startTestCluster({ name: "secret-store" });
    const client = createKubeClient(cluster.kubeConfig);
    let n = 0;
    const freshNamespace = async () => {
      const namespace = `store-${++n}`;
      await client.core.createNamespace({ body: { metadata: { name: namespace } } });
      return namespace;
    };

    await t.step("passes the SecretStore contract", async (t) => {
      await secretStoreContract(
        t,
        async () => new KubeSecretStore({ client, namespace: await freshNamespace() }),
      );
    });

    await t.step("secrets are ordinary Kubernetes Secrets (Opaque, base64 data, our labels)", async () => {
      const namespace = await freshNamespace();
      const store = new KubeSecretStore({
        client,
        namespace,
        labels: { "app.kubernetes.io/managed-by": "meshrelay" },
      });
      const put = await store.put("relay-identity-token-secret", { token: enc.encode("s3cret") });
      const raw = await client.core.readNamespacedSecret({ namespace, name: "relay-identity-token-secret" });
      assertEquals(raw.type, "Opaque");
      assertEquals(atob(raw.data!.token), "s3cret");
      assertEquals(raw.metadata?.labels, { "app.kubernetes.io/managed-by": "meshrelay" });
      assertEquals(raw.metadata?.resourceVersion, put.version);
      assertEquals(raw.metadata?.managedFields?.[0]?.manager, "meshrelay");
    });

    await t.step("a put keeps what other tools set: type, labels, annotations", async () => {
      const namespace = await freshNamespace();
      await client.core.createNamespacedSecret({
        namespace,
        body: {
          metadata: { name: "relay-server-tls-secret", labels: { a: "1" }, annotations: { "x/y": "z" } },
          type: "kubernetes.io/tls",
          data: { "tls.crt": btoa("c1"), "tls.key": btoa("k1") },
        },
      });
      const store = new KubeSecretStore({ client, namespace, labels: { ignored: "on-update" } });
      const cur = await store.get("relay-server-tls-secret");
      await store.put("relay-server-tls-secret", {
        "tls.crt": enc.encode("c2"),
        "tls.key": enc.encode("k2"),
        "ca.crt": enc.encode("ca"),
      }, { expectedVersion: cur!.version });
      const raw = await client.core.readNamespacedSecret({ namespace, name: "relay-server-tls-secret" });
      assertEquals(raw.type, "kubernetes.io/tls");
      assertEquals(raw.metadata?.labels, { a: "1" });
      assertEquals(raw.metadata?.annotations, { "x/y": "z" });
      assertEquals(dec.decode((await store.get("relay-server-tls-secret"))!.data["tls.crt"]), "c2");
    });

    await t.step("a version written by another client is seen and enforced", async () => {
      const namespace = await freshNamespace();
      const store = new KubeSecretStore({ client, namespace });
      const mine = await store.put("relay-root-tls-secret", { "ca.crt": enc.encode("1") });
      const theirs = await client.core.replaceNamespacedSecret({
        namespace,
        name: "relay-root-tls-secret",
        body: { metadata: { name: "relay-root-tls-secret" }, data: { "ca.crt": btoa("2") } },
      });
      const got = await store.get("relay-root-tls-secret");
      assertEquals(got?.version, theirs.metadata?.resourceVersion);
      await assertRejects(
        () =>
          store.put("relay-root-tls-secret", { "ca.crt": enc.encode("3") }, {
            expectedVersion: mine.version,
          }),
        ConflictError,
      );
    });

    await t.step("a namespace that does not exist is NotFoundError naming it", async () => {
      const store = new KubeSecretStore({ client, namespace: "no-such-namespace" });
      assertEquals(await store.get("relay-root-tls-secret"), undefined);
      const err = await assertRejects(() => store.put("x", { a: enc.encode("1") }), NotFoundError);
      assert(err.message.includes("no-such-namespace"), err.message);
    });

    await t.step("RBAC: forbidden verbs are PermissionDeniedError naming verb and resource", async () => {
      const namespace = await freshNamespace();
      const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
      // The agent may read its secrets but not write them.
      await rbac.createNamespacedRole({
        namespace,
        body: {
          metadata: { name: "secret-reader" },
          rules: [{ apiGroups: [""], resources: ["secrets"], verbs: ["get", "list"] }],
        },
      });
      await rbac.createNamespacedRoleBinding({
        namespace,
        body: {
          metadata: { name: "agent-reads" },
          roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "secret-reader" },
          subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: "agent" }],
        },
      });
      await new KubeSecretStore({ client, namespace }).put("relay-root-tls-secret", {
        "ca.crt": enc.encode("x"),
      });

      const agent = await cluster.user("agent");
      const store = new KubeSecretStore({ client: createKubeClient(agent.kubeConfig), namespace });
      assertEquals(dec.decode((await store.get("relay-root-tls-secret"))!.data["ca.crt"]), "x");
      assertEquals(await store.list(), ["relay-root-tls-secret"]);
      const put = await assertRejects(() => store.put("relay-root-tls-secret", {}), PermissionDeniedError);
      assert(
        put.message.startsWith(`kubernetes update secrets/relay-root-tls-secret in namespace ${namespace}`),
        put.message,
      );
      const del = await assertRejects(() => store.delete("relay-root-tls-secret"), PermissionDeniedError);
      assert(
        del.message.startsWith(`kubernetes delete secrets/relay-root-tls-secret in namespace ${namespace}`),
        del.message,
      );

      const stranger = await cluster.user("stranger");
      const none = new KubeSecretStore({ client: createKubeClient(stranger.kubeConfig), namespace });
      const get = await assertRejects(() => none.get("relay-root-tls-secret"), PermissionDeniedError);
      assert(get.message.includes("forbidden (403)"), get.message);
      await assertRejects(() => none.list(), PermissionDeniedError);
    });

    await t.step("list pages through many secrets", async () => {
      const namespace = await freshNamespace();
      const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
      const names = Array.from({ length: 520 }, (_, i) => `s-${String(i).padStart(4, "0")}`);
      for (let i = 0; i < names.length; i += 40) {
        await Promise.all(
          names.slice(i, i + 40).map((name) =>
            core.createNamespacedSecret({ namespace, body: { metadata: { name }, data: { k: btoa("v") } } })
          ),
        );
      }
      assertEquals(await new KubeSecretStore({ client, namespace }).list(), names);
    });
  },
});
