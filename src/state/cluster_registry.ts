/**
 * The registered clusters (name → labels), as declared by `KubernetesCluster` documents. The name is
 * the agent certificate's SAN, so this is also the list of identities the server accepts.
 * @module
 */
import { parseDeclaredConfig } from "./declared_config.ts";
import type { ClusterInfo, KubeObject } from "./types.ts";

/** What changed between two versions of the registry. */
export interface RegistryChange {
  added: string[];
  removed: string[];
  /** Labels or domain changed. */
  updated: string[];
}

/**
 * Registered clusters, kept up to date from the declared documents. What it returns is frozen and
 * shared, not copied: the hub reads the whole registry on every recompute and the server every 500 ms,
 * and at 5,000 clusters copying it each time was a measurable part of a config fan-out.
 */
export class ClusterRegistry {
  #clusters = new Map<string, Readonly<ClusterInfo>>();
  #list: readonly Readonly<ClusterInfo>[] = [];
  #names: readonly string[] = [];

  /** A registry holding the `KubernetesCluster` documents among `docs`. */
  static fromConfig(docs: readonly KubeObject[]): ClusterRegistry {
    const r = new ClusterRegistry();
    r.update(docs);
    return r;
  }

  /** Replaces the registry with the `KubernetesCluster` documents among `docs`; reports what changed. */
  update(docs: readonly KubeObject[]): RegistryChange {
    const next = new Map(
      parseDeclaredConfig(docs).clusters.map((
        c,
      ) => [c.name, Object.freeze({ ...c, labels: Object.freeze(c.labels) })]),
    );
    const change: RegistryChange = { added: [], removed: [], updated: [] };
    for (const [name, c] of next) {
      const prev = this.#clusters.get(name);
      if (!prev) change.added.push(name);
      else if (JSON.stringify(prev) !== JSON.stringify(c)) change.updated.push(name);
    }
    for (const name of this.#clusters.keys()) if (!next.has(name)) change.removed.push(name);
    this.#clusters = next;
    this.#list = Object.freeze([...next.values()]);
    this.#names = Object.freeze([...next.keys()].sort());
    return change;
  }

  /** The cluster called `name`, if registered. */
  get(name: string): Readonly<ClusterInfo> | undefined {
    return this.#clusters.get(name);
  }

  /** Whether `name` is registered. */
  has(name: string): boolean {
    return this.#clusters.has(name);
  }

  /** Number of registered clusters. */
  get size(): number {
    return this.#clusters.size;
  }

  /** All registered clusters, in the order the declared documents gave them. */
  list(): readonly Readonly<ClusterInfo>[] {
    return this.#list;
  }

  /** Registered cluster names, sorted. */
  names(): readonly string[] {
    return this.#names;
  }
}
