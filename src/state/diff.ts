/**
 * Resync by difference: what to send so that a peer holding `have` ends up holding `want`.
 * @module
 */
import { type ResourceVersion, resourceVersionOf } from "./canonical.ts";
import type { VersionedObject } from "./inventory.ts";
import { type KubeObject, type ObjectKey, objectKey } from "./types.ts";

/** One object to send, with its key and version. */
export interface VersionedUpsert {
  key: ObjectKey;
  object: KubeObject;
  version: ResourceVersion;
}

/** What to send: upserts (new or different version) and deletes, each sorted by key. */
export interface VersionDiff {
  upserts: VersionedUpsert[];
  deletes: ObjectKey[];
}

/**
 * Compares what a peer reports it has (key → version) with what it should have. Objects the peer
 * already holds at the same version are not sent again.
 */
export function diffByVersion(
  have: ReadonlyMap<ObjectKey, ResourceVersion>,
  want: ReadonlyMap<ObjectKey, VersionedObject>,
): VersionDiff {
  const upserts: VersionedUpsert[] = [];
  for (const [key, w] of want) {
    if (have.get(key) !== w.version) upserts.push({ key, object: w.object, version: w.version });
  }
  const deletes = [...have.keys()].filter((k) => !want.has(k)).sort();
  upserts.sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
  return { upserts, deletes };
}

/** key → {object, version} for a list of objects (the last of a duplicated key counts). */
export function versionedMap(objects: readonly KubeObject[]): Map<ObjectKey, VersionedObject> {
  const out = new Map<ObjectKey, VersionedObject>();
  for (const o of objects) out.set(objectKey(o), { object: o, version: resourceVersionOf(o) });
  return out;
}

/**
 * The receiving side of {@linkcode diffByVersion}: `held` with the diff applied, as a new map. A
 * peer that keeps what it received (e.g. the agent's copy of its desired state) stays equal to the
 * sender's `want` after every diff, and re-applying the same diff changes nothing.
 */
export function applyVersionDiff(
  held: ReadonlyMap<ObjectKey, VersionedObject>,
  diff: VersionDiff,
): Map<ObjectKey, VersionedObject> {
  const out = new Map(held);
  for (const k of diff.deletes) out.delete(k);
  for (const u of diff.upserts) out.set(u.key, { object: u.object, version: u.version });
  return new Map([...out].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0));
}
