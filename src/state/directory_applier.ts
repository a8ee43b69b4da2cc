/**
 * Applying a cluster's desired state to a folder (the directory stand-in for a Kubernetes API
 * server): one YAML file per object, a record of what was applied, and pruning of what was applied
 * before and is no longer desired.
 * @module
 */
import type { Logger } from "../log.ts";
import { replaceFileAtomic } from "../fs_atomic.ts";
import { stringify } from "yaml";
import { resourceVersionOf, sortDeep } from "./canonical.ts";
import { parseManifests } from "./manifests.ts";
import { type Applier, type KubeObject, type ObjectKey, objectKey, type ObjectStatus } from "./types.ts";

/** Name of the record of applied objects, in the applier's folder. */
export const APPLIED_STATE_FILE = ".meshrelay-applied.json";

/** One object the applier wrote: its file (relative to the folder) and version. */
export interface AppliedRecord {
  file: string;
  version: string;
}

interface StateFile {
  format: 1;
  objects: Record<ObjectKey, AppliedRecord>;
}

/** Options of {@linkcode DirectoryApplier}. */
export interface DirectoryApplierOptions {
  /** The folder standing for the cluster's API server. Created if missing. */
  root: string;
  log: Logger;
  /** Randomness for temporary file names. Default Math.random. */
  random?: () => number;
}

const NAME = /^[A-Za-z0-9]([A-Za-z0-9._:-]*[A-Za-z0-9])?$/;
const API_VERSION = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[a-z0-9]+$/;
const KIND = /^[A-Za-z][A-Za-z0-9]*$/;
const HEADER =
  "# Written by meshrelay from the management server's desired state; local edits are overwritten.\n";

/** The file (relative to the folder) an object is written to, or a reason it cannot be. */
export function fileFor(o: KubeObject): { file: string } | { error: string } {
  const ns = o.metadata.namespace;
  if (!API_VERSION.test(o.apiVersion)) {
    return { error: `apiVersion ${JSON.stringify(o.apiVersion)} is not valid` };
  }
  if (!KIND.test(o.kind)) return { error: `kind ${JSON.stringify(o.kind)} is not valid` };
  if (!NAME.test(o.metadata.name)) {
    return { error: `metadata.name ${JSON.stringify(o.metadata.name)} is not valid` };
  }
  if (ns !== undefined && ns !== "" && !NAME.test(ns)) {
    return { error: `metadata.namespace ${JSON.stringify(ns)} is not valid` };
  }
  return {
    file: `${ns ? ns : "_cluster"}/${o.kind}.${o.apiVersion.replace("/", "_")}.${o.metadata.name}.yaml`,
  };
}

/** The YAML text the applier writes for `o` (stable: equal objects give equal bytes). */
export function renderObject(o: KubeObject): string {
  const { apiVersion, kind, metadata, ...rest } = o;
  const ordered = { apiVersion, kind, metadata: sortDeep(metadata), ...(sortDeep(rest) as object) };
  return HEADER + stringify(ordered, { lineWidth: 0 });
}

/**
 * {@linkcode Applier} writing into a folder. Guarantees:
 * - each object is written atomically (temporary file + rename); unchanged files are not rewritten,
 *   so applying the same set twice changes nothing;
 * - only files it wrote are ever replaced or deleted: a file already present that it did not write
 *   makes that object `failed` (unless its content is exactly what would be written: then it is adopted);
 * - what it applied is recorded in `.meshrelay-applied.json` (atomic), and the record lists a file
 *   before the file is written, so a crash never leaves a file of ours unrecorded (which would block
 *   or leak it later).
 */
