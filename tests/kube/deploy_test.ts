import { parseAllDocuments } from "yaml";
import { AGENT_CONFIGMAP } from "../../src/certs/mod.ts";
import { systemClock } from "../../src/clock.ts";
import { nullLogger } from "../../src/log.ts";
import {
  createKubeClient,
  KubeApplier,
  KubeConfigSource,
  KubeDiscoverySource,
  KubeSecretStore,
  restartDeployments,
  RESTARTED_AT_ANNOTATION,
} from "../../src/kube/mod.ts";
import { type KubeObject, MANAGED_BY_LABEL, MANAGED_BY_VALUE, objectKey } from "../../src/state/mod.ts";
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { VERSION } from "../../src/version.ts";
import { TestKube } from "./backend_helpers.ts";
import { kubeAvailable, startTestCluster } from "./harness.ts";

const deployDir = new URL("../../deploy/", import.meta.url).pathname;

/** Every document under deploy/, by folder, in file order (the order `kubectl apply -f <folder>` uses). */
async function manifests(): Promise<Map<string, KubeObject[]>> {
  const out = new Map<string, KubeObject[]>();
  for await (const dir of Deno.readDir(deployDir)) {
    if (!dir.isDirectory) continue;
    const files: string[] = [];
    for await (const f of Deno.readDir(`${deployDir}${dir.name}`)) {
      if (f.name.endsWith(".yaml")) files.push(f.name);
    }
    const docs: KubeObject[] = [];
    for (const f of files.sort()) {
      for (const d of parseAllDocuments(await Deno.readTextFile(`${deployDir}${dir.name}/${f}`))) {
        if (d.errors.length > 0) throw new Error(`${dir.name}/${f}: ${d.errors[0].message}`);
        const o = d.toJS() as KubeObject | null;
        if (o) docs.push(o);
      }
    }
    out.set(dir.name, docs);
  }
  return out;
}

type PodTemplate = {
  metadata: { annotations?: Record<string, string> };
  spec: {
    serviceAccountName: string;
    containers: {
      image: string;
      args: string[];
      ports: { name: string; containerPort: number }[];
      readinessProbe: { httpGet: { path: string; port: string } };
      livenessProbe: { httpGet: { path: string; port: string } };
    }[];
  };
};
const templateOf = (o: KubeObject) => (o.spec as { template: PodTemplate }).template;
const find = (docs: KubeObject[], kind: string, name: string) =>
  docs.find((o) => o.kind === kind && o.metadata.name === name)!;

