/**
 * Declared configuration read from the management cluster's meshrelay.io custom resources
 * (`KubernetesCluster`, `ClusterConfig`, `ServiceFederation`, `RootTrustPolicy`; CRDs in deploy/crds/).
 * @module
 */
import type { KubeConfig } from "@kubernetes/client-node";
import type { Clock } from "../clock.ts";
import { PreconditionError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  CONFIG_API_VERSION,
  CONFIG_GROUP,
  type ConfigSource,
  contentHash,
  type KubeObject,
} from "../state/mod.ts";
import { isKubeStatus, KubeRest } from "./kube_rest.ts";
import { watchCollection } from "./kube_watch.ts";

/** The meshrelay.io kinds, in the order documents are listed, with their plural resource names. */
export const CONFIG_KINDS: readonly { kind: string; plural: string }[] = [
  { kind: "KubernetesCluster", plural: "kubernetesclusters" },
  { kind: "ClusterConfig", plural: "clusterconfigs" },
  { kind: "ServiceFederation", plural: "servicefederations" },
  { kind: "RootTrustPolicy", plural: "roottrustpolicies" },
];

/** Annotations that are copies of the object, not configuration. */
const DROPPED_ANNOTATIONS = ["kubectl.kubernetes.io/last-applied-configuration"];

/** Options of {@linkcode KubeConfigSource}. */
export interface KubeConfigSourceOptions {
  kubeConfig: KubeConfig;
  clock: Clock;
  log: Logger;
  /** Server-side length of one watch connection. Default 300 s. */
  watchTimeoutSeconds?: number;
  /** Waits before listing again after a failure, ms. Default 1000 (doubling up to 30,000). */
  retryMs?: number;
  /** Randomness for retry backoff. Default Math.random. */
  random?: () => number;
}

/**
 * The document a custom resource stands for: what a config folder would hold for it (`apiVersion`,
 * `kind`, `metadata.name`, labels and annotations, `spec`), without server-added fields or status.
 */
export function declaredDocumentOf(live: Record<string, unknown>, kind: string): KubeObject {
  const meta = (live.metadata ?? {}) as Record<string, unknown>;
  const metadata: KubeObject["metadata"] = { name: String(meta.name ?? "") };
  const labels = meta.labels as Record<string, string> | undefined;
  if (labels && Object.keys(labels).length > 0) metadata.labels = { ...labels };
  const ann = { ...(meta.annotations as Record<string, string> | undefined) };
  for (const a of DROPPED_ANNOTATIONS) delete ann[a];
  if (Object.keys(ann).length > 0) metadata.annotations = ann;
  const doc: KubeObject = { apiVersion: CONFIG_API_VERSION, kind, metadata };
  if (live.spec !== undefined) doc.spec = structuredClone(live.spec);
  return doc;
}

function collectionPath(plural: string): string {
  return `/apis/${CONFIG_API_VERSION}/${plural}`;
}

/**
 * {@linkcode ConfigSource} over the meshrelay.io custom resources of one API server.
 *
 * - `list()` lists the four kinds and returns their documents (KubernetesClusters, then
 *   ClusterConfigs, ServiceFederations, then RootTrustPolicies, each by name) in exactly the shape
 *   `parseDeclaredConfig` reads from a config folder. A missing CRD is a `PreconditionError` naming it.
 * - `changes()` watches the four kinds and yields when the documents changed (status-only updates
 *   and server-side bookkeeping do not count). Bursts coalesce: one yield covers every change made
 *   before the consumer asked for the next one. Expired watches re-list; failures are retried with
 *   backoff and logged, so a CRD installed after the server started is picked up.
 */
export class KubeConfigSource implements ConfigSource {
  readonly #rest: KubeRest;
  readonly #opts: KubeConfigSourceOptions;
  readonly #log: Logger;
  /** Per kind, name → content hash of what the last `list()` returned. */
  #listed = new Map<string, Map<string, string>>();

  constructor(opts: KubeConfigSourceOptions) {
    this.#opts = opts;
    this.#rest = new KubeRest({ kubeConfig: opts.kubeConfig });
    this.#log = opts.log.child({ component: "kube-config" });
  }

  async list(signal?: AbortSignal): Promise<KubeObject[]> {
    const out: KubeObject[] = [];
    const listed = new Map<string, Map<string, string>>();
    for (const k of CONFIG_KINDS) {
      const { docs } = await this.#listKind(k, signal);
      listed.set(k.kind, hashesOf(docs));
      out.push(...docs);
    }
    this.#listed = listed;
    return out;
  }

