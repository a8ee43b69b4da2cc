/**
 * Applying a cluster's desired state to a real API server with server-side apply, remembering what
 * was applied in the cluster itself, and pruning what was applied before and is no longer desired.
 * @module
 */
import type { KubeConfig } from "@kubernetes/client-node";
import type { Clock } from "../clock.ts";
import { ConflictError, PreconditionError, ResourceExhaustedError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  type Applier,
  type KubeObject,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  type ObjectKey,
  objectKey,
  type ObjectStatus,
  resourceVersionOf,
} from "../state/mod.ts";
import {
  type ApiResource,
  ApiResources,
  KindNotServedError,
  resourcePath,
  splitApiVersion,
} from "./api_resources.ts";
import { appliedFieldsOf, extractFields, type ManagedFieldsEntry } from "./managed_fields.ts";
import { isKubeStatus, KubeApiError, KubeRest } from "./kube_rest.ts";

/** Field manager of every apply (server-side apply tracks field ownership under this name). */
export const FIELD_MANAGER = "meshrelay";
/** Annotation set on every applied object: where it came from (the `origin` option). */
export const ORIGIN_ANNOTATION = "meshrelay.io/origin";
/** Default name of the ConfigMap recording what the applier applied, in its own namespace. */
export const APPLIED_RECORD_NAME = "meshrelay-applied";
/** The record's data key. */
export const APPLIED_RECORD_KEY = "applied.json";
/** The record stays below the 1 MiB object limit with room for metadata. */
const RECORD_MAX_BYTES = 900 * 1024;

/** What the record holds for one applied object. */
export interface KubeAppliedRecord {
  /** Content hash of the desired object as received ("" while an apply is in flight). */
  version: string;
  /** REST path of the live object. */
  path: string;
}

interface RecordBody {
  format: 1;
  objects: Record<ObjectKey, KubeAppliedRecord>;
}

/** Options of {@linkcode KubeApplier}. */
export interface KubeApplierOptions {
  kubeConfig: KubeConfig;
  clock: Clock;
  log: Logger;
  /** Namespace holding the record (the agent's namespace). Must exist. */
  namespace: string;
  /** Name of the record ConfigMap. Default {@linkcode APPLIED_RECORD_NAME}. */
  recordName?: string;
  /** Server-side apply field manager. Default {@linkcode FIELD_MANAGER}. */
  fieldManager?: string;
  /** Value of {@linkcode ORIGIN_ANNOTATION} (e.g. the management server's address). Default "meshrelay". */
  origin?: string;
}

/** Kinds other objects live in or are defined by: applied first, pruned last. */
const FOUNDATION_KINDS = new Set(["Namespace", "CustomResourceDefinition"]);

/** Polls of 100 ms while waiting for a new CRD to be Established. */
const DEFAULT_ESTABLISH_POLLS = 100;

interface Planned {
  key: ObjectKey;
  object: KubeObject;
  resource: ApiResource;
  path: string;
  version: string;
  /** Live resourceVersion before applying; undefined when absent. */
  liveRv?: string;
}

/**
 * {@linkcode Applier} over a Kubernetes API server.
 *
 * - Each object is applied with server-side apply (`PATCH`, `application/apply-patch+yaml`, field
 *   manager `meshrelay`, `force=true`): meshrelay's declared state wins field conflicts with other
 *   managers (a `kubectl edit` of a field meshrelay sets is reverted on the next apply), while fields
 *   meshrelay does not set stay with whoever set them; fields meshrelay stops setting are removed.
 * - Every applied object gets label `app.kubernetes.io/managed-by=meshrelay` and annotation
 *   `meshrelay.io/origin`.
 * - An object that already exists without that label and that the applier did not apply before is
 *   never touched: that object's status is `failed` ("not managed by meshrelay").
 * - What was applied (key, content version, REST path) is recorded in a ConfigMap in the agent's
 *   namespace, written before the objects (so a crash never leaves an applied object unrecorded) and
 *   after (final versions). After a restart, objects recorded earlier and no longer desired are
 *   pruned — only if they still carry the managed-by label, with a uid precondition so a recreated
 *   object of the same name is not deleted; one that lost the label is released, not deleted.
 * - Unknown kinds (CRD not installed), missing namespaces, invalid objects and refusals give a
 *   `failed` status with the API server's message; the other objects still apply.
 * - One apply at a time per applier.
 */
