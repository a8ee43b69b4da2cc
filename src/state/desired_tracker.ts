/**
 * Which clusters' desired state changed: recompute every cluster after a config change or a
 * discovery update, compare by content hash, and give a new generation only to those that differ.
 * @module
 */
import { contentHash } from "./canonical.ts";
import { type DesiredConflict, DesiredStatePlan } from "./desired_state.ts";
import type { InventoryView, VersionedObject } from "./inventory.ts";
import type { ClusterInfo, KubeObject, ObjectKey } from "./types.ts";

/** One cluster's current desired state. */
export interface ClusterDesiredState {
  cluster: string;
  /** Grows by one each time the content changes (within this tracker's life). */
  generation: number;
  /** Hash over every key and version: equal digests mean equal desired state. */
  digest: string;
  /** Sorted by key. */
  objects: KubeObject[];
  /** key → {object, version}: the "want" side of {@linkcode diffByVersion}. */
  items: Map<ObjectKey, VersionedObject>;
  conflicts: DesiredConflict[];
}

/** Result of {@linkcode DesiredStateTracker.update}. */
export interface DesiredStateUpdate {
  /** Clusters whose desired state is new or different, by name. */
  changed: ClusterDesiredState[];
  /** Clusters no longer given (deregistered). */
  removed: string[];
  /** Problems in the declared documents (each document is skipped, the rest still counts). */
  errors: string[];
}

/** Options of {@linkcode DesiredStateTracker}. */
export interface DesiredStateTrackerOptions {
  /**
   * First generation number. Generations are informational (resync is by version), but a server
   * that restarts can start above its previous run, e.g. with the current time in seconds.
   */
  firstGeneration?: number;
}

/** Keeps every cluster's desired state and tells which changed. */
export class DesiredStateTracker {
  #states = new Map<string, ClusterDesiredState>();
  #lastGeneration = new Map<string, number>();
  #first: number;

  constructor(opts: DesiredStateTrackerOptions = {}) {
    this.#first = opts.firstGeneration ?? 1;
  }

  /** Recomputes every cluster in `clusters`; clusters not listed any more are dropped. */
  update(
    clusters: readonly ClusterInfo[],
    configs: readonly KubeObject[],
    inventories: ReadonlyMap<string, InventoryView>,
  ): DesiredStateUpdate {
    const plan = new DesiredStatePlan(configs, inventories);
    const changed: ClusterDesiredState[] = [];
    const seen = new Set<string>();
    for (const c of [...clusters].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) {
      if (seen.has(c.name)) continue;
      seen.add(c.name);
      const { objects, conflicts } = plan.for(c);
      const items = new Map<ObjectKey, VersionedObject>();
      for (const o of objects) items.set(plan.keyOf(o), { object: o, version: plan.versionOf(o) });
      const digest = contentHash([...items].map(([k, v]) => [k, v.version]));
      const prev = this.#states.get(c.name);
      if (prev && prev.digest === digest) {
        prev.conflicts = conflicts;
        continue;
      }
      const last = this.#lastGeneration.get(c.name);
      const generation = last === undefined ? this.#first : last + 1;
      this.#lastGeneration.set(c.name, generation);
      const state: ClusterDesiredState = { cluster: c.name, generation, digest, objects, items, conflicts };
      this.#states.set(c.name, state);
      changed.push(state);
    }
    const removed = [...this.#states.keys()].filter((n) => !seen.has(n)).sort();
    for (const n of removed) this.#states.delete(n);
    return { changed, removed, errors: plan.declared.errors };
  }

  /** The current desired state of `cluster` (shared, do not modify). */
  get(cluster: string): ClusterDesiredState | undefined {
    return this.#states.get(cluster);
  }

  /** Names of the clusters tracked. */
  clusters(): string[] {
    return [...this.#states.keys()].sort();
  }
}

/**
 * Whether a discovery change can alter any desired state: only Services feed federation today, so
 * a Deployment's churn does not trigger a recomputation.
 */
export function discoveryChangeMatters(keys: Iterable<ObjectKey>): boolean {
  for (const k of keys) if (k.startsWith("v1|Service|")) return true;
  return false;
}
