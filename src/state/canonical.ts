/**
 * Canonical JSON and content hashes. The server and the agent compute an object's resource version
 * independently, so the encoding must not depend on key insertion order or on the runtime.
 * @module
 */
import { createHash } from "node:crypto";
import type { KubeObject } from "./types.ts";

/** A content hash identifying one exact version of an object (hex, 128 bits of SHA-256). */
export type ResourceVersion = string;

/**
 * JSON with object keys sorted at every level and `undefined` members dropped, so equal content
 * always encodes to the same bytes.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortDeep(value));
}

/** A copy of a JSON-like value with object keys sorted at every level and `undefined` members dropped. */
export function sortDeep(v: unknown): unknown {
  if (Array.isArray(v)) return v.map((x) => x === undefined ? null : sortDeep(x));
  if (v !== null && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = sortDeep(x);
    }
    return out;
  }
  return v;
}

/** Hash of any JSON-like value's canonical encoding. */
export function contentHash(value: unknown): string {
  return hashOfCanonical(canonicalJson(value));
}

/** {@linkcode contentHash} of a value whose {@linkcode canonicalJson} is `json` (no second encoding). */
export function hashOfCanonical(json: string): string {
  // Hex of the first 16 bytes, not a slice of the full hex: V8 keeps a slice's 64-character parent alive,
  // and a server holds one of these per object of every cluster.
  return createHash("sha256").update(json).digest().subarray(0, 16).toString("hex");
}

/** The resource version of an object: the hash of its canonical JSON. */
export function resourceVersionOf(object: KubeObject): ResourceVersion {
  return contentHash(object);
}

/** A deep copy of a JSON-like value (objects we hand out must not alias our state). */
export function deepClone<T>(v: T): T {
  return structuredClone(v);
}
