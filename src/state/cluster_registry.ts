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

/** Registered clusters, kept up to date from the declared documents. */
export class ClusterRegistry {
  #clusters = new Map<string, ClusterInfo>();

  /** A registry holding the `KubernetesCluster` documents among `docs`. */
  static fromConfig(docs: readonly KubeObject[]): ClusterRegistry {
    const r = new ClusterRegistry();
    r.update(docs);
    return r;
  }

  /** Replaces the registry with the `KubernetesCluster` documents among `docs`; reports what changed. */
  update(docs: readonly KubeObject[]): RegistryChange {
    const next = new Map(parseDeclaredConfig(docs).clusters.map((c) => [c.name, c]));
    const change: RegistryChange = { added: [], removed: [], updated: [] };
    for (const [name, c] of next) {
      const prev = this.#clusters.get(name);
      if (!prev) change.added.push(name);
      else if (JSON.stringify(prev) !== JSON.stringify(c)) change.updated.push(name);
    }
    for (const name of this.#clusters.keys()) if (!next.has(name)) change.removed.push(name);
    this.#clusters = next;
    return change;
  }

  /** The cluster called `name`, if registered. */
  get(name: string): ClusterInfo | undefined {
    const c = this.#clusters.get(name);
    return c && structuredClone(c);
  }

  /** Whether `name` is registered. */
  has(name: string): boolean {
    return this.#clusters.has(name);
  }

  /** Number of registered clusters (no copies, unlike `list`). */
  get size(): number {
    return this.#clusters.size;
  }

  /** All registered clusters, by name. */
  list(): ClusterInfo[] {
    return [...this.#clusters.values()].map((c) => structuredClone(c));
  }
}
