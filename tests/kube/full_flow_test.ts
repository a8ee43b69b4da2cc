/**
 * The whole product on real API servers (issue 4, "Done means"): a management cluster and two workload
 * clusters (three kube-apiservers with etcd), the shipped CRDs, `meshrelay certs register` for both
 * clusters, a real `meshrelay server --kube` and two `meshrelay agent --kube` processes on loopback.
 *
 * Proven here, each by what a user would look at:
 * - registration: KubernetesCluster in the management cluster; root CA, bootstrap token and agent ConfigMap
 *   in each workload cluster; `--wait` returns once the agent stored its client certificate, and the
 *   bootstrap token secret is then gone;
 * - the agents bootstrap from the secrets in their own clusters (client certificate for their name,
 *   chaining to the relay root under openssl);
 * - discovery reaches the server: a Service exported in cluster-1 shows up on the server (its discovery
 *   metrics) and, through a ServiceFederation, as an Istio ServiceEntry server-side applied in cluster-2;
 * - a ClusterConfig in the management cluster lands in both workload clusters, server-side applied with
 *   field manager `meshrelay`, and is pruned from both when removed;
 * - Istio federated trust: with a RootTrustPolicy, each agent writes `cacerts` in istio-system whose
 *   intermediate verifies with openssl against the policy's root, and rolls istio-system's Deployments;
 * - deregistration stops a cluster: its stream is closed and its workload secrets removed.
 *
 * The server and the agents run as the ServiceAccounts of the shipped manifests (`deploy/server/`,
 * `deploy/agent/` applied as-is), so the least-privilege RBAC is proven sufficient for the whole flow;
 * only the user steps (CRDs, register, deregister, token list) use the admin identity.
 */
import { parse, parseAllDocuments } from "yaml";
import { Buffer } from "node:buffer";
import { assert, assertEquals } from "../../src/testing/assert.ts";
import type { KubeObject } from "../../src/state/mod.ts";
import { metricValue, type Proc, runCli, spawn, waitFor } from "../relay_e2e_harness.ts";
import { TestKube } from "./backend_helpers.ts";
import { kubeAvailable, startTestCluster, type TestCluster } from "./harness.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const V = "meshrelay.io/v1alpha1";
const NS = "meshrelay";
const CLUSTERS = ["cluster-1", "cluster-2"] as const;
/** Bound of every wait below: generous for two shared cores, never an assertion on speed. */
const WAIT_MS = 90_000;

async function shippedCrds(): Promise<KubeObject[]> {
  const out: KubeObject[] = [];
  for await (const e of Deno.readDir(`${REPO}deploy/crds`)) {
    if (e.name.endsWith(".yaml")) out.push(parse(await Deno.readTextFile(`${REPO}deploy/crds/${e.name}`)));
  }
  return out;
}

/** Every document of one deploy/ folder, in file order (what `kubectl apply -f deploy/<folder>/` applies). */
async function shippedManifests(folder: string): Promise<KubeObject[]> {
  const files: string[] = [];
  for await (const e of Deno.readDir(`${REPO}deploy/${folder}`)) {
    if (e.name.endsWith(".yaml")) files.push(e.name);
  }
  const out: KubeObject[] = [];
  for (const f of files.sort()) {
    for (const d of parseAllDocuments(await Deno.readTextFile(`${REPO}deploy/${folder}/${f}`))) {
      const o = d.toJS() as KubeObject | null;
      if (o) out.push(o);
    }
  }
  return out;
}

/**
 * A kubeconfig for a shipped ServiceAccount: an x509 identity with the user name and groups the
 * account's token would carry, so RBAC treats it exactly as the pod.
 */
async function serviceAccount(cluster: TestCluster, name: string): Promise<string> {
  const user = await cluster.user(`system:serviceaccount:${NS}:${name}`, [
    "system:serviceaccounts",
    `system:serviceaccounts:${NS}`,
    "system:authenticated",
  ]);
  return user.kubeconfigPath;
}