export class KubeApplier implements Applier {
  readonly #rest: KubeRest;
  readonly #resources: ApiResources;
  readonly #log: Logger;
  readonly #ns: string;
  readonly #recordName: string;
  readonly #manager: string;
  readonly #origin: string;
  readonly #clock: Clock;
  readonly #establishPolls: number;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(opts: KubeApplierOptions) {
    this.#clock = opts.clock;
    this.#establishPolls = DEFAULT_ESTABLISH_POLLS;
    this.#rest = new KubeRest({ kubeConfig: opts.kubeConfig });
    this.#resources = new ApiResources(this.#rest);
    this.#log = opts.log.child({ component: "kube-applier" });
    this.#ns = opts.namespace;
    this.#recordName = opts.recordName ?? APPLIED_RECORD_NAME;
    this.#manager = opts.fieldManager ?? FIELD_MANAGER;
    this.#origin = opts.origin ?? "meshrelay";
  }

  apply(desired: KubeObject[], signal?: AbortSignal): Promise<ObjectStatus[]> {
    // Two interleaved runs would each prune what the other just applied.
    const run = this.#queue.then(() => this.#apply(desired, signal));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** What the record says was applied, by key. */
  async applied(signal?: AbortSignal): Promise<Map<ObjectKey, KubeAppliedRecord>> {
    return (await this.#loadRecord(signal)).objects;
  }

  /**
   * The recorded objects still in the cluster exactly as applied: each is read back, the fields
   * meshrelay's field manager owns are extracted from `managedFields` and hashed; only objects whose
   * hash equals the recorded version count (edited, relabelled or deleted ones are left out, so the
   * server sends them again).
   */
  async held(signal?: AbortSignal): Promise<Map<ObjectKey, { object: KubeObject; version: string }>> {
    const out = new Map<ObjectKey, { object: KubeObject; version: string }>();
    for (const [key, rec] of (await this.#loadRecord(signal)).objects) {
      if (rec.version === "") continue;
      let live: Record<string, unknown>;
      try {
        live = await this.#rest.request({ path: rec.path, signal });
      } catch (e) {
        if (isKubeStatus(e, 404)) continue;
        throw e;
      }
      const o = this.#appliedView(key, live);
      if (o && resourceVersionOf(o) === rec.version) out.set(key, { object: o, version: rec.version });
    }
    return out;
  }

  /** The object as meshrelay applied it, rebuilt from the fields its manager owns. */
  #appliedView(key: ObjectKey, live: Record<string, unknown>): KubeObject | undefined {
    const [apiVersion, kind, namespace, name] = key.split("|");
    const meta = (live.metadata ?? {}) as Record<string, unknown>;
    if ((meta.labels as Record<string, string> | undefined)?.[MANAGED_BY_LABEL] !== MANAGED_BY_VALUE) return;
    const fields = appliedFieldsOf(
      meta.managedFields as ManagedFieldsEntry[] | undefined,
      this.#manager,
      apiVersion,
    );
    if (!fields) return;
    const owned = extractFields(live, fields) as Record<string, unknown>;
    const ownedMeta = (owned.metadata ?? {}) as Record<string, unknown>;
    const ann = ownedMeta.annotations as Record<string, string> | undefined;
    if (ann) {
      delete ann[ORIGIN_ANNOTATION];
      if (Object.keys(ann).length === 0) delete ownedMeta.annotations;
    }
    const { metadata: _m, apiVersion: _a, kind: _k, ...rest } = owned;
    return {
      apiVersion,
      kind,
      metadata: { name, ...(namespace ? { namespace } : {}), ...ownedMeta },
      ...rest,
    };
  }

  async #apply(desired: KubeObject[], signal?: AbortSignal): Promise<ObjectStatus[]> {
    signal?.throwIfAborted();
    const loaded = await this.#loadRecord(signal);
    const before = loaded.objects;
    let rv = loaded.rv;
    const statuses = new Map<ObjectKey, ObjectStatus>();
    const fail = (key: ObjectKey, message: string) => statuses.set(key, { key, state: "failed", message });

    const wanted = new Map<ObjectKey, KubeObject>();
    for (const o of desired) wanted.set(objectKey(o), o);
    const keys = [...wanted.keys()].sort();
    // Namespaces and CRDs first: the other objects may live in or be defined by them.
    const phases = [keys.filter(isFoundation), keys.filter((k) => !isFoundation(k))];

    let record = new Map(before);
    /** What the ConfigMap holds now. */
    let written = before;
    for (const phase of phases) {
      const plan: Planned[] = [];
      for (const key of phase) {
        signal?.throwIfAborted();
        const p = await this.#plan(key, wanted.get(key)!, before.has(key), signal);
        if (typeof p === "string") fail(key, p);
        else plan.push(p);
      }
      // Record intent first: everything we may create is listed before it exists.
      const intent = new Map(record);
      for (const p of plan) intent.set(p.key, { version: record.get(p.key)?.version ?? "", path: p.path });
      if (!sameRecord(intent, written)) {
        rv = await this.#saveRecord(intent, rv, signal);
        written = new Map(intent);
      }
      record = intent;

      const crds: string[] = [];
      for (const p of plan) {
        signal?.throwIfAborted();
        try {
          const res = await this.#rest.request<{ metadata?: { resourceVersion?: string } }>({
            method: "PATCH",
            path: p.path,
            query: { fieldManager: this.#manager, force: true },
            body: this.#patchBody(p.object, p.resource),
            contentType: "application/apply-patch+yaml",
            signal,
          });
          record.set(p.key, { version: p.version, path: p.path });
          const message = p.liveRv === undefined
            ? "created"
            : res.metadata?.resourceVersion === p.liveRv
            ? "unchanged"
            : "updated";
          statuses.set(p.key, { key: p.key, state: "applied", message });
          if (p.object.kind === "CustomResourceDefinition" && message !== "unchanged") crds.push(p.path);
        } catch (e) {
          const prev = before.get(p.key);
          if (prev) record.set(p.key, prev);
          else record.delete(p.key);
          fail(p.key, apiText(e));
        }
      }
      if (crds.length > 0) {
        await this.#waitEstablished(crds, signal);
        this.#resources.invalidate();
      }
    }

    // Prune what we applied before and nobody wants now (dependents first, namespaces last).
    const identities = new Map([...wanted.keys()].map((k) => [identityOf(k), k]));
    const stale = [...before.keys()].filter((k) => !wanted.has(k));
    for (
      const key of [...stale.filter((k) => !isFoundation(k)).sort(), ...stale.filter(isFoundation).sort()]
    ) {
      signal?.throwIfAborted();
      const rec = before.get(key)!;
      const successor = identities.get(identityOf(key));
      if (successor !== undefined) {
        // Same object under another apiVersion: deleting the old name would delete the new one.
        record.delete(key);
        statuses.set(key, { key, state: "pruned", message: `now applied as ${successor}` });
        continue;
      }
      const r = await this.#prune(rec.path, signal);
      if (r.state === "failed") {
        fail(key, r.message);
        continue;
      }
      record.delete(key);
      statuses.set(key, { key, state: "pruned", ...(r.message ? { message: r.message } : {}) });
    }
    if (!sameRecord(record, written)) await this.#saveRecord(record, rv, signal);

    const out = [...statuses.values()].sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
    const counts = { applied: 0, pruned: 0, failed: 0 };
    for (const s of out) counts[s.state]++;
    this.#log.info("applied desired state", counts);
    return out;
  }

  /** Resolves an object's resource and checks that meshrelay may write it; a string is the reason not to. */
  async #plan(
    key: ObjectKey,
    o: KubeObject,
    recorded: boolean,
    signal?: AbortSignal,
  ): Promise<Planned | string> {
    const problem = invalid(o);
    if (problem) return problem;
    let resource: ApiResource;
    try {
      resource = await this.#resources.resolve(o.apiVersion, o.kind, signal);
    } catch (e) {
      return e instanceof KindNotServedError ? e.message : apiText(e);
    }
    const ns = o.metadata.namespace || undefined;
    if (resource.namespaced && !ns) return `${o.kind} is namespaced: metadata.namespace is required`;
    const path = resourcePath(resource, ns, o.metadata.name);
    let live: Record<string, unknown> | undefined;
    try {
      live = await this.#rest.request({ path, signal });
    } catch (e) {
      if (!isKubeStatus(e, 404)) return apiText(e);
    }
    const liveMeta = (live?.metadata ?? {}) as { labels?: Record<string, string>; resourceVersion?: string };
    if (live && liveMeta.labels?.[MANAGED_BY_LABEL] !== MANAGED_BY_VALUE && !recorded) {
      return `exists and is not managed by meshrelay (no label ${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}); left untouched`;
    }
    return {
      key,
      object: o,
      resource,
      path,
      version: resourceVersionOf(o),
      liveRv: liveMeta.resourceVersion,
    };
  }

  /** Waits (bounded) until freshly applied CRDs serve their kinds, so their objects apply in the same run. */
  async #waitEstablished(paths: string[], signal?: AbortSignal): Promise<void> {
    for (const path of paths) {
      for (let i = 0; i < this.#establishPolls; i++) {
        try {
          const crd = await this.#rest.request<
            { status?: { conditions?: { type: string; status: string }[] } }
          >({
            path,
            signal,
          });
          if (crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True")) break;
        } catch (e) {
          if (signal?.aborted) throw signal.reason;
          this.#log.debug("waiting for CRD", { path, error: apiText(e) });
        }
        await this.#clock.sleep(100, signal);
      }
    }
  }

  async #prune(
    path: string,
    signal?: AbortSignal,
  ): Promise<{ state: "pruned"; message?: string } | { state: "failed"; message: string }> {
    let live: { metadata?: { uid?: string; labels?: Record<string, string> } };
    try {
      live = await this.#rest.request({ path, signal });
    } catch (e) {
      if (isKubeStatus(e, 404)) return { state: "pruned", message: "already gone" };
      return { state: "failed", message: `prune: ${apiText(e)}` };
    }
    if (live.metadata?.labels?.[MANAGED_BY_LABEL] !== MANAGED_BY_VALUE) {
      return {
        state: "pruned",
        message:
          `not deleted: it no longer carries ${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}; meshrelay released it`,
      };
    }
    try {
      await this.#rest.request({
        method: "DELETE",
        path,
        body: {
          apiVersion: "v1",
          kind: "DeleteOptions",
          propagationPolicy: "Background",
          preconditions: { uid: live.metadata?.uid },
        },
        signal,
      });
      return { state: "pruned" };
    } catch (e) {
      if (isKubeStatus(e, 404)) return { state: "pruned", message: "already gone" };
      return { state: "failed", message: `prune: ${apiText(e)}` };
    }
  }

  #patchBody(o: KubeObject, r: ApiResource): KubeObject {
    const c = structuredClone(o);
    if (!r.namespaced) delete c.metadata.namespace;
    c.metadata.labels = { ...(c.metadata.labels ?? {}), [MANAGED_BY_LABEL]: MANAGED_BY_VALUE };
    c.metadata.annotations = { ...(c.metadata.annotations ?? {}), [ORIGIN_ANNOTATION]: this.#origin };
    return c;
  }

  get #recordPath(): string {
    return `/api/v1/namespaces/${encodeURIComponent(this.#ns)}/configmaps/${
      encodeURIComponent(this.#recordName)
    }`;
  }

  async #loadRecord(
    signal?: AbortSignal,
  ): Promise<{ objects: Map<ObjectKey, KubeAppliedRecord>; rv?: string }> {
    let cm: { data?: Record<string, string>; metadata?: { resourceVersion?: string } };
    try {
      cm = await this.#rest.request({ path: this.#recordPath, signal });
    } catch (e) {
      if (isKubeStatus(e, 404)) return { objects: new Map() };
      throw e;
    }
    const rv = cm.metadata?.resourceVersion;
    try {
      const parsed = JSON.parse(cm.data?.[APPLIED_RECORD_KEY] ?? "") as RecordBody;
      if (parsed?.format !== 1 || typeof parsed.objects !== "object" || parsed.objects === null) {
        throw new Error("unknown format");
      }
      const objects = new Map<ObjectKey, KubeAppliedRecord>();
      for (const [k, r] of Object.entries(parsed.objects)) {
        if (typeof r?.version !== "string" || typeof r.path !== "string" || !r.path.startsWith("/api")) {
          throw new Error(`bad entry for ${k}`);
        }
        objects.set(k, { version: r.version, path: r.path });
      }
      return { objects, rv };
    } catch (e) {
      // Without the record we cannot tell what we applied: prune nothing until it is rewritten.
      this.#log.warn("applied record unreadable; nothing will be pruned until it is rewritten", {
        configMap: `${this.#ns}/${this.#recordName}`,
        error: e instanceof Error ? e.message : String(e),
      });
      return { objects: new Map(), rv };
    }
  }

  /** Writes the record (create, or update guarded by resourceVersion); returns the new resourceVersion. */
  async #saveRecord(
    objects: Map<ObjectKey, KubeAppliedRecord>,
    rv: string | undefined,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const body: RecordBody = { format: 1, objects: {} };
    for (const k of [...objects.keys()].sort()) body.objects[k] = objects.get(k)!;
    const text = JSON.stringify(body, null, 1);
    if (text.length > RECORD_MAX_BYTES) {
      throw new ResourceExhaustedError(
        `the applied record ${this.#ns}/${this.#recordName} would exceed ${RECORD_MAX_BYTES} bytes (${objects.size} objects)`,
      );
    }
    const cm = {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: {
        name: this.#recordName,
        namespace: this.#ns,
        ...(rv ? { resourceVersion: rv } : {}),
        labels: { "app.kubernetes.io/name": "meshrelay", "app.kubernetes.io/component": "applied-record" },
      },
      data: { [APPLIED_RECORD_KEY]: text },
    };
    try {
      const res = await this.#rest.request<{ metadata?: { resourceVersion?: string } }>(
        rv ? { method: "PUT", path: this.#recordPath, body: cm, signal } : {
          method: "POST",
          path: `/api/v1/namespaces/${encodeURIComponent(this.#ns)}/configmaps`,
          body: cm,
          signal,
        },
      );
      return res.metadata?.resourceVersion;
    } catch (e) {
      if (isKubeStatus(e, 409)) {
        throw new ConflictError(
          `the applied record ${this.#ns}/${this.#recordName} was changed by someone else (two agents for one cluster?)`,
          { cause: e },
        );
      }
      if (isKubeStatus(e, 404)) {
        throw new PreconditionError(
          `namespace ${this.#ns} does not exist: it holds meshrelay's applied record`,
          {
            cause: e,
          },
        );
      }
      throw e;
    }
  }
}

