/**
 * What the server knows a cluster holds: key → object and resource version. Fed by an agent's
 * snapshot and deltas; re-sent items (a retried chunk, a delta replayed after reconnect) change nothing.
 * @module
 */
import {
  canonicalJson,
  contentHash,
  hashOfCanonical,
  type ResourceVersion,
  resourceVersionOf,
} from "./canonical.ts";
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
  /** Objects whose content is kept, sorted by key. */
  objects(): KubeObject[];
}

/** Options of {@linkcode Inventory}. */
export interface InventoryOptions {
  /**
   * Whether the content of the object under `key` is kept, or only its version. Default: every
   * object's. A server passes the kinds its desired-state computation reads: the rest is needed only
   * for resync by difference, and their content would be most of the memory of every inventory held.
   */
  keepContent?: (key: ObjectKey) => boolean;
}

/** How an object is kept: its canonical JSON (the copy) and the version hashed from it. */
interface Stored {
  json: string;
  version: ResourceVersion;
}

/** A stored object, or only its version when its content is not kept. */
type Entry = Stored | ResourceVersion;

const versionOfEntry = (e: Entry | undefined): ResourceVersion | undefined =>
  typeof e === "string" ? e : e?.version;

/**
 * A per-cluster map key → {object, version}; the version is the content hash both sides compute.
 * Objects are kept as their canonical JSON, not as object trees: a server holds every cluster's
 * inventory, and a parsed Deployment takes several times its JSON in heap. Reads parse a fresh copy.
 * Objects outside `keepContent` are kept as their version only.
 */
export class Inventory implements InventoryView {
  #items = new Map<ObjectKey, Entry>();
  #keep: (key: ObjectKey) => boolean;

  constructor(opts: InventoryOptions = {}) {
    this.#keep = opts.keepContent ?? (() => true);
  }

  /** `version`, when given, is the object's content hash computed already (no second hash). */
  #store(key: ObjectKey, o: KubeObject, version?: ResourceVersion): Entry {
    if (!this.#keep(key)) return version ?? resourceVersionOf(o);
    const json = canonicalJson(o);
    return { json, version: version ?? hashOfCanonical(json) };
  }

  /** Replaces everything with `objects` (duplicates of a key: the last one counts). */
  applySnapshot(objects: readonly KubeObject[]): InventoryChange {
    const next = new Map<ObjectKey, Entry>();
    for (const o of objects) {
      const k = objectKey(o);
      next.set(k, this.#store(k, o));
    }
    const change: InventoryChange = { upserts: [], deletes: [] };
    for (const [k, v] of next) {
      if (versionOfEntry(this.#items.get(k)) !== versionOfEntry(v)) change.upserts.push(k);
    }
    for (const k of this.#items.keys()) if (!next.has(k)) change.deletes.push(k);
    this.#items = next;
    change.upserts.sort();
    change.deletes.sort();
    return change;
  }

  /** Applies deltas in order; returns the keys whose content really changed. */
  applyDeltas(events: readonly DiscoveryEvent[]): InventoryChange {
    return this.#apply(events.map((ev) => {
      if (ev.type === "delete") return { key: ev.key, entry: undefined };
      const key = objectKey(ev.object);
      return { key, entry: this.#store(key, ev.object) };
    }));
  }

  /**
   * Applies a {@linkcode diffByVersion} result computed against this inventory's versions; each upsert's
   * version is its object's content hash (as diffByVersion and the wire's assemblers give it), so it is
   * not hashed again. An upsert without its object sets the version alone, which only a key outside
   * `keepContent` may have.
   */
  applyDiff(diff: {
    upserts: readonly { key: ObjectKey; version: ResourceVersion; object?: KubeObject }[];
    deletes: readonly ObjectKey[];
  }): InventoryChange {
    return this.#apply([
      ...diff.deletes.map((key) => ({ key, entry: undefined })),
      ...diff.upserts.map((u) => {
        if (u.object) return { key: u.key, entry: this.#store(u.key, u.object, u.version) };
        if (this.#keep(u.key)) {
          throw new Error(`inventory: ${u.key} keeps its content, got its version alone`);
        }
        return { key: u.key, entry: u.version };
      }),
    ]);
  }

  /** Sets (or, with no entry, deletes) keys in order; returns the keys whose version really changed. */
  #apply(ops: readonly { key: ObjectKey; entry: Entry | undefined }[]): InventoryChange {
    const touched = new Map<ObjectKey, ResourceVersion | undefined>();
    for (const { key, entry } of ops) {
      if (!touched.has(key)) touched.set(key, versionOfEntry(this.#items.get(key)));
      if (entry === undefined) this.#items.delete(key);
      else this.#items.set(key, entry);
    }
    const change: InventoryChange = { upserts: [], deletes: [] };
    for (const [key, before] of [...touched].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
      const after = versionOfEntry(this.#items.get(key));
      if (after === before) continue;
      if (after === undefined) change.deletes.push(key);
      else change.upserts.push(key);
    }
    return change;
  }

  /** The entry for `key`, as a copy; undefined when absent or when only its version is kept. */
  get(key: ObjectKey): VersionedObject | undefined {
    const v = this.#items.get(key);
    return typeof v === "object" ? { object: JSON.parse(v.json), version: v.version } : undefined;
  }

  /** Number of objects (whether their content is kept or not). */
  get size(): number {
    return this.#items.size;
  }

  /** key → version of every object, for resync by difference. */
  versions(): Map<ObjectKey, ResourceVersion> {
    return new Map([...this.#items].map(([k, v]) => [k, versionOfEntry(v)!]));
  }

  /** key → {object, version} (copies) of the objects whose content is kept, sorted by key. */
  entries(): Map<ObjectKey, VersionedObject> {
    return new Map(this.#kept().map(([k, v]) => [k, { object: JSON.parse(v.json), version: v.version }]));
  }

  objects(): KubeObject[] {
    return this.#kept().map(([, v]) => JSON.parse(v.json));
  }

  /** The entries whose content is kept, sorted by key (only those: most are versions, and recomputes call this). */
  #kept(): [ObjectKey, Stored][] {
    const kept: [ObjectKey, Stored][] = [];
    for (const [k, v] of this.#items) if (typeof v === "object") kept.push([k, v]);
    return kept.sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
  }

  /** One hash over every key and version: equal on both sides when they agree. */
  digest(): string {
    return contentHash([...this.#items.keys()].sort().map((k) => [k, versionOfEntry(this.#items.get(k))]));
  }
}