  async *changes(signal: AbortSignal): AsyncIterable<void> {
    let dirty = false;
    let wake: (() => void) | undefined;
    let failure: unknown;
    const markDirty = () => {
      dirty = true;
      wake?.();
    };
    const ctl = new AbortController();
    const inner = AbortSignal.any([signal, ctl.signal]);
    // One follower per kind; each retries its own failures, so the pump ends only on abort.
    const pump = Promise.all(CONFIG_KINDS.map((k) => this.#follow(k, inner, markDirty)))
      .catch((e) => {
        if (!inner.aborted) failure = e;
      })
      .finally(() => wake?.());
    const aborted = new Promise<void>((r) => inner.addEventListener("abort", () => r(), { once: true }));
    try {
      while (!signal.aborted) {
        if (!dirty) {
          await Promise.race([new Promise<void>((r) => wake = r), aborted]);
          wake = undefined;
        }
        if (failure) throw failure;
        if (signal.aborted) return;
        if (!dirty) continue;
        dirty = false;
        yield;
      }
    } finally {
      ctl.abort();
      await pump;
    }
  }

  /**
   * Follows one kind and calls `changed` when a document appears, changes or goes. The first list
   * is compared with what the last `list()` returned (so nothing between that and this is missed);
   * without one, it only sets the baseline, unless listing failed before (e.g. the CRD was missing).
   */
  async #follow(
    k: { kind: string; plural: string },
    signal: AbortSignal,
    changed: () => void,
  ): Promise<void> {
    let known = this.#listed.get(k.kind);
    let failures = 0;
    let failedBefore = false;
    const retryMs = this.#opts.retryMs ?? 1000;
    const random = this.#opts.random ?? Math.random;
    while (!signal.aborted) {
      let rv: string;
      try {
        const listed = await this.#listKind(k, signal);
        rv = listed.rv;
        const next = hashesOf(listed.docs);
        if (known ? !sameHashes(known, next) : failedBefore) changed();
        known = next;
        failures = 0;
      } catch (e) {
        if (signal.aborted) return;
        const wait = Math.floor(Math.min(30_000, retryMs * 2 ** failures) * (0.5 + 0.5 * random()));
        failures++;
        failedBefore = true;
        this.#log.warn("listing declared config failed; retrying", {
          kind: k.kind,
          error: e instanceof Error ? e.message : String(e),
          retryInMs: wait,
        });
        try {
          await this.#opts.clock.sleep(wait, signal);
        } catch {
          return;
        }
        continue;
      }
      const hashes = known;
      const watch = watchCollection(
        {
          path: collectionPath(k.plural),
          resourceVersion: rv,
          clock: this.#opts.clock,
          log: this.#log,
          timeoutSeconds: this.#opts.watchTimeoutSeconds,
          random: this.#opts.random,
        },
        this.#rest,
        signal,
      );
      for await (const it of watch) {
        if (it.type === "BOOKMARK") continue;
        if (it.type === "EXPIRED") {
          this.#log.info("config watch expired; listing again", { kind: k.kind, reason: it.message });
          break;
        }
        const doc = declaredDocumentOf(it.object, k.kind);
        const name = doc.metadata.name;
        if (it.type === "DELETED") {
          if (hashes.delete(name)) changed();
          continue;
        }
        const h = contentHash(doc);
        if (hashes.get(name) === h) continue;
        hashes.set(name, h);
        changed();
      }
    }
  }

  async #listKind(
    k: { kind: string; plural: string },
    signal?: AbortSignal,
  ): Promise<{ docs: KubeObject[]; rv: string }> {
    let listed;
    try {
      listed = await this.#rest.list(collectionPath(k.plural), {
        apiVersion: CONFIG_API_VERSION,
        kind: k.kind,
        signal,
      });
    } catch (e) {
      if (isKubeStatus(e, 404)) {
        throw new PreconditionError(
          `the CustomResourceDefinition ${k.plural}.${CONFIG_GROUP} is not installed (kubectl apply -f deploy/crds/)`,
          { cause: e },
        );
      }
      throw e;
    }
    const docs = listed.items.map((o) => declaredDocumentOf(o, k.kind));
    docs.sort((a, b) => a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0);
    return { docs, rv: listed.resourceVersion };
  }
}

function hashesOf(docs: KubeObject[]): Map<string, string> {
  return new Map(docs.map((d) => [d.metadata.name, contentHash(d)]));
}

function sameHashes(a: Map<string, string>, b: Map<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}
