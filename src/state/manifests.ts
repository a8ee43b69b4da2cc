/**
 * Parsing YAML manifests (multi-document files) into Kubernetes-shaped objects. Bad documents are
 * reported with their file and position so one broken file never hides the others.
 * @module
 */
import { parseAllDocuments, YAMLError } from "yaml";
import type { KubeObject } from "./types.ts";

/** Result of parsing one file: the valid objects and one message per rejected document. */
export interface ParsedManifests {
  objects: KubeObject[];
  errors: string[];
}

/**
 * Kinds that live outside namespaces. Other kinds without a namespace are placed in `default`,
 * as `kubectl apply` would, so that keys agree with what a real cluster reports.
 */
const CLUSTER_SCOPED = new Set([
  "Namespace",
  "Node",
  "PersistentVolume",
  "StorageClass",
  "ClusterRole",
  "ClusterRoleBinding",
  "CustomResourceDefinition",
  "MutatingWebhookConfiguration",
  "ValidatingWebhookConfiguration",
  "PriorityClass",
  "APIService",
  "IngressClass",
  "RuntimeClass",
  "KubernetesCluster",
]);

/** Whether objects of `kind` are cluster-scoped (not namespaced). */
export function isClusterScoped(kind: string): boolean {
  return CLUSTER_SCOPED.has(kind);
}

/** Checks the fields every object needs; returns a problem description or undefined. */
export function validateObject(v: unknown): string | undefined {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return "not a mapping";
  const o = v as Record<string, unknown>;
  if (typeof o.apiVersion !== "string" || o.apiVersion === "") return "missing apiVersion";
  if (typeof o.kind !== "string" || o.kind === "") return "missing kind";
  const m = o.metadata as Record<string, unknown> | undefined;
  if (!m || typeof m !== "object" || Array.isArray(m)) return "missing metadata";
  if (typeof m.name !== "string" || m.name === "") return "missing metadata.name";
  if (m.namespace !== undefined && typeof m.namespace !== "string") {
    return "metadata.namespace is not a string";
  }
  for (const f of ["labels", "annotations"]) {
    const x = m[f];
    if (x === undefined) continue;
    if (x === null || typeof x !== "object" || Array.isArray(x)) return `metadata.${f} is not a mapping`;
    for (const [k, val] of Object.entries(x)) {
      if (typeof val !== "string") return `metadata.${f}.${k} is not a string`;
    }
  }
  return undefined;
}

/**
 * Parses every document of a YAML text. Needs env access to `LOG_TOKENS` and `LOG_STREAM` (read by
 * the yaml package); without it the permission error is thrown, not reported as a bad document. Empty documents are skipped; `kind: List` is flattened.
 * Namespaced kinds without a namespace get `default` when `defaultNamespace` is set.
 */
export function parseManifests(
  text: string,
  source: string,
  opts: { defaultNamespace?: string } = {},
): ParsedManifests {
  const objects: KubeObject[] = [];
  const errors: string[] = [];
  let docs;
  try {
    docs = parseAllDocuments(text, { prettyErrors: false, uniqueKeys: false });
  } catch (e) {
    // Only YAML problems are the file's fault; anything else (e.g. the yaml package reading
    // LOG_TOKENS/LOG_STREAM without --allow-env) must surface as itself, not as a bad manifest.
    if (!(e instanceof YAMLError)) throw e;
    return { objects, errors: [`${source}: ${firstLine(e.message)}`] };
  }
  const list = Array.isArray(docs) ? docs : [];
  list.forEach((doc, i) => {
    const where = `${source} (document ${i + 1})`;
    if (doc.errors.length > 0) {
      errors.push(`${where}: ${firstLine(doc.errors[0].message)}`);
      return;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (e) {
      if (!(e instanceof YAMLError)) throw e;
      errors.push(`${where}: ${firstLine(e.message)}`);
      return;
    }
    if (value === null || value === undefined) return;
    const items = isList(value) ? (value as { items: unknown[] }).items : [value];
    for (const item of items) {
      const problem = validateObject(item);
      if (problem) {
        errors.push(`${where}: ${problem}`);
        continue;
      }
      const o = item as KubeObject;
      if (opts.defaultNamespace && o.metadata.namespace === undefined && !isClusterScoped(o.kind)) {
        o.metadata.namespace = opts.defaultNamespace;
      }
      objects.push(o);
    }
  });
  return { objects, errors };
}

function isList(v: unknown): boolean {
  const o = v as Record<string, unknown>;
  return typeof o === "object" && o !== null && typeof o.kind === "string" && o.kind.endsWith("List") &&
    Array.isArray(o.items);
}

function firstLine(s: string): string {
  return s.split("\n")[0];
}
