/**
 * The declared-configuration documents (group `meshrelay.io`, version `v1alpha1`; the same shapes
 * serve as CRDs later): `KubernetesCluster`, `ClusterConfig` and `ServiceFederation`. Parsing is
 * per document: a bad document is reported and left out, the others still count.
 * See docs/config.md for the format.
 * @module
 */
import { validateObject } from "./manifests.ts";
import type { ClusterInfo, KubeObject } from "./types.ts";

/** API group of meshrelay's own documents. */
export const CONFIG_GROUP = "meshrelay.io";
/** `apiVersion` of meshrelay's own documents. */
export const CONFIG_API_VERSION = "meshrelay.io/v1alpha1";
/** Default cluster DNS domain. */
export const DEFAULT_CLUSTER_DOMAIN = "cluster.local";
/** Default namespace of generated ServiceEntries. */
export const DEFAULT_FEDERATION_NAMESPACE = "istio-system";

/** Which clusters a document targets: the union of names and a label selector. */
export interface ClusterTarget {
  clusters: string[];
  /** `matchLabels`; `{}` selects every cluster; absent selects none. */
  matchLabels?: Record<string, string>;
}

/** A valid `ClusterConfig`. */
export interface ClusterConfigSpec {
  name: string;
  target: ClusterTarget;
  objects: KubeObject[];
}

/** A valid `ServiceFederation`. */
export interface ServiceFederationSpec {
  name: string;
  target: ClusterTarget;
  /** Services whose labels include all of these are exported. Never empty. */
  exportLabels: Record<string, string>;
  namespace: string;
}

/** Default lifetime of the Istio intermediate CAs a `RootTrustPolicy` issues. */
export const DEFAULT_ISTIO_INTERMEDIATE_TTL_DAYS = 365;

/** A valid `RootTrustPolicy`: the root that signs the clusters' Istio intermediate CAs (federated trust). */
export interface RootTrustPolicySpec {
  name: string;
  /** Which clusters it serves; undefined: every registered cluster. */
  target?: ClusterTarget;
  /** A root the server generates and keeps (secret `root-trust.<name>`), or the user's own root in a secret. */
  ca: { generated: true } | { secretRef: string };
  /** Lifetime of each cluster's intermediate CA. */
  ttlDays: number;
}

/** All declared documents, sorted by name within each kind, plus one message per rejected document. */
export interface DeclaredConfig {
  clusters: ClusterInfo[];
  clusterConfigs: ClusterConfigSpec[];
  federations: ServiceFederationSpec[];
  rootTrustPolicies: RootTrustPolicySpec[];
  errors: string[];
}

/**
 * The `RootTrustPolicy` that serves `cluster`: the first by name whose target includes it (a policy
 * without target serves every cluster). Undefined when none does.
 */
