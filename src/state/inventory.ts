/**
 * What the server knows a cluster holds: key → object and resource version. Fed by an agent's
 * snapshot and deltas; re-sent items (a retried chunk, a delta replayed after reconnect) change nothing.
 * @module
 */
import { canonicalJson, contentHash, hashOfCanonical, type ResourceVersion } from "./canonical.ts";
import { type DiscoveryEvent, type KubeObject, type ObjectKey, objectKey } from "./types.ts";

/** One object and its version. */
export interface VersionedObject {
  object: KubeObject;
  version: ResourceVersion;
}

/** Keys that an operation really changed (nothing for re-sent, identical content). */
export interface InventoryChange {
  upserts: ObjectKey[];
  deletes: ObjectKey[];
}

/** Read access to a cluster's discovered objects (what desired-state computation needs). */
export interface InventoryView {
  /** Objects sorted by key. */
  objects(): KubeObject[];
}

/** How an object is kept: its canonical JSON (the copy), and the version hashed from it. */
interface Stored {
  json: string;
  version: ResourceVersion;
}

function store(o: KubeObject): Stored {
  const json = canonicalJson(o);
  return { json, version: hashOfCanonical(json) };
}

/**
 * A per-cluster map key → {object, version}; the version is the content hash both sides compute.
 * Objects are kept as their canonical JSON, not as object trees: a server holds every cluster's
 * inventory, and a parsed Deployment takes several times its JSON in heap. Reads parse a fresh copy.
 */
export class Inventory implements InventoryView {
  #items = new Map<ObjectKey, Stored>();

  /** Replaces everything with `objects` (duplicates of a key: the last one counts). */
  applySnapshot(objects: readonly KubeObject[]): InventoryChange {
    const next = new Map<ObjectKey, Stored>();
    for (const o of objects) next.set(objectKey(o), store(o));
    const change: InventoryChange = { upserts: [], deletes: [] };
    for (const [k, v] of next) if (this.#items.get(k)?.version !== v.version) change.upserts.push(k);
    for (const k of this.#items.keys()) if (!next.has(k)) change.deletes.push(k);
    this.#items = next;
    change.upserts.sort();
    change.deletes.sort();
    return change;
  }

  /** Applies deltas in order; returns the keys whose content really changed. */
  applyDeltas(events: readonly DiscoveryEvent[]): InventoryChange {
    const touched = new Map<ObjectKey, ResourceVersion | undefined>();
    for (const ev of events) {
      const key = ev.type === "upsert" ? objectKey(ev.object) : ev.key;
      if (!touched.has(key)) touched.set(key, this.#items.get(key)?.version);
      if (ev.type === "upsert") {
        this.#items.set(key, store(ev.object));
      } else {
        this.#items.delete(key);
      }
    }
    const change: InventoryChange = { upserts: [], deletes: [] };
    for (const [key, before] of [...touched].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
      const after = this.#items.get(key)?.version;
      if (after === before) continue;
      if (after === undefined) change.deletes.push(key);
      else change.upserts.push(key);
    }
    return change;
  }

  /** Applies a {@linkcode diffByVersion} result computed against this inventory's versions. */
  applyDiff(
    diff: { upserts: readonly { object: KubeObject }[]; deletes: readonly ObjectKey[] },
  ): InventoryChange {
    return this.applyDeltas([
      ...diff.deletes.map((key) => ({ type: "delete" as const, key })),
      ...diff.upserts.map((u) => ({ type: "upsert" as const, object: u.object })),
    ]);
  }

  /** The entry for `key`, as a copy. */
  get(key: ObjectKey): VersionedObject | undefined {
    const v = this.#items.get(key);
    return v && { object: JSON.parse(v.json), version: v.version };
  }

  /** Number of objects. */
  get size(): number {
    return this.#items.size;
  }

  /** key → version, for resync by difference. */
  versions(): Map<ObjectKey, ResourceVersion> {
    return new Map([...this.#items].map(([k, v]) => [k, v.version]));
  }

  /** key → {object, version} (copies), sorted by key. */
  entries(): Map<ObjectKey, VersionedObject> {
    return new Map(
      [...this.#items.keys()].sort().map((k) => [k, this.get(k)!]),
    );
  }

  objects(): KubeObject[] {
    return [...this.#items.keys()].sort().map((k) => JSON.parse(this.#items.get(k)!.json));
  }

  /** One hash over every key and version: equal on both sides when they agree. */
  digest(): string {
    return contentHash([...this.#items.keys()].sort().map((k) => [k, this.#items.get(k)!.version]));
  }
}
