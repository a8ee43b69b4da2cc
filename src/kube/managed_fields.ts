/**
 * Reading back what one field manager applied, from a live object's `metadata.managedFields`
 * (server-side apply's record of field ownership, format `FieldsV1`). This is what client-go's
 * `Extract…` functions do: the result is exactly the fields the manager owns, with their live
 * values, so a restarted agent can tell whether what it applied is still in place.
 * @module
 */

/** A `FieldsV1` set: `f:<field>`, `k:<key json>`, `v:<value json>`, `i:<index>` and `.`. */
export type FieldsV1 = { [k: string]: FieldsV1 };

/** One `metadata.managedFields` entry (the fields meshrelay reads). */
export interface ManagedFieldsEntry {
  manager?: string;
  operation?: string;
  apiVersion?: string;
  subresource?: string;
  fieldsType?: string;
  fieldsV1?: FieldsV1;
}

/**
 * The fields `manager` owns through Apply on the main resource (not a subresource) at `apiVersion`,
 * or undefined when it owns none.
 */
export function appliedFieldsOf(
  managedFields: readonly ManagedFieldsEntry[] | undefined,
  manager: string,
  apiVersion: string,
): FieldsV1 | undefined {
  const e = (managedFields ?? []).find((m) =>
    m.manager === manager && m.operation === "Apply" && !m.subresource && m.apiVersion === apiVersion &&
    (m.fieldsType ?? "FieldsV1") === "FieldsV1"
  );
  return e?.fieldsV1;
}

/**
 * The part of `value` covered by `fields`: for maps the owned members, for lists the owned items
 * (matched by key, value or index) in live order. A member whose field set is empty is owned whole.
 */
export function extractFields(value: unknown, fields: FieldsV1): unknown {
  if (Array.isArray(value)) {
    const out: unknown[] = [];
    const entries = Object.entries(fields).filter(([k]) => k !== ".");
    value.forEach((item, index) => {
      for (const [k, sub] of entries) {
        if (!itemMatches(k, item, index)) continue;
        out.push(isLeaf(sub) || k.startsWith("v:") ? structuredClone(item) : extractFields(item, sub));
        return;
      }
    });
    return out;
  }
  if (value !== null && typeof value === "object") {
    const src = value as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const [k, sub] of Object.entries(fields)) {
      if (!k.startsWith("f:")) continue;
      const name = k.slice(2);
      if (!Object.hasOwn(src, name)) continue;
      out[name] = isLeaf(sub) ? structuredClone(src[name]) : extractFields(src[name], sub);
    }
    return out;
  }
  return value;
}

function isLeaf(f: FieldsV1): boolean {
  return Object.keys(f).every((k) => k === ".");
}

function itemMatches(k: string, item: unknown, index: number): boolean {
  if (k.startsWith("i:")) return Number(k.slice(2)) === index;
  let v: unknown;
  try {
    v = JSON.parse(k.slice(2));
  } catch {
    return false;
  }
  if (k.startsWith("v:")) return deepEqual(item, v);
  if (k.startsWith("k:")) {
    if (item === null || typeof item !== "object" || v === null || typeof v !== "object") return false;
    return Object.entries(v as Record<string, unknown>).every(([kk, vv]) =>
      deepEqual((item as Record<string, unknown>)[kk], vv)
    );
  }
  return false;
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => deepEqual(x, bb[i]));
  }
  const ka = Object.keys(a as object);
  const kb = Object.keys(b as object);
  return ka.length === kb.length &&
    ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}