Deno.test("deploy/ manifests: shape, ports, probes, scrape annotations, references", async (t) => {
  const all = await manifests();
  assertEquals([...all.keys()].sort(), ["agent", "crds", "server", "server-loadbalancer"]);
  for (const [mode, port] of [["server", 9900], ["agent", undefined]] as const) {
    await t.step(`${mode}: the compiled binary in ${mode} mode, metrics and health on 9091`, () => {
      const docs = all.get(mode)!;
      const dep = find(docs, "Deployment", `meshrelay-${mode}`);
      const tpl = templateOf(dep);
      const c = tpl.spec.containers[0];
      assertEquals(c.image, `ghcr.io/meshrelay/meshrelay:${VERSION}`);
      assertEquals(c.args, [mode, "--kube"]);
      assertEquals(tpl.metadata.annotations?.["prometheus.io/scrape"], "true");
      assertEquals(tpl.metadata.annotations?.["prometheus.io/port"], "9091");
      assertEquals(tpl.metadata.annotations?.["prometheus.io/path"], "/metrics");
      const ports = Object.fromEntries(c.ports.map((p) => [p.name, p.containerPort]));
      assertEquals(ports, port ? { grpc: port, "http-metrics": 9091 } : { "http-metrics": 9091 });
      assertEquals(c.readinessProbe.httpGet, { path: "/readyz", port: "http-metrics" });
      assertEquals(c.livenessProbe.httpGet, { path: "/healthz", port: "http-metrics" });
      // The service account it runs as is shipped, and every binding names shipped roles and accounts.
      const sa = tpl.spec.serviceAccountName;
      assert(find(docs, "ServiceAccount", sa), sa);
      for (const b of docs.filter((o) => o.kind === "RoleBinding" || o.kind === "ClusterRoleBinding")) {
        const ref = b.roleRef as { kind: string; name: string };
        assert(find(docs, ref.kind, ref.name), `${objectKey(b)} → ${ref.kind}/${ref.name}`);
        assertEquals(b.subjects, [{ kind: "ServiceAccount", name: sa, namespace: "meshrelay" }]);
      }
    });
  }
  await t.step("agent: cluster name and server address come from the ConfigMap certs register writes", () => {
    const dep = find(all.get("agent")!, "Deployment", "meshrelay-agent");
    const env = (templateOf(dep).spec.containers[0] as unknown as {
      env: {
        name: string;
        valueFrom?: { configMapKeyRef?: { name: string; key: string; optional?: boolean } };
      }[];
    }).env;
    const refs = Object.fromEntries(
      env.filter((e) => e.valueFrom?.configMapKeyRef).map((e) => [e.name, e.valueFrom!.configMapKeyRef!]),
    );
    assertEquals(refs, {
      MESHRELAY_CLUSTER: { name: AGENT_CONFIGMAP, key: "cluster" },
      MESHRELAY_SERVER_ADDRESS: { name: AGENT_CONFIGMAP, key: "server-address" },
      MESHRELAY_AUTHORITY: { name: AGENT_CONFIGMAP, key: "authority", optional: true },
    });
  });
  await t.step(
    "server Service: gRPC 9900 (ClusterIP, or LoadBalancer from the variant), admin 9091 scraped",
    () => {
      const svc = find(all.get("server")!, "Service", "meshrelay-server");
      const lb = find(all.get("server-loadbalancer")!, "Service", "meshrelay-server");
      for (const [s, type] of [[svc, "ClusterIP"], [lb, "LoadBalancer"]] as const) {
        const spec = s.spec as { type: string; ports: { port: number; targetPort: string }[] };
        assertEquals(spec.type, type);
        assertEquals(spec.ports.map((p) => [p.port, p.targetPort]), [[9900, "grpc"]]);
      }
      const admin = find(all.get("server")!, "Service", "meshrelay-server-admin");
      assertEquals(admin.metadata.annotations, {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9091",
        "prometheus.io/path": "/metrics",
      });
    },
  );
  await t.step(
    "the Containerfile builds the image the Deployments run from the compiled binary",
    async () => {
      const text = await Deno.readTextFile(`${deployDir}Containerfile`);
      const lines = text.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"));
      const directive = (name: string) =>
        lines.filter((l) => l.startsWith(`${name} `)).map((l) => l.slice(name.length + 1));
      // deno compile output is dynamically linked against glibc and libgcc_s: the distroless "cc" base has them.
      assertEquals(directive("FROM"), ["gcr.io/distroless/cc-debian12:nonroot"]);
      // What `deno task compile` writes by default (scripts/compile.ts), into a directory on PATH.
      assertEquals(directive("COPY"), ["dist/meshrelay /usr/local/bin/meshrelay"]);
      // The manifests give only args (the mode), so the entrypoint must be the binary itself.
      assertEquals(directive("ENTRYPOINT"), ['["/usr/local/bin/meshrelay"]']);
      for (const mode of ["server", "agent"]) {
        const tpl = templateOf(find(all.get(mode)!, "Deployment", `meshrelay-${mode}`)) as unknown as {
          spec: {
            securityContext: { runAsUser: number; runAsGroup: number };
            containers: { command?: string[] }[];
          };
        };
        assertEquals(tpl.spec.containers[0].command, undefined, mode);
        const { runAsUser, runAsGroup } = tpl.spec.securityContext;
        assertEquals(directive("USER"), [`${runAsUser}:${runAsGroup}`], mode);
      }
    },
  );
  await t.step("the CRDs are the four meshrelay.io v1alpha1 kinds", () => {
    const crds = all.get("crds")!;
    assertEquals(crds.map((c) => c.metadata.name).sort(), [
      "clusterconfigs.meshrelay.io",
      "kubernetesclusters.meshrelay.io",
      "roottrustpolicies.meshrelay.io",
      "servicefederations.meshrelay.io",
    ]);
  });
});

