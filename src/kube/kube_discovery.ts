/**
 * Agent discovery from a real cluster: lists and watches a configurable set of kinds (namespaces,
 * Services, workloads, Istio installations by default), keeps only trimmed objects, and reports
 * changes as upserts and deletes by object key.
 * @module
 */
import type { KubeConfig } from "@kubernetes/client-node";
import type { Clock } from "../clock.ts";
import { InvalidInputError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  type DiscoveryEvent,
  type DiscoverySource,
  type KubeObject,
  type ObjectKey,
  objectKey,
  resourceVersionOf,
} from "../state/mod.ts";
import { type ApiResource, ApiResources, resourcePath } from "./api_resources.ts";
import { KubeRest } from "./kube_rest.ts";
import { mergeAsync, watchCollection } from "./kube_watch.ts";
import { trimObject } from "./trim.ts";

/**
 * What agents discover by default: namespaces, Services, the workload kinds, and Istio's operator
 * resource when its CRD is installed (istiod itself is a Deployment, usually in `istio-system`).
 */
export const DEFAULT_DISCOVERY_KINDS: readonly string[] = [
  "v1/Namespace",
  "v1/Service",
  "apps/v1/Deployment",
  "apps/v1/StatefulSet",
  "apps/v1/DaemonSet",
  "install.istio.io/v1alpha1/IstioOperator",
];

const BUILTIN_API_VERSION: Record<string, string> = {
  Namespace: "v1",
  Service: "v1",
  ConfigMap: "v1",
  Secret: "v1",
  ServiceAccount: "v1",
  Pod: "v1",
  Endpoints: "v1",
  Node: "v1",
  Deployment: "apps/v1",
  StatefulSet: "apps/v1",
  DaemonSet: "apps/v1",
  ReplicaSet: "apps/v1",
  IstioOperator: "install.istio.io/v1alpha1",
};

/** A kind to discover. */
export interface DiscoveryKind {
  apiVersion: string;
  kind: string;
}

/**
 * Parses a kinds list: `apps/v1/Deployment`, `v1/Service`, or a bare well-known kind (`Service`,
 * `Deployment`, …). Duplicates are dropped.
 */
