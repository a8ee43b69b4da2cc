/**
 * Resolving `apiVersion` + `kind` to a REST resource (plural name, scope) through the API server's
 * discovery documents, the way kubectl does, so arbitrary kinds (CRDs included) can be read, applied
 * and deleted without a table compiled into the program.
 * @module
 */
import { NotFoundError } from "../errors.ts";
import { isKubeStatus, type KubeRest } from "./kube_rest.ts";

/** A resolved REST resource. */
export interface ApiResource {
  /** `v1`, `apps/v1`, `meshrelay.io/v1alpha1`. */
  apiVersion: string;
  kind: string;
  /** Plural resource name used in paths, e.g. `deployments`. */
  plural: string;
  namespaced: boolean;
  verbs: string[];
}

/** The kind is not served by the API server (group/version absent or kind absent in it). */
export class KindNotServedError extends NotFoundError {
  readonly apiVersion: string;
  readonly kind: string;
  constructor(apiVersion: string, kind: string, groupServed: boolean) {
    const [group, version] = splitApiVersion(apiVersion);
    super(
      groupServed
        ? `no kind ${kind} in group ${
          group || "core"
        } version ${version} (is its CustomResourceDefinition installed?)`
        : `no kind ${kind} in group ${
          group || "core"
        }: API ${apiVersion} is not served (is its CustomResourceDefinition installed?)`,
    );
    this.apiVersion = apiVersion;
    this.kind = kind;
  }
}

/** `[group, version]` of an apiVersion; the core group is "". */
export function splitApiVersion(apiVersion: string): [string, string] {
  const i = apiVersion.indexOf("/");
  return i < 0 ? ["", apiVersion] : [apiVersion.slice(0, i), apiVersion.slice(i + 1)];
}

/** The path of a group version: `/api/v1` or `/apis/<group>/<version>`. */
export function groupVersionPath(apiVersion: string): string {
  return apiVersion.includes("/") ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
}

/**
 * The REST path of a collection (no `name`) or of one object. A namespaced resource without a
 * namespace gives the all-namespaces collection; a cluster-scoped one ignores `namespace`.
 */
export function resourcePath(r: ApiResource, namespace?: string, name?: string): string {
  let p = groupVersionPath(r.apiVersion);
  if (r.namespaced && namespace) p += `/namespaces/${encodeURIComponent(namespace)}`;
  p += `/${r.plural}`;
  if (name !== undefined) p += `/${encodeURIComponent(name)}`;
  return p;
}

interface Cached {
  /** undefined: the group version is not served. */
  byKind?: Map<string, ApiResource>;
}

/**
 * Cache of discovery documents per group version. A kind not found is looked up again on the next
 * call (a CRD may have been installed meanwhile); found kinds are served from the cache until
 * {@linkcode ApiResources.invalidate}.
 */
export class ApiResources {
  readonly #rest: KubeRest;
  readonly #cache = new Map<string, Cached>();

  constructor(rest: KubeRest) {
    this.#rest = rest;
  }

  /** Resolves a kind; throws {@linkcode KindNotServedError} when the server does not serve it. */
  async resolve(apiVersion: string, kind: string, signal?: AbortSignal): Promise<ApiResource> {
    const hit = this.#cache.get(apiVersion)?.byKind?.get(kind);
    if (hit) return hit;
    const fresh = await this.#fetch(apiVersion, signal);
    const r = fresh.byKind?.get(kind);
    if (!r) throw new KindNotServedError(apiVersion, kind, fresh.byKind !== undefined);
    return r;
  }

  /** Like {@linkcode resolve} but `undefined` when the kind is not served. */
  async tryResolve(apiVersion: string, kind: string, signal?: AbortSignal): Promise<ApiResource | undefined> {
    try {
      return await this.resolve(apiVersion, kind, signal);
    } catch (e) {
      if (e instanceof KindNotServedError) return undefined;
      throw e;
    }
  }

  /** Forgets every cached document (e.g. after CRDs changed). */
  invalidate(): void {
    this.#cache.clear();
  }

  async #fetch(apiVersion: string, signal?: AbortSignal): Promise<Cached> {
    let doc: { resources?: { name: string; kind: string; namespaced: boolean; verbs?: string[] }[] };
    try {
      doc = await this.#rest.request({ path: groupVersionPath(apiVersion), signal });
    } catch (e) {
      if (isKubeStatus(e, 404)) {
        const c: Cached = {};
        this.#cache.set(apiVersion, c);
        return c;
      }
      throw e;
    }
    const byKind = new Map<string, ApiResource>();
    for (const r of doc.resources ?? []) {
      // Subresources (`deployments/scale`) share the kind of something else; skip them.
      if (r.name.includes("/")) continue;
      byKind.set(r.kind, {
        apiVersion,
        kind: r.kind,
        plural: r.name,
        namespaced: r.namespaced,
        verbs: r.verbs ?? [],
      });
    }
    const c = { byKind };
    this.#cache.set(apiVersion, c);
    return c;
  }
}
