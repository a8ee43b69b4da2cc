/**
 * The shapes that cross between discovery, declared configuration, reconciliation, the wire and
 * the backends (directory-backed here, Kubernetes in `src/kube`). Objects are Kubernetes-shaped so
 * that the same code serves a folder of YAML manifests and a real cluster.
 * @module
 */

/** Metadata meshrelay reads from an object. */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [k: string]: unknown;
}

/** A Kubernetes-shaped object (discovered entity, declared config, or an object to apply). */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [k: string]: unknown;
}

/** Identity of an object within one cluster: `apiVersion|kind|namespace|name`. */
export type ObjectKey = string;

/** The key of an object, stable and unique within a cluster. */
export function objectKey(o: Pick<KubeObject, "apiVersion" | "kind" | "metadata">): ObjectKey {
  return `${o.apiVersion}|${o.kind}|${o.metadata.namespace ?? ""}|${o.metadata.name}`;
}

/** A change seen by a discovery source. */
export type DiscoveryEvent =
  | { type: "upsert"; object: KubeObject }
  | { type: "delete"; key: ObjectKey };

/** What an agent discovers in its own cluster. */
export interface DiscoverySource {
  /** Everything currently present. */
  snapshot(signal?: AbortSignal): Promise<KubeObject[]>;
  /**
   * Changes after the snapshot, until `signal` aborts. A source that loses track (watch expired)
   * yields `{type: "resync"}` and the caller takes a new snapshot.
   */
  watch(signal: AbortSignal): AsyncIterable<DiscoveryEvent | { type: "resync" }>;
}

/** A cluster as the server knows it: name (from its certificate) and labels (from registration). */
export interface ClusterInfo {
  name: string;
  labels: Record<string, string>;
  /** DNS suffix of the cluster's services (`KubernetesCluster` `spec.clusterDomain`); default `cluster.local`. */
  clusterDomain?: string;
}

/** Declared state in the management plane: objects and which clusters they target. */
export interface ConfigSource {
  /** All declared config documents. */
  list(signal?: AbortSignal): Promise<readonly KubeObject[]>;
  /** Yields once per change (coalescing is fine) until `signal` aborts. */
  changes(signal: AbortSignal): AsyncIterable<void>;
}

/** Outcome of applying one object in a workload cluster. */
export interface ObjectStatus {
  key: ObjectKey;
  state: "applied" | "pruned" | "failed";
  message?: string;
}

/** Applies a cluster's desired state to its backend and prunes what it applied before and no longer wants. */
export interface Applier {
  /** `desired` is the complete desired set; returns one status per applied or pruned object. */
  apply(desired: KubeObject[], signal?: AbortSignal): Promise<ObjectStatus[]>;
  /**
   * Optional: the objects it applied in earlier runs that are still intact, with their versions
   * (content hashes), so a restarted agent can resync by difference instead of receiving everything.
   */
  held?(signal?: AbortSignal): Promise<Map<ObjectKey, { object: KubeObject; version: string }>>;
}
