/**
 * docs/config.md shows real documents: every meshrelay document in its ```yaml blocks is valid, and
 * the ServiceEntry shown is exactly what the examples produce.
 */
import { systemClock } from "../src/clock.ts";
import { nullLogger } from "../src/log.ts";
import {
  ClusterRegistry,
  CONFIG_API_VERSION,
  DesiredStateTracker,
  DirectoryConfigSource,
  DirectoryDiscoverySource,
  Inventory,
  type KubeObject,
  parseDeclaredConfig,
  parseManifests,
} from "../src/state/mod.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";

const REPO = new URL("..", import.meta.url).pathname;

async function yamlBlocks(): Promise<KubeObject[]> {
  const md = await Deno.readTextFile(`${REPO}docs/config.md`);
  const out: KubeObject[] = [];
  for (const m of md.matchAll(/^```yaml\n([\s\S]*?)^```$/gm)) {
    const r = parseManifests(m[1], "docs/config.md");
    assertEquals(r.errors, []);
    out.push(...r.objects);
  }
  return out;
}

Deno.test("docs/config.md documents are valid and match the implementation", async (t) => {
  const docs = await yamlBlocks();
  await t.step("every meshrelay document parses without errors", () => {
    const ours = docs.filter((d) => d.apiVersion === CONFIG_API_VERSION);
    assertEquals(ours.map((d) => d.kind), ["KubernetesCluster", "ClusterConfig", "ServiceFederation"]);
    assertEquals(parseDeclaredConfig(ours).errors, []);
  });
  await t.step("the ServiceEntry shown is the one generated from the examples", async () => {
    const shown = docs.find((d) => d.kind === "ServiceEntry");
    assert(shown);
    const configs = await new DirectoryConfigSource({
      root: `${REPO}examples/config`,
      clock: systemClock,
      log: nullLogger,
    }).list();
    const inventories = new Map<string, Inventory>();
    for (const n of ["cluster-1", "cluster-2"]) {
      const inv = new Inventory();
      inv.applySnapshot(
        await new DirectoryDiscoverySource({
          root: `${REPO}examples/clusters/${n}`,
          clock: systemClock,
          log: nullLogger,
        })
          .snapshot(),
      );
      inventories.set(n, inv);
    }
    const r = new DesiredStateTracker().update(
      ClusterRegistry.fromConfig(configs).list(),
      configs,
      inventories,
    );
    const generated = r.changed.find((c) => c.cluster === "cluster-2")!.objects.find((o) =>
      o.kind === "ServiceEntry"
    );
    assertEquals(generated, shown);
  });
});