export function rootTrustPolicyFor(
  policies: readonly RootTrustPolicySpec[],
  cluster: ClusterInfo,
): RootTrustPolicySpec | undefined {
  return policies.find((p) => !p.target || targets(p.target, cluster));
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Whether `labels` contains every pair of `matchLabels`. */
export function matchesLabels(
  labels: Record<string, string> | undefined,
  matchLabels: Record<string, string>,
): boolean {
  for (const [k, v] of Object.entries(matchLabels)) {
    if (labels?.[k] !== v) return false;
  }
  return true;
}

/** Whether `cluster` is one of `target`'s clusters. */
export function targets(target: ClusterTarget, cluster: ClusterInfo): boolean {
  if (target.clusters.includes(cluster.name)) return true;
  return target.matchLabels !== undefined && matchesLabels(cluster.labels, target.matchLabels);
}

/**
 * Splits declared documents by kind and validates them. Documents of other groups are reported as
 * errors (a config folder holds only meshrelay documents; objects to deliver go in `spec.objects`).
 */
export function parseDeclaredConfig(docs: readonly KubeObject[]): DeclaredConfig {
  const out: DeclaredConfig = {
    clusters: [],
    clusterConfigs: [],
    federations: [],
    rootTrustPolicies: [],
    errors: [],
  };
  const seen = new Set<string>();
  for (const doc of docs) {
    const id = `${doc.kind}/${doc.metadata?.name}`;
    const fail = (why: string) => out.errors.push(`${id}: ${why}`);
    if (doc.apiVersion !== CONFIG_API_VERSION) {
      fail(`apiVersion must be ${CONFIG_API_VERSION}, got ${JSON.stringify(doc.apiVersion)}`);
      continue;
    }
    if (seen.has(id)) {
      fail("declared twice; the first one counts");
      continue;
    }
    seen.add(id);
    const spec = (doc.spec ?? {}) as Record<string, unknown>;
    if (typeof spec !== "object" || Array.isArray(spec)) {
      fail("spec is not a mapping");
      continue;
    }
    const name = doc.metadata.name;
    try {
      switch (doc.kind) {
        case "KubernetesCluster": {
          if (!DNS_SUBDOMAIN.test(name)) {
            throw `metadata.name must be a DNS name (it is the agent certificate's SAN)`;
          }
          const domain = spec.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
          if (typeof domain !== "string" || !DNS_SUBDOMAIN.test(domain)) {
            throw "spec.clusterDomain is not a DNS name";
          }
          out.clusters.push({ name, labels: { ...(doc.metadata.labels ?? {}) }, clusterDomain: domain });
          break;
        }
        case "ClusterConfig": {
          const target = parseTarget(spec);
          const raw = spec.objects ?? [];
          if (!Array.isArray(raw)) throw "spec.objects is not a list";
          const objects: KubeObject[] = [];
          raw.forEach((o, i) => {
            const problem = validateObject(o);
            if (problem) throw `spec.objects[${i}]: ${problem}`;
            objects.push(structuredClone(o as KubeObject));
          });
          out.clusterConfigs.push({ name, target, objects });
          break;
        }
        case "ServiceFederation": {
          const target = parseTarget(spec);
          const sel = spec.exportSelector as Record<string, unknown> | undefined;
          const exportLabels = parseLabels(sel?.matchLabels, "spec.exportSelector.matchLabels");
          if (!exportLabels || Object.keys(exportLabels).length === 0) {
            throw "spec.exportSelector.matchLabels must name at least one label (exporting every Service is never meant)";
          }
          const namespace = spec.namespace ?? DEFAULT_FEDERATION_NAMESPACE;
          if (typeof namespace !== "string" || !DNS_LABEL.test(namespace)) {
            throw "spec.namespace is not a namespace name";
          }
          out.federations.push({ name, target, exportLabels, namespace });
          break;
        }
        case "RootTrustPolicy": {
          out.rootTrustPolicies.push(parseRootTrustPolicy(name, spec));
          break;
        }
        default:
          throw `unknown kind (expected KubernetesCluster, ClusterConfig, ServiceFederation or RootTrustPolicy)`;
      }
    } catch (e) {
      fail(typeof e === "string" ? e : e instanceof Error ? e.message : String(e));
    }
  }
  const byName = (a: { name: string }, b: { name: string }) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  out.clusters.sort(byName);
  out.clusterConfigs.sort(byName);
  out.federations.sort(byName);
  out.rootTrustPolicies.sort(byName);
  return out;
}

function parseRootTrustPolicy(name: string, spec: Record<string, unknown>): RootTrustPolicySpec {
  const target = spec.clusters === undefined && spec.clusterSelector === undefined
    ? undefined
    : parseTarget(spec);
  const ca = spec.mgmtServerCa as Record<string, unknown> | undefined;
  if (ca === null || typeof ca !== "object" || Array.isArray(ca)) {
    throw "spec.mgmtServerCa must be a mapping with generated: {} or secretRef: {name}";
  }
  const generated = ca.generated !== undefined;
  const ref = ca.secretRef as Record<string, unknown> | undefined;
  if (generated === (ref !== undefined)) {
    throw "spec.mgmtServerCa needs exactly one of generated: {} and secretRef: {name}";
  }
  if (
    ref !== undefined && (typeof ref !== "object" || ref === null || typeof ref.name !== "string" ||
      !DNS_SUBDOMAIN.test(ref.name))
  ) {
    throw "spec.mgmtServerCa.secretRef.name must name a secret in the server's namespace";
  }
  const opts = (spec.intermediateCertOptions ?? {}) as Record<string, unknown>;
  const ttlDays = opts.ttlDays ?? DEFAULT_ISTIO_INTERMEDIATE_TTL_DAYS;
  if (typeof ttlDays !== "number" || !Number.isInteger(ttlDays) || ttlDays < 1 || ttlDays > 3650) {
    throw "spec.intermediateCertOptions.ttlDays must be a whole number of days from 1 to 3650";
  }
  return {
    name,
    ...(target ? { target } : {}),
    ca: ref ? { secretRef: ref.name as string } : { generated: true },
    ttlDays,
  };
}

function parseTarget(spec: Record<string, unknown>): ClusterTarget {
  const clusters = spec.clusters ?? [];
  if (!Array.isArray(clusters) || clusters.some((c) => typeof c !== "string")) {
    throw "spec.clusters must be a list of cluster names";
  }
  let matchLabels: Record<string, string> | undefined;
  if (spec.clusterSelector !== undefined) {
    const sel = spec.clusterSelector as Record<string, unknown> | null;
    if (sel === null || typeof sel !== "object" || Array.isArray(sel)) {
      throw "spec.clusterSelector is not a mapping";
    }
    matchLabels = parseLabels(sel.matchLabels ?? {}, "spec.clusterSelector.matchLabels");
  }
  if (clusters.length === 0 && matchLabels === undefined) {
    throw "targets no cluster: set spec.clusters and/or spec.clusterSelector";
  }
  return { clusters: [...clusters] as string[], matchLabels };
}

function parseLabels(v: unknown, field: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw `${field} is not a mapping`;
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== "string") throw `${field}.${k} must be a string (quote "true")`;
    out[k] = x;
  }
  return out;
}