Deno.test({
  name:
    "deploy/ manifests against a real kube-apiserver: server-side dry run, and RBAC that is enough and no more",
  ignore: !kubeAvailable(),
  fn: async (t) => {
    await using cluster = await startTestCluster({ name: "deploy" });
    const kube = new TestKube(cluster.kubeConfig);
    const all = await manifests();

    await t.step("the CRDs install for real", async () => {
      await kube.installCrds(all.get("crds")!);
    });

    await t.step("every manifest passes a server-side dry run with strict field validation", async () => {
      // Namespaces must exist for dry runs of what lives in them; everything else is only dry-run.
      for (const o of [...all.values()].flat().filter((o) => o.kind === "Namespace")) await kube.apply(o);
      const before = await kube.rest.request<{ items: unknown[] }>({
        path: "/api/v1/namespaces/meshrelay/serviceaccounts",
      });
      for (const [folder, docs] of all) {
        for (const o of docs) {
          try {
            await kube.rest.request({
              method: "PATCH",
              path: await kube.pathOf(o),
              query: { dryRun: "All", fieldManager: "deploy-test", fieldValidation: "Strict", force: true },
              body: o,
              contentType: "application/apply-patch+yaml",
            });
          } catch (e) {
            throw new Error(`${folder}: ${objectKey(o)}: ${(e as Error).message}`);
          }
        }
      }
      // A dry run persists nothing.
      const after = await kube.rest.request<{ items: unknown[] }>({
        path: "/api/v1/namespaces/meshrelay/serviceaccounts",
      });
      assertEquals(after.items.length, before.items.length);
    });

    await t.step("a manifest with a typo is refused by the same dry run (the check can fail)", async () => {
      const dep = structuredClone(find(all.get("server")!, "Deployment", "meshrelay-server"));
      (templateOf(dep).spec.containers[0] as unknown as Record<string, unknown>).readinesProbe = {};
      let refused = false;
      try {
        await kube.rest.request({
          method: "PATCH",
          path: await kube.pathOf(dep),
          query: { dryRun: "All", fieldManager: "deploy-test", fieldValidation: "Strict", force: true },
          body: dep,
          contentType: "application/apply-patch+yaml",
        });
      } catch (e) {
        refused = /readinesProbe/.test((e as Error).message);
      }
      assert(refused, "a misspelt field must be refused");
    });

    // Install for real, then act as the service accounts (x509 identities with the same user name and
    // groups a ServiceAccount token carries).
    for (const f of ["server", "agent"]) await kube.apply(...all.get(f)!);
    await kube.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: "apps" } });
    const sa = (name: string) =>
      cluster.user(`system:serviceaccount:meshrelay:${name}`, [
        "system:serviceaccounts",
        "system:serviceaccounts:meshrelay",
      ]);
    const forbidden = async (
      rest: TestKube,
      path: string,
      method: "GET" | "POST" = "GET",
      body?: unknown,
    ) => {
      try {
        await rest.rest.request({ method, path, body });
      } catch (e) {
        return (e as { httpStatus?: number }).httpStatus === 403;
      }
      return false;
    };

    await t.step("server: its secrets and the declared config, nothing else", async () => {
      const server = await sa("meshrelay-server");
      const store = new KubeSecretStore({
        client: createKubeClient(server.kubeConfig),
        namespace: "meshrelay",
      });
      await store.put("relay-identity-token-secret", { token: new TextEncoder().encode("t") });
      assertEquals((await store.list()).includes("relay-identity-token-secret"), true);
      assertEquals(
        await new KubeConfigSource({ kubeConfig: server.kubeConfig, clock: systemClock, log: nullLogger })
          .list(),
        [],
      );
      const as = new TestKube(server.kubeConfig);
      assert(await forbidden(as, "/api/v1/namespaces/kube-system/secrets"), "secrets elsewhere");
      assert(await forbidden(as, "/api/v1/secrets"), "secrets cluster-wide");
      assert(
        await forbidden(as, "/apis/meshrelay.io/v1alpha1/kubernetesclusters", "POST", {
          apiVersion: "meshrelay.io/v1alpha1",
          kind: "KubernetesCluster",
          metadata: { name: "x" },
        }),
        "registering clusters is the user's (meshrelay certs register), not the server's",
      );
    });

    await t.step(
      "agent: discovers, applies and prunes its kinds; other kinds fail with the API's reason",
      async () => {
        const agent = await sa("meshrelay-agent");
        const snap = await new KubeDiscoverySource({
          kubeConfig: agent.kubeConfig,
          clock: systemClock,
          log: nullLogger,
        })
          .snapshot();
        assert(snap.some((o) => objectKey(o) === "apps/v1|Deployment|meshrelay|meshrelay-agent"));
        const applier = new KubeApplier({
          kubeConfig: agent.kubeConfig,
          clock: systemClock,
          log: nullLogger,
          namespace: "meshrelay",
        });
        const labels = { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE };
        const cm: KubeObject = {
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: { name: "c", namespace: "apps", labels },
        };
        const ns: KubeObject = {
          apiVersion: "v1",
          kind: "Namespace",
          metadata: { name: "mesh-config", labels },
        };
        const secret: KubeObject = {
          apiVersion: "v1",
          kind: "Secret",
          metadata: { name: "s", namespace: "apps", labels },
          stringData: { a: "b" },
        };
        const s = Object.fromEntries((await applier.apply([cm, ns, secret])).map((x) => [x.key, x]));
        assertEquals(s[objectKey(cm)].state, "applied");
        assertEquals(s[objectKey(ns)].state, "applied");
        assertEquals(s[objectKey(secret)].state, "failed");
        assert(/forbidden/.test(s[objectKey(secret)].message ?? ""), s[objectKey(secret)].message);
        const pruned = await applier.apply([]);
        assertEquals(pruned.map((x) => [x.key, x.state]), [[objectKey(cm), "pruned"], [
          objectKey(ns),
          "pruned",
        ]]);
        const as = new TestKube(agent.kubeConfig);
        assert(await forbidden(as, "/api/v1/namespaces/kube-system/secrets"), "secrets elsewhere");
        // Istio federated trust: cacerts in istio-system, and a rolling restart of its Deployments.
        const istio = new KubeSecretStore({
          client: createKubeClient(agent.kubeConfig),
          namespace: "istio-system",
        });
        const put = await istio.put("cacerts", { "ca-cert.pem": new TextEncoder().encode("x") });
        await istio.put("cacerts", { "ca-cert.pem": new TextEncoder().encode("y") }, {
          expectedVersion: put.version,
        });
        await kube.apply({
          apiVersion: "apps/v1",
          kind: "Deployment",
          metadata: { name: "istiod", namespace: "istio-system" },
          spec: {
            selector: { matchLabels: { app: "istiod" } },
            template: {
              metadata: { labels: { app: "istiod" } },
              spec: { containers: [{ name: "discovery", image: "istio/pilot" }] },
            },
          },
        });
        assertEquals(
          await restartDeployments({
            kubeConfig: agent.kubeConfig,
            namespace: "istio-system",
            now: new Date(),
          }),
          ["istio-system/istiod"],
        );
        const istiod = await kube.get({
          apiVersion: "apps/v1",
          kind: "Deployment",
          metadata: { name: "istiod", namespace: "istio-system" },
        }) as { spec: { template: { metadata: { annotations?: Record<string, string> } } } };
        assert(istiod.spec.template.metadata.annotations?.[RESTARTED_AT_ANNOTATION], "restartedAt set");
        assert(
          await forbidden(as, "/api/v1/namespaces/istio-system/secrets/istio-ca-secret"),
          "other Istio secrets",
        );
        assert(
          await forbidden(as, "/api/v1/namespaces/apps/configmaps"),
          "listing ConfigMaps it did not apply",
        );
      },
    );
  },
});
