/**
 * Which clusters' desired state changed: recompute every cluster after a config change or a
 * discovery update, compare by content hash, and give a new generation only to those that differ.
 * @module
 */
import { contentHash } from "./canonical.ts";
import { type DesiredConflict, DesiredStatePlan, readsDiscoveredContent } from "./desired_state.ts";
import type { InventoryView, VersionedObject } from "./inventory.ts";
import type { ClusterInfo, KubeObject, ObjectKey } from "./types.ts";

/** One cluster's current desired state. */
export interface ClusterDesiredState {
  cluster: string;
  /** Grows by one each time the content changes (within this tracker's life). */
  generation: number;
  /** Hash over every key and version: equal digests mean equal desired state. */
  digest: string;
  /** Sorted by key. Shared with every cluster of equal content: never modify. */
  objects: KubeObject[];
  /** key → {object, version}: the "want" side of {@linkcode diffByVersion}. Shared like `objects`. */
  items: Map<ObjectKey, VersionedObject>;
  conflicts: DesiredConflict[];
}

/** What clusters with equal desired content share. */
type SharedContent = Pick<ClusterDesiredState, "digest" | "objects" | "items">;

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
    // Clusters that one ClusterConfig targets alike want equal content: they share one object list
    // and one items map (read-only), instead of a copy each per cluster held for the server's life.
    const contents = new Map<string, SharedContent>();
    for (const st of this.#states.values()) contents.set(st.digest, st);
    for (const c of [...clusters].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) {
      if (seen.has(c.name)) continue;
      seen.add(c.name);
      const { objects, conflicts } = plan.for(c);
      const digest = contentHash(objects.map((o) => [plan.keyOf(o), plan.versionOf(o)]));
      const prev = this.#states.get(c.name);
      if (prev && prev.digest === digest) {
        prev.conflicts = conflicts;
        continue;
      }
      let content = contents.get(digest);
      if (!content) {
        const items = new Map<ObjectKey, VersionedObject>();
        for (const o of objects) items.set(plan.keyOf(o), { object: o, version: plan.versionOf(o) });
        contents.set(digest, content = { digest, objects, items });
      }
      const last = this.#lastGeneration.get(c.name);
      const generation = last === undefined ? this.#first : last + 1;
      this.#lastGeneration.set(c.name, generation);
      const state: ClusterDesiredState = {
        cluster: c.name,
        generation,
        digest: content.digest,
        objects: content.objects,
        items: content.items,
        conflicts,
      };
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
 * Whether a discovery change can alter any desired state: only what {@linkcode readsDiscoveredContent}
 * reads (Services, for federation), so a Deployment's churn does not trigger a recomputation.
 */
export function discoveryChangeMatters(keys: Iterable<ObjectKey>): boolean {
  for (const k of keys) if (readsDiscoveredContent(k)) return true;
  return false;
}