export class DirectoryApplier implements Applier {
  readonly root: string;
  #log: Logger;
  #random: () => number;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(opts: DirectoryApplierOptions) {
    this.root = opts.root.replace(/\/+$/, "") || "/";
    this.#log = opts.log.child({ component: "directory-applier" });
    this.#random = opts.random ?? Math.random;
  }

  apply(desired: KubeObject[], signal?: AbortSignal): Promise<ObjectStatus[]> {
    // One apply at a time: two interleaved runs would each prune what the other just wrote.
    const run = this.#queue.then(() => this.#apply(desired, signal));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** What the applier has applied, by key (from its record). */
  async applied(): Promise<Map<ObjectKey, AppliedRecord>> {
    return await this.#loadState();
  }

  /**
   * The objects it applied that are still on disk exactly as written (re-read and re-hashed; an
   * edited or missing file is left out, so the server sends it again).
   */
  async held(_signal?: AbortSignal): Promise<Map<ObjectKey, { object: KubeObject; version: string }>> {
    const out = new Map<ObjectKey, { object: KubeObject; version: string }>();
    for (const [key, rec] of await this.#loadState()) {
      if (rec.version === "") continue;
      let text: string | undefined;
      try {
        text = await readIfExists(`${this.root}/${rec.file}`);
      } catch {
        continue;
      }
      if (text === undefined) continue;
      const objs = parseManifests(text, rec.file).objects;
      if (objs.length !== 1 || objectKey(objs[0]) !== key || resourceVersionOf(objs[0]) !== rec.version) {
        continue;
      }
      out.set(key, { object: objs[0], version: rec.version });
    }
    return out;
  }

  async #apply(desired: KubeObject[], signal?: AbortSignal): Promise<ObjectStatus[]> {
    signal?.throwIfAborted();
    await Deno.mkdir(this.root, { recursive: true });
    const before = await this.#loadState();
    const statuses = new Map<ObjectKey, ObjectStatus>();
    const fail = (key: ObjectKey, message: string) => statuses.set(key, { key, state: "failed", message });

    // Plan: what to write where, refusing files we did not write.
    const wanted = new Map<ObjectKey, KubeObject>();
    for (const o of desired) wanted.set(objectKey(o), o);
    const plan = new Map<ObjectKey, { file: string; version: string; text: string; write: boolean }>();
    const claimed = new Map<string, ObjectKey>();
    const ourFiles = new Set([...before.values()].map((r) => r.file));
    for (const [key, o] of [...wanted].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
      const f = fileFor(o);
      if ("error" in f) {
        fail(key, f.error);
        continue;
      }
      const other = claimed.get(f.file);
      if (other !== undefined) {
        fail(key, `maps to the same file as ${other}`);
        continue;
      }
      claimed.set(f.file, key);
      const text = renderObject(o);
      let current: string | undefined;
      try {
        current = await readIfExists(`${this.root}/${f.file}`);
      } catch (e) {
        fail(key, `read ${f.file}: ${errorText(e)}`);
        continue;
      }
      if (current !== undefined && !ourFiles.has(f.file) && current !== text) {
        fail(key, `${f.file} exists and was not written by meshrelay; left untouched`);
        continue;
      }
      plan.set(key, { file: f.file, version: resourceVersionOf(o), text, write: current !== text });
    }

    // Record intent first: every file we may write is listed before it exists.
    const intent = new Map(before);
    for (const [key, p] of plan) intent.set(key, { file: p.file, version: before.get(key)?.version ?? "" });
    if (!sameState(intent, before)) await this.#saveState(intent);

    const after = new Map(intent);
    for (const [key, p] of plan) {
      signal?.throwIfAborted();
      if (!p.write) {
        after.set(key, { file: p.file, version: p.version });
        statuses.set(key, { key, state: "applied", message: "unchanged" });
        continue;
      }
      try {
        await this.#writeAtomic(p.file, p.text);
        after.set(key, { file: p.file, version: p.version });
        statuses.set(key, { key, state: "applied", message: before.has(key) ? "updated" : "created" });
      } catch (e) {
        const prev = before.get(key);
        if (prev) after.set(key, prev);
        else after.delete(key);
        fail(key, `write ${p.file}: ${errorText(e)}`);
      }
    }

    // Prune what we applied before and nobody wants now. A key still wanted but failing keeps its file.
    for (const [key, rec] of before) {
      if (wanted.has(key)) continue;
      signal?.throwIfAborted();
      if (claimed.get(rec.file) !== undefined && plan.has(claimed.get(rec.file)!)) {
        // Another key now owns this file (e.g. apiVersion change mapped to the same path): not a prune.
        after.delete(key);
        statuses.set(key, { key, state: "pruned", message: `file taken over by another object` });
        continue;
      }
      try {
        await Deno.remove(`${this.root}/${rec.file}`);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) {
          fail(key, `prune ${rec.file}: ${errorText(e)}`);
          continue;
        }
      }
      after.delete(key);
      statuses.set(key, { key, state: "pruned" });
    }
    if (!sameState(after, intent)) await this.#saveState(after);
    const out = [...statuses.values()].sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
    const counts = { applied: 0, pruned: 0, failed: 0 };
    for (const s of out) counts[s.state]++;
    this.#log.info("applied desired state", { dir: this.root, ...counts });
    return out;
  }

  async #loadState(): Promise<Map<ObjectKey, AppliedRecord>> {
    const text = await readIfExists(`${this.root}/${APPLIED_STATE_FILE}`);
    if (text === undefined) return new Map();
    try {
      const parsed = JSON.parse(text) as StateFile;
      if (parsed?.format !== 1 || typeof parsed.objects !== "object" || parsed.objects === null) {
        throw new Error("unknown format");
      }
      const out = new Map<ObjectKey, AppliedRecord>();
      for (const [k, r] of Object.entries(parsed.objects)) {
        if (typeof r?.file !== "string" || typeof r.version !== "string" || r.file.includes("..")) {
          throw new Error(`bad record for ${k}`);
        }
        out.set(k, { file: r.file, version: r.version });
      }
      return out;
    } catch (e) {
      // Without the record we cannot tell our files from others': prune nothing, adopt only identical files.
      this.#log.warn("applied-state record unreadable; nothing will be pruned until it is rewritten", {
        file: APPLIED_STATE_FILE,
        error: errorText(e),
      });
      return new Map();
    }
  }

  async #saveState(state: Map<ObjectKey, AppliedRecord>): Promise<void> {
    const objects: Record<ObjectKey, AppliedRecord> = {};
    for (const k of [...state.keys()].sort()) objects[k] = state.get(k)!;
    const body: StateFile = { format: 1, objects };
    await this.#writeAtomic(APPLIED_STATE_FILE, JSON.stringify(body, null, 2) + "\n");
  }

  async #writeAtomic(rel: string, text: string): Promise<void> {
    const path = `${this.root}/${rel}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await replaceFileAtomic(path, new TextEncoder().encode(text), {
      mode: 0o644,
      suffix: Math.floor(this.#random() * 2 ** 48).toString(36),
    });
  }
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

function sameState(a: Map<ObjectKey, AppliedRecord>, b: Map<ObjectKey, AppliedRecord>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, r] of a) {
    const o = b.get(k);
    if (!o || o.file !== r.file || o.version !== r.version) return false;
  }
  return true;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