export function parseDiscoveryKinds(specs: readonly string[]): DiscoveryKind[] {
  const out: DiscoveryKind[] = [];
  const seen = new Set<string>();
  for (const s of specs) {
    const i = s.lastIndexOf("/");
    const kind = i < 0 ? s : s.slice(i + 1);
    const apiVersion = i < 0 ? BUILTIN_API_VERSION[s] : s.slice(0, i);
    if (
      !/^[A-Z][A-Za-z0-9]*$/.test(kind) || !apiVersion || !/^([a-z0-9.-]+\/)?v[a-z0-9]+$/.test(apiVersion)
    ) {
      throw new InvalidInputError(
        `discovery kind ${JSON.stringify(s)} is not valid: write apiVersion/Kind, e.g. apps/v1/Deployment`,
      );
    }
    const id = `${apiVersion}/${kind}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push({ apiVersion, kind });
  }
  return out;
}

/** Options of {@linkcode KubeDiscoverySource}. */
export interface KubeDiscoveryOptions {
  kubeConfig: KubeConfig;
  clock: Clock;
  log: Logger;
  /** Kinds to discover (see {@linkcode parseDiscoveryKinds}). Default {@linkcode DEFAULT_DISCOVERY_KINDS}. */
  kinds?: readonly string[];
  /** Kinds whose `status` is kept (see trimObject). */
  statusKinds?: readonly string[];
  /** How often kinds the server does not serve (CRD absent) are looked up again. Default 60,000 ms. */
  absentKindRecheckMs?: number;
  /** Server-side length of one watch connection. Default 300 s. */
  watchTimeoutSeconds?: number;
  /** List page size. Default 500. */
  pageSize?: number;
  /** Randomness for retry backoff. Default Math.random. */
  random?: () => number;
}

interface Known {
  kindId: string;
  object: KubeObject;
  version: string;
}

interface KindState {
  kind: DiscoveryKind;
  id: string;
  /** undefined: not served. */
  resource?: ApiResource;
  /** Version to watch from; undefined when not served. */
  rv?: string;
}

interface Listed {
  resource?: ApiResource;
  rv?: string;
  objects: KubeObject[];
}

type StreamItem =
  | { kindId: string; type: "ADDED" | "MODIFIED" | "DELETED"; object: Record<string, unknown>; rv: string }
  | { kindId: string; type: "BOOKMARK"; rv: string }
  | { kindId: string; type: "EXPIRED"; message: string }
  | { kindId: string; type: "RELISTED"; objects: KubeObject[]; resource?: ApiResource; rv?: string };

/**
 * {@linkcode DiscoverySource} over a Kubernetes API server.
 *
 * - `snapshot()` lists every kind (paginated) and returns the trimmed objects sorted by key. A kind
 *   the server does not serve (e.g. IstioOperator without Istio's CRDs) is skipped, not an error,
 *   and looked up again every `absentKindRecheckMs` while watching.
 * - `watch()` watches every kind from the versions of the last snapshot (taking one silently if
 *   there was none) with bookmarks, and yields upserts only when an object's trimmed content
 *   changed, deletes for objects it knew. When a watch expires (410 Gone) it yields
 *   `{type: "resync"}`; a caller that then takes a new `snapshot()` gets the complete state and
 *   the watch continues from it; a caller that keeps iterating instead receives the differences
 *   found by re-listing the expired kind. Either way nothing is lost or duplicated.
 * - Memory: only the trimmed objects and one version per kind are kept; watch streams are merged
 *   with one pending event per kind, so a slow consumer slows the streams instead of buffering.
 */
export class KubeDiscoverySource implements DiscoverySource {
  readonly #rest: KubeRest;
  readonly #resources: ApiResources;
  readonly #opts: KubeDiscoveryOptions;
  readonly #log: Logger;
  readonly #kinds: DiscoveryKind[];
  #known?: Map<ObjectKey, Known>;
  #states = new Map<string, KindState>();
  /** Grows with every snapshot, so a running watch notices it and restarts from the new versions. */
  #epoch = 0;
  /** Stops the running watch's streams when a snapshot replaces the state they watch from. */
  #epochCtl?: AbortController;

  constructor(opts: KubeDiscoveryOptions) {
    this.#opts = opts;
    this.#kinds = parseDiscoveryKinds(opts.kinds ?? DEFAULT_DISCOVERY_KINDS);
    this.#rest = new KubeRest({ kubeConfig: opts.kubeConfig });
    this.#resources = new ApiResources(this.#rest);
    this.#log = opts.log.child({ component: "kube-discovery" });
  }

  /** The kinds this source discovers, as `apiVersion/Kind`. */
  get kinds(): string[] {
    return this.#kinds.map((k) => `${k.apiVersion}/${k.kind}`);
  }

  /** Kinds the server served at the last list, as `apiVersion/Kind`. */
  get servedKinds(): string[] {
    return [...this.#states.values()].filter((s) => s.resource).map((s) => s.id);
  }

  async snapshot(signal?: AbortSignal): Promise<KubeObject[]> {
    const known = new Map<ObjectKey, Known>();
    const states = new Map<string, KindState>();
    for (const kind of this.#kinds) {
      const id = `${kind.apiVersion}/${kind.kind}`;
      const listed = await this.#listKind(kind, signal);
      states.set(id, { kind, id, resource: listed.resource, rv: listed.rv });
      for (const o of listed.objects) {
        known.set(objectKey(o), { kindId: id, object: o, version: resourceVersionOf(o) });
      }
    }
    this.#known = known;
    this.#states = states;
    this.#epoch++;
    this.#epochCtl?.abort();
    return [...known.entries()].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([, k]) =>
      structuredClone(k.object)
    );
  }

  async *watch(signal: AbortSignal): AsyncIterable<DiscoveryEvent | { type: "resync" }> {
    if (!this.#known) await this.snapshot(signal);
    while (!signal.aborted) {
      const epoch = this.#epoch;
      const ctl = new AbortController();
      this.#epochCtl = ctl;
      const streamSignal = AbortSignal.any([signal, ctl.signal]);
      const streams = [...this.#states.values()].map((s) => this.#kindStream({ ...s }, streamSignal));
      try {
        for await (const item of mergeAsync(streams)) {
          if (this.#epoch !== epoch) break;
          const state = this.#states.get(item.kindId)!;
          switch (item.type) {
            case "BOOKMARK":
              state.rv = item.rv;
              break;
            case "ADDED":
            case "MODIFIED": {
              state.rv = item.rv;
              const o = this.#trim(item.object, state.kind);
              const key = objectKey(o);
              const version = resourceVersionOf(o);
              const before = this.#known!.get(key);
              if (before?.version === version) break;
              this.#known!.set(key, { kindId: item.kindId, object: o, version });
              yield { type: "upsert", object: structuredClone(o) };
              break;
            }
            case "DELETED": {
              state.rv = item.rv;
              const key = objectKey(this.#trim(item.object, state.kind));
              if (!this.#known!.delete(key)) break;
              yield { type: "delete", key };
              break;
            }
            case "EXPIRED":
              this.#log.info("watch expired; asking for a resync", {
                kind: item.kindId,
                reason: item.message,
              });
              yield { type: "resync" };
              break;
            case "RELISTED": {
              state.resource = item.resource;
              state.rv = item.rv;
              for (const ev of this.#replaceKind(item.kindId, item.objects)) yield ev;
              break;
            }
          }
        }
      } finally {
        ctl.abort();
      }
    }
  }

  /** Differences between what is known of one kind and a fresh list of it; updates what is known. */
  #replaceKind(kindId: string, objects: KubeObject[]): DiscoveryEvent[] {
    const known = this.#known!;
    const next = new Map<ObjectKey, Known>();
    for (const o of objects) next.set(objectKey(o), { kindId, object: o, version: resourceVersionOf(o) });
    const events: DiscoveryEvent[] = [];
    for (
      const [key, k] of [...known].filter(([, k]) => k.kindId === kindId).sort(([a], [b]) => a < b ? -1 : 1)
    ) {
      if (!next.has(key)) {
        known.delete(key);
        events.push({ type: "delete", key });
      } else if (next.get(key)!.version === k.version) next.delete(key);
    }
    for (const [key, k] of [...next].sort(([a], [b]) => a < b ? -1 : 1)) {
      known.set(key, k);
      events.push({ type: "upsert", object: structuredClone(k.object) });
    }
    return events;
  }

  /** One kind's events: its watch, then after expiry (or once an absent kind appears) a fresh list. */
  async *#kindStream(start: KindState, signal: AbortSignal): AsyncGenerator<StreamItem> {
    const id = start.id;
    const recheckMs = this.#opts.absentKindRecheckMs ?? 60_000;
    let { resource, rv } = start;
    // Whether the consumer may hold objects of this kind (so a vanished kind must be reported).
    let served = resource !== undefined;
    let failures = 0;
    while (!signal.aborted) {
      if (resource && rv !== undefined) {
        let expired = false;
        const watch = watchCollection(
          {
            path: resourcePath(resource),
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
          if (it.type === "EXPIRED") {
            expired = true;
            yield { kindId: id, type: "EXPIRED", message: it.message };
          } else if (it.type === "BOOKMARK") {
            yield { kindId: id, type: "BOOKMARK", rv: it.resourceVersion };
          } else {
            yield { kindId: id, type: it.type, object: it.object, rv: it.resourceVersion };
          }
        }
        if (!expired) return; // aborted
        // The collection may be gone (CRD deleted) or served differently now.
        this.#resources.invalidate();
      } else {
        const wait = failures === 0 ? recheckMs : Math.min(recheckMs, 1000 * 2 ** Math.min(failures, 6));
        try {
          await this.#opts.clock.sleep(wait, signal);
        } catch {
          return;
        }
      }
      let listed: Listed;
      try {
        listed = await this.#listKind(start.kind, signal);
        failures = 0;
      } catch (e) {
        if (signal.aborted) return;
        // Keep the last known state; try again after a pause.
        failures++;
        this.#log.warn("relist failed; will retry", { kind: id, error: errorText(e) });
        resource = undefined;
        rv = undefined;
        continue;
      }
      resource = listed.resource;
      rv = listed.rv;
      if (!resource && !served) continue; // still not served: nothing to report
      served = resource !== undefined;
      yield { kindId: id, type: "RELISTED", objects: listed.objects, resource, rv };
    }
  }

  async #listKind(kind: DiscoveryKind, signal?: AbortSignal): Promise<Listed> {
    const resource = await this.#resources.tryResolve(kind.apiVersion, kind.kind, signal);
    if (!resource) {
      this.#log.debug("kind not served; skipped", { kind: `${kind.apiVersion}/${kind.kind}` });
      return { objects: [] };
    }
    const r = await this.#rest.list(resourcePath(resource), {
      apiVersion: kind.apiVersion,
      kind: kind.kind,
      pageSize: this.#opts.pageSize,
      signal,
    });
    return { resource, rv: r.resourceVersion, objects: r.items.map((o) => this.#trim(o, kind)) };
  }

  #trim(o: Record<string, unknown>, kind: DiscoveryKind): KubeObject {
    // Watch events of some servers omit apiVersion/kind on typed objects; the kind we asked for is the truth.
    return trimObject({ ...o, apiVersion: kind.apiVersion, kind: kind.kind }, {
      statusKinds: this.#opts.statusKinds,
    });
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
