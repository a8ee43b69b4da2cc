/**
 * Trimming live objects down to what meshrelay compares and sends. The API server adds fields that
 * change on every write or differ per cluster (managedFields, resourceVersion, uid, generation,
 * timestamps, workload status); keeping them would give every object a new content hash on each
 * heartbeat and make the relay resend unchanged state.
 * @module
 */
import type { KubeObject } from "../state/mod.ts";

/** Metadata fields dropped from every object. */
export const NOISY_METADATA = [
  "managedFields",
  "resourceVersion",
  "uid",
  "generation",
  "creationTimestamp",
  "deletionTimestamp",
  "deletionGracePeriodSeconds",
  "selfLink",
  "generateName",
] as const;

/** Annotations dropped from every object: copies of the object itself or counters. */
export const NOISY_ANNOTATIONS = [
  "kubectl.kubernetes.io/last-applied-configuration",
  "deployment.kubernetes.io/revision",
] as const;

/** Kinds whose `status` is kept by default (it carries meaning: load-balancer addresses, phase). */
export const DEFAULT_STATUS_KINDS: readonly string[] = ["Service", "Namespace"];

/** Options of {@linkcode trimObject}. */
export interface TrimOptions {
  /** Kinds whose `status` is kept; every other kind loses it. Default {@linkcode DEFAULT_STATUS_KINDS}. */
  statusKinds?: readonly string[];
}

/**
 * A trimmed deep copy of a live object: only stable content, `apiVersion` and `kind` first.
 * Owner references keep their identity fields but lose their `uid`.
 */
export function trimObject(live: Record<string, unknown>, opts: TrimOptions = {}): KubeObject {
  const o = structuredClone(live) as KubeObject;
  const statusKinds = opts.statusKinds ?? DEFAULT_STATUS_KINDS;
  const meta = (o.metadata ?? {}) as Record<string, unknown>;
  for (const f of NOISY_METADATA) delete meta[f];
  const ann = meta.annotations as Record<string, string> | undefined;
  if (ann) {
    for (const a of NOISY_ANNOTATIONS) delete ann[a];
    if (Object.keys(ann).length === 0) delete meta.annotations;
  }
  if (meta.labels && Object.keys(meta.labels as object).length === 0) delete meta.labels;
  if (Array.isArray(meta.ownerReferences)) {
    meta.ownerReferences = (meta.ownerReferences as Record<string, unknown>[]).map(({ uid: _uid, ...r }) =>
      r
    );
  }
  if (Array.isArray(meta.finalizers) && meta.finalizers.length === 0) delete meta.finalizers;
  if (!statusKinds.includes(o.kind)) delete o.status;
  const { apiVersion, kind, metadata: _m, ...rest } = o;
  return { apiVersion, kind, metadata: meta as KubeObject["metadata"], ...rest };
}