/** Istio's ServiceEntry kind, as a CRD that keeps any spec (the agents apply ServiceEntries). */
const SERVICE_ENTRY_CRD: KubeObject = {
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: { name: "serviceentries.networking.istio.io" },
  spec: {
    group: "networking.istio.io",
    names: {
      kind: "ServiceEntry",
      plural: "serviceentries",
      singular: "serviceentry",
      listKind: "ServiceEntryList",
    },
    scope: "Namespaced",
    versions: [{
      name: "v1",
      served: true,
      storage: true,
      schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } },
    }],
  },
};

/** A stand-in istiod (no controller-manager runs, so it never gets pods; its template is what we watch). */
const ISTIOD: KubeObject = {
  apiVersion: "apps/v1",
  kind: "Deployment",
  metadata: { name: "istiod", namespace: "istio-system" },
  spec: {
    selector: { matchLabels: { app: "istiod" } },
    template: {
      metadata: { labels: { app: "istiod" } },
      spec: { containers: [{ name: "discovery", image: "docker.io/istio/pilot:1.27.0" }] },
    },
  },
};

const dec = new TextDecoder();
const b64 = (s: string) => dec.decode(Buffer.from(s, "base64"));

type Live = Record<string, unknown> & {
  metadata: {
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    managedFields?: { manager: string; operation: string }[];
    deletionTimestamp?: string;
  };
  data?: Record<string, string>;
  spec?: Record<string, unknown>;
};

async function secretData(
  kube: TestKube,
  ns: string,
  name: string,
): Promise<Record<string, string> | undefined> {
  const s = await kube.get({ apiVersion: "v1", kind: "Secret", metadata: { name, namespace: ns } }) as
    | Live
    | undefined;
  return s && Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, b64(v)]));
}

/** True when `live` was written by meshrelay's server-side apply. */
function appliedByMeshrelay(live: Live): boolean {
  return (live.metadata.managedFields ?? []).some((f) =>
    f.manager === "meshrelay" && f.operation === "Apply"
  ) &&
    live.metadata.labels?.["app.kubernetes.io/managed-by"] === "meshrelay";
}