function invalid(o: KubeObject): string | undefined {
  if (typeof o.apiVersion !== "string" || !/^([a-z0-9.-]+\/)?v[a-z0-9]+$/.test(o.apiVersion)) {
    return `apiVersion ${JSON.stringify(o.apiVersion)} is not valid`;
  }
  if (typeof o.kind !== "string" || !/^[A-Za-z][A-Za-z0-9]*$/.test(o.kind)) {
    return `kind ${JSON.stringify(o.kind)} is not valid`;
  }
  if (typeof o.metadata?.name !== "string" || o.metadata.name === "" || o.metadata.name.includes("/")) {
    return `metadata.name ${JSON.stringify(o.metadata?.name)} is not valid`;
  }
  return undefined;
}

/** `group|kind|namespace|name`: one stored object whatever apiVersion it is read at. */
function identityOf(key: ObjectKey): string {
  const [apiVersion, kind, ns, name] = key.split("|");
  return `${splitApiVersion(apiVersion)[0]}|${kind}|${ns}|${name}`;
}

function isFoundation(key: ObjectKey): boolean {
  return FOUNDATION_KINDS.has(key.split("|")[1]);
}

function sameRecord(a: Map<ObjectKey, KubeAppliedRecord>, b: Map<ObjectKey, KubeAppliedRecord>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, r] of a) {
    const o = b.get(k);
    if (!o || o.version !== r.version || o.path !== r.path) return false;
  }
  return true;
}

function apiText(e: unknown): string {
  if (e instanceof KubeApiError) return e.apiMessage;
  return e instanceof Error ? e.message : String(e);
}
