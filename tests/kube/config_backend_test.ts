import { parse, parseAllDocuments } from "yaml";
import { systemClock } from "../../src/clock.ts";
import { PreconditionError } from "../../src/errors.ts";
import { nullLogger } from "../../src/log.ts";
import { KubeConfigSource } from "../../src/kube/mod.ts";
import {
  CONFIG_API_VERSION,
  DirectoryConfigSource,
  type KubeObject,
  objectKey,
  parseDeclaredConfig,
} from "../../src/state/mod.ts";
import { assert, assertEquals, assertRejects } from "../../src/testing/assert.ts";
import { Collector, TestKube } from "./backend_helpers.ts";
import { kubeAvailable, startTestCluster } from "./harness.ts";

const repo = new URL("../../", import.meta.url).pathname;

/** The CRD manifests shipped in deploy/crds/. */
export async function shippedCrds(): Promise<KubeObject[]> {
  const out: KubeObject[] = [];
  for await (const e of Deno.readDir(`${repo}deploy/crds`)) {
    if (e.name.endsWith(".yaml")) out.push(parse(await Deno.readTextFile(`${repo}deploy/crds/${e.name}`)));
  }
  return out.sort((a, b) => a.metadata.name < b.metadata.name ? -1 : 1);
}

const sorted = (docs: readonly KubeObject[]) =>
  [...docs].sort((a, b) => objectKey(a) < objectKey(b) ? -1 : 1);

const clusterConfig = (name: string, data: Record<string, string>): KubeObject => ({
  apiVersion: CONFIG_API_VERSION,
  kind: "ClusterConfig",
  metadata: { name },
  spec: {
    clusters: ["cluster-1"],
    objects: [{ apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace: "apps" }, data }],
  },
});

