/**
 * Desired state per cluster: what the declared configuration and everything discovered say a
 * cluster should hold. Pure and deterministic, so the server can recompute it after any change and
 * compare by hash.
 * @module
 */
import {
  type DeclaredConfig,
  DEFAULT_CLUSTER_DOMAIN,
  matchesLabels,
  parseDeclaredConfig,
  targets,
} from "./declared_config.ts";
import type { InventoryView } from "./inventory.ts";
import { type ResourceVersion, resourceVersionOf } from "./canonical.ts";
import { serviceEntryFor } from "./service_entry.ts";
import { type ClusterInfo, type KubeObject, type ObjectKey, objectKey } from "./types.ts";

/** Label on every object meshrelay delivers. */
export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
/** Value of {@linkcode MANAGED_BY_LABEL}. */
export const MANAGED_BY_VALUE = "meshrelay";
/** Annotation naming the declared document an object comes from (`ClusterConfig/name`). */
export const DECLARED_BY_ANNOTATION = "meshrelay.io/declared-by";

/** Two declared documents want the same object in one cluster; the first (by kind, then name) wins. */
export interface DesiredConflict {
  key: ObjectKey;
  kept: string;
  dropped: string;
}

/** A cluster's desired state and the conflicts found while computing it. */
export interface DesiredState {
  objects: KubeObject[];
  conflicts: DesiredConflict[];
}

/**
 * The key prefixes of discovered objects whose content desired-state computation reads: Services,
 * exported to other clusters by a ServiceFederation. The server tells its agents (Welcome), which send
 * every other object as its version alone.
 */
export const DISCOVERED_CONTENT_KEY_PREFIXES: readonly string[] = Object.freeze(["v1|Service|"]);

/**
 * Whether desired-state computation reads the content of the discovered object under `key` (one of
 * {@linkcode DISCOVERED_CONTENT_KEY_PREFIXES}). Everything else a cluster discovers matters to the server
 * only by version (resync by difference), so that is all it needs to keep.
 */
export function readsDiscoveredContent(key: ObjectKey): boolean {
  return DISCOVERED_CONTENT_KEY_PREFIXES.some((p) => key.startsWith(p));
}

interface Exported {
  sourceCluster: string;
  service: KubeObject;
}

/**
 * Declared configuration and discovered Services, parsed once and evaluated for many clusters
 * (recomputing all clusters after a change costs one parse, not one per cluster).
 */
export class DesiredStatePlan {
  readonly declared: DeclaredConfig;
  #domains: Map<string, string>;
  #services: Exported[];
  // Every cluster a document targets gets the same labelled copy of each of its objects, made once
  // per plan: with thousands of clusters, per-cluster copies (and their hashes) were most of a
  // recomputation's time and of the server's idle memory. The copies are shared: never modified.
  #copies = new Map<KubeObject, Map<string, KubeObject>>();
  #entries = new Map<KubeObject, Map<string, KubeObject | undefined>>();
  #facts = new WeakMap<KubeObject, { key: ObjectKey; version?: ResourceVersion }>();

  constructor(configs: readonly KubeObject[], inventories: ReadonlyMap<string, InventoryView>) {
    this.declared = parseDeclaredConfig(configs);
    this.#domains = new Map(
      this.declared.clusters.map((c) => [c.name, c.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN]),
    );
    this.#services = [];
    if (this.declared.federations.length > 0) {
      for (const name of [...inventories.keys()].sort()) {
        for (const o of inventories.get(name)!.objects()) {
          if (o.apiVersion === "v1" && o.kind === "Service") {
            this.#services.push({ sourceCluster: name, service: o });
          }
        }
      }
    }
  }

  /** The desired state of `cluster`, sorted by object key. */
  for(cluster: ClusterInfo): DesiredState {
    const chosen = new Map<ObjectKey, { object: KubeObject; from: string }>();
    const conflicts: DesiredConflict[] = [];
    const offer = (o: KubeObject, from: string) => {
      const k = this.keyOf(o);
      const had = chosen.get(k);
      if (had) {
        if (had.from !== from) conflicts.push({ key: k, kept: had.from, dropped: from });
        return;
      }
      chosen.set(k, { object: this.#managed(o, from), from });
    };
    for (const cc of this.declared.clusterConfigs) {
      if (!targets(cc.target, cluster)) continue;
      for (const o of cc.objects) offer(o, `ClusterConfig/${cc.name}`);
    }
    for (const f of this.declared.federations) {
      if (!targets(f.target, cluster)) continue;
      for (const { sourceCluster, service } of this.#services) {
        if (sourceCluster === cluster.name) continue;
        if (!matchesLabels(service.metadata.labels, f.exportLabels)) continue;
        const se = this.#serviceEntry(service, sourceCluster, f.name, f.namespace);
        if (se) offer(se, `ServiceFederation/${f.name}`);
      }
    }
    const objects = [...chosen.keys()].sort().map((k) => chosen.get(k)!.object);
    return { objects, conflicts };
  }

  /** `objectKey(o)`, computed once per object of this plan. */
  keyOf(o: KubeObject): ObjectKey {
    let f = this.#facts.get(o);
    if (!f) this.#facts.set(o, f = { key: objectKey(o) });
    return f.key;
  }

  /** `resourceVersionOf(o)`, computed once per object of this plan (its objects are never modified). */
  versionOf(o: KubeObject): ResourceVersion {
    this.keyOf(o);
    const f = this.#facts.get(o)!;
    return f.version ??= resourceVersionOf(o);
  }

  #managed(o: KubeObject, from: string): KubeObject {
    let byFrom = this.#copies.get(o);
    if (!byFrom) this.#copies.set(o, byFrom = new Map());
    let c = byFrom.get(from);
    if (!c) byFrom.set(from, c = managed(o, from));
    return c;
  }

  #serviceEntry(service: KubeObject, sourceCluster: string, federation: string, namespace: string) {
    let byFederation = this.#entries.get(service);
    if (!byFederation) this.#entries.set(service, byFederation = new Map());
    const k = `${sourceCluster}\u0000${federation}\u0000${namespace}`;
    if (!byFederation.has(k)) {
      byFederation.set(
        k,
        serviceEntryFor(service, {
          sourceCluster,
          clusterDomain: this.#domains.get(sourceCluster) ?? DEFAULT_CLUSTER_DOMAIN,
          namespace,
          federation,
        }),
      );
    }
    return byFederation.get(k);
  }
}

function managed(o: KubeObject, from: string): KubeObject {
  const c = structuredClone(o);
  c.metadata.labels = { ...(c.metadata.labels ?? {}), [MANAGED_BY_LABEL]: MANAGED_BY_VALUE };
  c.metadata.annotations = { ...(c.metadata.annotations ?? {}), [DECLARED_BY_ANNOTATION]: from };
  return c;
}

/**
 * The objects `cluster` should hold given every declared document (`configs`) and every cluster's
 * discovered objects (`inventories`, by cluster name): deterministic order (by key), each labelled
 * `app.kubernetes.io/managed-by: meshrelay`.
 */
export function desiredStateFor(
  cluster: ClusterInfo,
  configs: readonly KubeObject[],
  inventories: ReadonlyMap<string, InventoryView>,
): KubeObject[] {
  return new DesiredStatePlan(configs, inventories).for(cluster).objects;
}
