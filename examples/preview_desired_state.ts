/**
 * Prints what each cluster would receive: declared config (a folder) + discovered objects (one
 * folder per cluster, named like the cluster) → desired state per cluster, as the server computes
 * it. No server, no agent, nothing written.
 *
 *   deno run -R --allow-env=LOG_TOKENS,LOG_STREAM examples/preview_desired_state.ts CONFIG_DIR CLUSTERS_DIR [--yaml]
 * (the yaml package reads those two variables)
 * @module
 */
import { stringify } from "yaml";
import { systemClock } from "../src/clock.ts";
import { jsonLogger } from "../src/log.ts";
import {
  ClusterRegistry,
  DesiredStateTracker,
  DirectoryConfigSource,
  DirectoryDiscoverySource,
  Inventory,
  objectKey,
} from "../src/state/mod.ts";

const args = Deno.args.filter((a) => !a.startsWith("--"));
const asYaml = Deno.args.includes("--yaml");
if (args.length !== 2) {
  console.error("usage: preview_desired_state.ts CONFIG_DIR CLUSTERS_DIR [--yaml]");
  Deno.exit(2);
}
const [configDir, clustersDir] = args;
const log = jsonLogger({ level: "warn" });
const configs = await new DirectoryConfigSource({ root: configDir, clock: systemClock, log }).list();
const registry = ClusterRegistry.fromConfig(configs);
const inventories = new Map<string, Inventory>();
for (const c of registry.list()) {
  try {
    const objs = await new DirectoryDiscoverySource({
      root: `${clustersDir}/${c.name}`,
      clock: systemClock,
      log,
    })
      .snapshot();
    const inv = new Inventory();
    inv.applySnapshot(objs);
    inventories.set(c.name, inv);
  } catch {
    console.error(`no folder for cluster ${c.name} under ${clustersDir}: nothing discovered there`);
  }
}
const r = new DesiredStateTracker().update(registry.list(), configs, inventories);
for (const e of r.errors) console.error(`config error: ${e}`);
for (const state of r.changed) {
  console.log(`# cluster ${state.cluster} (generation ${state.generation}, ${state.objects.length} objects)`);
  for (const c of state.conflicts) {
    console.log(`#   conflict on ${c.key}: kept ${c.kept}, dropped ${c.dropped}`);
  }
  for (const o of state.objects) {
    if (asYaml) console.log(`---\n${stringify(o).trimEnd()}`);
    else console.log(`  ${objectKey(o)}`);
  }
}
if (r.errors.length > 0) Deno.exit(1);
