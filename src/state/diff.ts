/**
 * Resync by difference: what to send so that a peer holding `have` ends up holding `want`.
 * @module
 */
import type { ResourceVersion } from "./canonical.ts";
import type { VersionedObject } from "./inventory.ts";
import type { KubeObject, ObjectKey } from "./types.ts";

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