async function openssl(
  args: string[],
  files: Record<string, string>,
): Promise<{ code: number; out: string }> {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-full-flow-" });
  try {
    for (const [n, text] of Object.entries(files)) await Deno.writeTextFile(`${dir}/${n}`, text);
    const r = await new Deno.Command("openssl", { args, cwd: dir, stdout: "piped", stderr: "piped" })
      .output();
    return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "full flow on three real API servers: register, bootstrap, discovery, config, prune, Istio cacerts",
  ignore: !kubeAvailable(),
  fn: async (t) => {
    const started: TestCluster[] = [];
    const procs: Proc[] = [];
    try {
      const [mgmt, ...workloads] = await Promise.all(
        ["mgmt", ...CLUSTERS].map((name) => startTestCluster({ name })),
      );
      started.push(mgmt, ...workloads);
      const m = new TestKube(mgmt.kubeConfig);
      const w = Object.fromEntries(CLUSTERS.map((c, i) => [c, new TestKube(workloads[i].kubeConfig)]));
      const wc = Object.fromEntries(CLUSTERS.map((c, i) => [c, workloads[i]]));

      await t.step(
        "management cluster: the shipped CRDs and server manifests, a RootTrustPolicy",
        async () => {
          await m.installCrds(await shippedCrds());
          // Namespace, ServiceAccount, RBAC, Deployment, Services (no controller runs: no pods).
          await m.apply(...await shippedManifests("server"));
          await m.apply(
            {
              apiVersion: V,
              kind: "RootTrustPolicy",
              metadata: { name: "mesh" },
              spec: { mgmtServerCa: { generated: {} } },
            },
            {
              apiVersion: V,
              kind: "ServiceFederation",
              metadata: { name: "exported" },
              spec: {
                clusterSelector: {},
                exportSelector: { matchLabels: { "meshrelay.io/export": "true" } },
              },
            },
          );
          // Workload clusters run Istio (its ServiceEntry kind, istio-system and an istiod Deployment) and
          // the shipped agent manifests.
          for (const c of CLUSTERS) {
            await w[c].installCrds([SERVICE_ENTRY_CRD]);
            await w[c].apply(...await shippedManifests("agent"));
            await w[c].apply(
              { apiVersion: "v1", kind: "Namespace", metadata: { name: "istio-system" } },
              ISTIOD,
            );
          }
        },
      );

      let port = 0;
      let metricsPort = 0;
      await t.step("meshrelay server --kube creates its CA in its namespace and serves", async () => {
        const server = spawn("server", [
          "--kube",
          "--kubeconfig",
          await serviceAccount(mgmt, "meshrelay-server"),
          "--namespace",
          NS,
          "--host",
          "127.0.0.1",
          "--port",
          "0",
          "--metrics-host",
          "127.0.0.1",
          "--metrics-port",
          "0",
          "--tls-reload-interval",
          "1s",
        ], "server");
        procs.push(server);
        const l = await server.waitForLine((l) => l.msg === "relay server listening", "listening", WAIT_MS);
        port = Number(String(l.address).split(":").pop());
        metricsPort = l.metricsPort as number;
        assert((await secretData(m, NS, "relay-root-tls-secret"))?.["ca.crt"], "relay root in the namespace");
      });

      const registrations: Promise<{ code: number; stdout: string; stderr: string }>[] = [];
      await t.step(
        "certs register --wait for both clusters; their agents start from what it wrote",
        async () => {
          for (const c of CLUSTERS) {
            registrations.push(runCli("certs", [
              "register",
              "--cluster",
              c,
              "--mgmt-kubeconfig",
              mgmt.kubeconfigPath,
              "--remote-kubeconfig",
              wc[c].kubeconfigPath,
              "--server-address",
              `localhost:${port}`,
              "--label",
              `name=${c}`,
              "--wait",
              "--wait-timeout",
              "90s",
            ]));
          }
          // What register writes first: the KubernetesCluster, then the workload side.
          for (const c of CLUSTERS) {
            await waitFor(`${c}: ConfigMap meshrelay-agent`, async () =>
              !!(await w[c].get({
                apiVersion: "v1",
                kind: "ConfigMap",
                metadata: { name: "meshrelay-agent", namespace: NS },
              })), WAIT_MS);
            const cm = await w[c].get({
              apiVersion: "v1",
              kind: "ConfigMap",
              metadata: { name: "meshrelay-agent", namespace: NS },
            }) as Live;
            assertEquals(cm.data, { cluster: c, "server-address": `localhost:${port}` });
            // The agent reads its cluster name and server address from that ConfigMap, as the pod does.
            const agent = spawn(
              "agent",
              [
                "--kube",
                "--kubeconfig",
                await serviceAccount(wc[c], "meshrelay-agent"),
                "--namespace",
                NS,
                "--identity-poll-interval",
                "1s",
                "--no-metrics",
                "--istio-ca",
                "--istio-restart-pods",
              ],
              c,
              { MESHRELAY_CLUSTER: cm.data!.cluster, MESHRELAY_SERVER_ADDRESS: cm.data!["server-address"] },
            );
            procs.push(agent);
          }
          const results = await Promise.all(registrations);
          for (const [i, r] of results.entries()) {
            assertEquals(r.code, 0, `register ${CLUSTERS[i]}: ${r.stderr}`);
            assert(
              /the agent holds client certificate [0-9a-f]+; bootstrap token secret/.test(r.stdout),
              r.stdout,
            );
          }
        },
      );

      await t.step(
        "registration left: KubernetesClusters, no bootstrap token secret, used tokens",
        async () => {
          for (const c of CLUSTERS) {
            const kc = await m.get({
              apiVersion: V,
              kind: "KubernetesCluster",
              metadata: { name: c },
            }) as Live;
            assertEquals(kc.metadata.labels, { name: c });
            assertEquals(kc.spec, { clusterDomain: "cluster.local" });
            assertEquals(await secretData(w[c], NS, "relay-identity-token-secret"), undefined);
          }
          const list = await runCli("server", [
            "token",
            "list",
            "--kube",
            "--kubeconfig",
            mgmt.kubeconfigPath,
          ]);
          assertEquals(list.code, 0, list.stderr);
          for (const c of CLUSTERS) {
            assert(new RegExp(`  ${c}  expires \\S+  used `).test(list.stdout), list.stdout);
          }
        },
      );

      await t.step(
        "each agent bootstrapped from its cluster's secrets: a certificate for its name",
        async () => {
          const mgmtRoot = (await secretData(m, NS, "relay-root-tls-secret"))!["ca.crt"];
          for (const c of CLUSTERS) {
            assertEquals((await secretData(w[c], NS, "relay-root-tls-secret"))?.["ca.crt"], mgmtRoot);
            const client = (await secretData(w[c], NS, "relay-client-tls-secret"))!;
            const v = await openssl(
              [
                "verify",
                "-x509_strict",
                "-purpose",
                "sslclient",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "chain.pem",
                "leaf.pem",
              ],
              { "root.pem": mgmtRoot, "chain.pem": client["tls.crt"], "leaf.pem": client["tls.crt"] },
            );
            assertEquals(v.code, 0, v.out);
            const san = await openssl(["x509", "-in", "leaf.pem", "-noout", "-ext", "subjectAltName"], {
              "leaf.pem": client["tls.crt"],
            });
            assert(san.out.includes(`DNS:${c}`), san.out);
            const agent = procs.find((p) => p.name === c)!;
            await agent.waitForLine(
              (l) => l.msg === "in sync with the server",
              "in sync",
              WAIT_MS,
            );
          }
        },
      );

      await t.step(
        "discovery: a Service exported in cluster-1 reaches the server and cluster-2",
        async () => {
          await w["cluster-1"].apply(
            { apiVersion: "v1", kind: "Namespace", metadata: { name: "apps" } },
            {
              apiVersion: "v1",
              kind: "Service",
              metadata: { name: "reviews", namespace: "apps", labels: { "meshrelay.io/export": "true" } },
              spec: { ports: [{ name: "http", port: 9080 }] },
            },
          );
          const entry = {
            apiVersion: "networking.istio.io/v1",
            kind: "ServiceEntry",
            metadata: { name: "reviews-apps-cluster-1", namespace: "istio-system" },
          };
          await waitFor(
            "ServiceEntry in cluster-2",
            async () => !!(await w["cluster-2"].get(entry)),
            WAIT_MS,
          );
          const live = await w["cluster-2"].get(entry) as Live;
          assert(appliedByMeshrelay(live), JSON.stringify(live.metadata));
          assertEquals((live.spec as { hosts: string[] }).hosts, ["reviews.apps.svc.cluster.local"]);
          // A cluster never receives an entry for its own Service.
          assertEquals(await w["cluster-1"].get(entry), undefined);
          // The server counted the pushed objects (the ServiceEntry was computed from its inventory).
          assert(
            await metricValue(metricsPort, "meshrelay_discovery_objects_total") > 0,
            "discovery counted",
          );
        },
      );

      const config: KubeObject = {
        apiVersion: V,
        kind: "ClusterConfig",
        metadata: { name: "baseline" },
        spec: {
          clusterSelector: {},
          objects: [
            { apiVersion: "v1", kind: "Namespace", metadata: { name: "mesh-config" } },
            {
              apiVersion: "v1",
              kind: "ConfigMap",
              metadata: { name: "mesh-settings", namespace: "mesh-config" },
              data: { mode: "strict" },
            },
          ],
        },
      };
      const settings = {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "mesh-settings", namespace: "mesh-config" },
      };
      await t.step("a ClusterConfig lands in both clusters, server-side applied by meshrelay", async () => {
        await m.apply(config);
        for (const c of CLUSTERS) {
          await waitFor(`${c}: mesh-settings`, async () => !!(await w[c].get(settings)), WAIT_MS);
          const live = await w[c].get(settings) as Live;
          assertEquals(live.data, { mode: "strict" });
          assert(appliedByMeshrelay(live), `${c}: ${JSON.stringify(live.metadata)}`);
          assertEquals(live.metadata.annotations?.["meshrelay.io/declared-by"], "ClusterConfig/baseline");
        }
      });

      await t.step("removing the ClusterConfig prunes its objects from both clusters", async () => {
        await m.delete(config);
        for (const c of CLUSTERS) {
          await waitFor(`${c}: mesh-settings pruned`, async () => !(await w[c].get(settings)), WAIT_MS);
          // Namespaces are pruned last; no namespace controller runs here, so a deleted one stays Terminating.
          await waitFor(`${c}: mesh-config namespace pruned`, async () => {
            const ns = await w[c].get({
              apiVersion: "v1",
              kind: "Namespace",
              metadata: { name: "mesh-config" },
            });
            return !ns || !!(ns as Live).metadata.deletionTimestamp;
          }, WAIT_MS);
        }
      });

      await t.step("Istio cacerts in both clusters verify against the RootTrustPolicy's root", async () => {
        await waitFor(
          "generated root root-trust.mesh",
          async () => !!(await secretData(m, NS, "root-trust.mesh")),
          WAIT_MS,
        );
        const root = (await secretData(m, NS, "root-trust.mesh"))!["root-cert.pem"];
        for (const c of CLUSTERS) {
          await waitFor(
            `${c}: cacerts`,
            async () => !!(await secretData(w[c], "istio-system", "cacerts")),
            WAIT_MS,
          );
          const ca = (await secretData(w[c], "istio-system", "cacerts"))!;
          assertEquals(Object.keys(ca).sort(), [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "root-cert.pem",
          ]);
          assertEquals(ca["root-cert.pem"], root);
          assertEquals(ca["cert-chain.pem"], ca["ca-cert.pem"] + ca["root-cert.pem"]);
          const v = await openssl(["verify", "-x509_strict", "-CAfile", "root.pem", "ca.pem"], {
            "root.pem": root,
            "ca.pem": ca["ca-cert.pem"],
          });
          assertEquals(v.code, 0, v.out);
          const text = await openssl([
            "x509",
            "-in",
            "ca.pem",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName,basicConstraints",
          ], {
            "ca.pem": ca["ca-cert.pem"],
          });
          assert(text.out.includes(`L = ${c}`) && text.out.includes("CN = Intermediate CA"), text.out);
          assert(text.out.includes("DNS:istiod.istio-system.svc") && text.out.includes("CA:TRUE"), text.out);
          const key = await openssl(["pkey", "-in", "key.pem", "-pubout"], { "key.pem": ca["ca-key.pem"] });
          const pub = await openssl(["x509", "-in", "ca.pem", "-noout", "-pubkey"], {
            "ca.pem": ca["ca-cert.pem"],
          });
          assertEquals(key.out, pub.out, `${c}: ca-key.pem belongs to ca-cert.pem`);
          await waitFor(`${c}: istiod restarted`, async () => {
            const d = await w[c].get(ISTIOD) as Live;
            const tpl =
              (d.spec as { template: { metadata: { annotations?: Record<string, string> } } }).template;
            return !!tpl.metadata.annotations?.["kubectl.kubernetes.io/restartedAt"];
          }, WAIT_MS);
        }
      });

      await t.step("certs deregister cluster-2: stream closed, workload secrets removed", async () => {
        const agent = procs.find((p) => p.name === "cluster-2")!;
        const mark = agent.mark;
        const r = await runCli("certs", [
          "deregister",
          "--cluster",
          "cluster-2",
          "--mgmt-kubeconfig",
          mgmt.kubeconfigPath,
          "--remote-kubeconfig",
          wc["cluster-2"].kubeconfigPath,
        ]);
        assertEquals(r.code, 0, r.stderr);
        assert(r.stdout.startsWith("cluster-2: deregistered"), r.stdout);
        assertEquals(
          await m.get({ apiVersion: V, kind: "KubernetesCluster", metadata: { name: "cluster-2" } }),
          undefined,
        );
        await agent.waitForLine(
          (l) => l.msg === "sync session ended; retrying" && l.message === "cluster deregistered",
          "session closed by deregistration",
          WAIT_MS,
          mark,
        );
        for (const s of ["relay-client-tls-secret", "relay-root-tls-secret"]) {
          assertEquals(await secretData(w["cluster-2"], NS, s), undefined, s);
        }
      });
    } finally {
      // SIGTERM first (graceful stop), SIGKILL for whatever is still running after 10 s.
      await Promise.allSettled(procs.map(async (p) => {
        const stopping = p.stop("SIGTERM");
        if (!(await p.exitWithin(10_000))) await p.kill9();
        await stopping;
      }));
      await Promise.allSettled(started.map((c) => c.stop()));
    }
  },
});