Deno.test({
  name: "KubeConfigSource against a real kube-apiserver: the shipped CRDs, the examples, changes",
  ignore: !kubeAvailable(),
  fn: async (t) => {
    await using cluster = await startTestCluster({ name: "config-source" });
    const kube = new TestKube(cluster.kubeConfig);
    const source = () =>
      new KubeConfigSource({
        kubeConfig: cluster.kubeConfig,
        clock: systemClock,
        log: nullLogger,
        retryMs: 100,
      });
    const early = new Collector<void>((signal) => source().changes(signal));

    await t.step("without the CRDs, list() names the one to install", async () => {
      const e = await assertRejects(() => source().list(), PreconditionError);
      assertEquals(
        e.message,
        "the CustomResourceDefinition kubernetesclusters.meshrelay.io is not installed (kubectl apply -f deploy/crds/)",
      );
    });

    await t.step("the shipped CRDs install and serve the four kinds", async () => {
      await kube.installCrds(await shippedCrds());
      assertEquals(await source().list(), []);
    });

    await t.step("the examples through the CRDs equal what the directory source reads", async () => {
      const dir = await new DirectoryConfigSource({
        root: `${repo}examples/config`,
        clock: systemClock,
        log: nullLogger,
        useFsEvents: false,
      }).list();
      assertEquals(dir.length, 5);
      await kube.apply(...dir);
      const fromKube = await source().list();
      assertEquals(sorted(fromKube), sorted(dir));
      assertEquals(parseDeclaredConfig(fromKube), parseDeclaredConfig(dir));
      assertEquals(parseDeclaredConfig(fromKube).errors, []);
    });

    await t.step(
      "the documents shown in docs/config.md and docs/kubernetes.md pass the CRDs (strict dry run)",
      async () => {
        const docsIn = async (file: string) =>
          // A fence indented inside a list item indents its content as much.
          [...(await Deno.readTextFile(`${repo}docs/${file}`)).matchAll(/^( *)```yaml\n([\s\S]*?)^\1```$/gm)]
            .flatMap((m) =>
              parseAllDocuments(m[2].replace(new RegExp(`^${m[1]}`, "gm"), "")).map((d) =>
                d.toJS() as KubeObject
              )
            )
            .filter((d) => d?.apiVersion === CONFIG_API_VERSION);
        const docs = [...await docsIn("config.md"), ...await docsIn("kubernetes.md")];
        assertEquals(docs.map((d) => d.kind), [
          "KubernetesCluster",
          "ClusterConfig",
          "ServiceFederation",
          "RootTrustPolicy",
        ]);
        for (const d of docs) {
          await kube.rest.request({
            method: "PATCH",
            path: await kube.pathOf(d),
            query: { dryRun: "All", fieldManager: "docs-test", fieldValidation: "Strict", force: true },
            body: d,
            contentType: "application/apply-patch+yaml",
          });
        }
      },
    );

    await t.step("a changes() started before the CRDs existed yields once they are served", async () => {
      await early.waitFor("a change once the examples were applied", (i) => i.length >= 1);
      await early.stop();
    });

    await t.step("the CRDs refuse what parseDeclaredConfig would reject", async () => {
      const cases: [string, unknown][] = [
        ["no target", { objects: [] }],
        ["empty export selector", { clusters: ["a"], exportSelector: { matchLabels: {} } }],
        ["object without name", {
          clusters: ["a"],
          objects: [{ apiVersion: "v1", kind: "ConfigMap", metadata: {} }],
        }],
        ["bad namespace", { clusters: ["a"], exportSelector: { matchLabels: { x: "y" } }, namespace: "A B" }],
      ];
      for (const [why, spec] of cases) {
        const kind = why.includes("export") || why.includes("namespace")
          ? "ServiceFederation"
          : "ClusterConfig";
        try {
          await kube.apply({ apiVersion: CONFIG_API_VERSION, kind, metadata: { name: "bad" }, spec });
        } catch (e) {
          assertEquals((e as { httpStatus?: number }).httpStatus, 422, why);
          continue;
        }
        throw new Error(`${why}: accepted`);
      }
      const policies: [string, unknown][] = [
        ["RootTrustPolicy without a CA", {}],
        ["RootTrustPolicy with both CAs", { mgmtServerCa: { generated: {}, secretRef: { name: "s" } } }],
        ["RootTrustPolicy with a zero TTL", {
          mgmtServerCa: { generated: {} },
          intermediateCertOptions: { ttlDays: 0 },
        }],
      ];
      for (const [why, spec] of policies) {
        try {
          await kube.apply({
            apiVersion: CONFIG_API_VERSION,
            kind: "RootTrustPolicy",
            metadata: { name: "bad" },
            spec,
          });
        } catch (e) {
          assertEquals((e as { httpStatus?: number }).httpStatus, 422, why);
          assertEquals(
            parseDeclaredConfig([{
              apiVersion: CONFIG_API_VERSION,
              kind: "RootTrustPolicy",
              metadata: { name: "bad" },
              spec: spec as Record<string, unknown>,
            }]).errors.length,
            1,
            `${why}: parseDeclaredConfig agrees`,
          );
          continue;
        }
        throw new Error(`${why}: accepted`);
      }
    });

    await t.step("changes() yields on create, update and delete, not on status", async () => {
      const src = source();
      await src.list();
      const c = new Collector<void>((signal) => src.changes(signal));
      try {
        await kube.apply(clusterConfig("extra", { a: "1" }));
        await c.waitFor("a change for the new ClusterConfig", (i) => i.length >= 1);
        assert((await src.list()).some((d) => d.metadata.name === "extra"));
        const n = c.items.length;
        // Status is the server's, not configuration; then a real change.
        await kube.rest.request({
          method: "PATCH",
          path: "/apis/meshrelay.io/v1alpha1/clusterconfigs/extra/status",
          body: { status: { delivered: 2 } },
          contentType: "application/merge-patch+json",
        });
        await kube.apply(clusterConfig("extra", { a: "2" }));
        await c.waitFor("a change for the update", (i) => i.length > n);
        const changed = (await src.list()).find((d) => d.metadata.name === "extra")!;
        assertEquals((changed.spec as { objects: KubeObject[] }).objects[0].data, { a: "2" });
        assertEquals(c.items.length, n + 1);
        await kube.delete(clusterConfig("extra", {}));
        await c.waitFor("a change for the delete", (i) => i.length > n + 1);
        assert(!(await src.list()).some((d) => d.metadata.name === "extra"));
      } finally {
        await c.stop();
      }
    });
  },
});
