/**
 * A folder of YAML manifests read as a whole, and a trigger telling when to read it again. Shared by
 * the discovery source (a folder stands for a cluster) and the config source (declared state).
 * @module
 */
import type { Clock } from "../clock.ts";
import { NotFoundError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { contentHash } from "./canonical.ts";
import { parseManifests } from "./manifests.ts";
import type { KubeObject } from "./types.ts";

const MANIFEST_EXT = /\.(ya?ml|json)$/i;

interface CachedFile {
  hash: string;
  /** Deep-frozen: handed out as they are, never copied. */
  objects: readonly KubeObject[];
  /** Hash of `objects` (not of the text: a broken file keeps its last good objects, and their hash). */
  objectsHash: string;
  /** The file had errors; `objects` are from its last good version (or empty). */
  broken: boolean;
}

/** What a folder holds now, and a version that changes exactly when the objects do. */
export interface ManifestSnapshot {
  /** Deep-frozen and shared between reads: a folder of 5,000 documents is not copied per read. */
  objects: readonly KubeObject[];
  version: string;
}

function deepFreeze<T>(v: T): T {
  if (v && typeof v === "object" && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

/**
 * Reads every manifest under a folder (nested folders, multi-document files). Hidden files and
 * folders (`.name`) are skipped: editors' and our own temporary files live there.
 *
 * A file that stops parsing keeps contributing its last good objects, so a half-written file never
 * looks like a mass deletion; the problem is logged once per file content, naming the file.
 */
export class ManifestDirectory {
  readonly root: string;
  #log: Logger;
  #defaultNamespace?: string;
  #cache = new Map<string, CachedFile>();

  constructor(root: string, opts: { log: Logger; defaultNamespace?: string }) {
    this.root = root.replace(/\/+$/, "") || "/";
    this.#log = opts.log;
    this.#defaultNamespace = opts.defaultNamespace;
  }

  /** All objects, in file-path order then document order. Throws NotFoundError if the folder is missing. */
  async read(): Promise<readonly KubeObject[]> {
    return (await this.snapshot()).objects;
  }

  /**
   * All objects and their version. Only files whose text changed since the last read are parsed and
   * hashed again, so an unchanged rescan of a large folder costs reading it, not re-hashing it.
   */
  async snapshot(): Promise<ManifestSnapshot> {
    const files: string[] = [];
    try {
      await walk(this.root, files);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new NotFoundError(`manifest folder ${this.root} does not exist`, { cause: e });
      }
      throw e;
    }
    files.sort();
    const next = new Map<string, CachedFile>();
    const out: KubeObject[] = [];
    for (const path of files) {
      let text: string;
      try {
        text = await Deno.readTextFile(path);
      } catch (e) {
        // Removed between listing and reading: it is simply gone.
        if (e instanceof Deno.errors.NotFound) continue;
        throw e;
      }
      const hash = contentHash(text);
      const prev = this.#cache.get(path);
      let entry: CachedFile;
      if (prev && prev.hash === hash) {
        entry = prev;
      } else {
        const rel = path.slice(this.root.length + 1);
        const parsed = parseManifests(text, rel, { defaultNamespace: this.#defaultNamespace });
        if (parsed.errors.length > 0) {
          for (const err of parsed.errors) {
            this.#log.warn("invalid manifest skipped", { file: rel, error: err });
          }
          entry = prev
            ? { ...prev, hash, broken: true }
            : { hash, objects: [], objectsHash: contentHash([]), broken: true };
        } else {
          entry = {
            hash,
            objects: deepFreeze(parsed.objects),
            objectsHash: contentHash(parsed.objects),
            broken: false,
          };
        }
      }
      next.set(path, entry);
      out.push(...entry.objects);
    }
    this.#cache = next;
    const version = contentHash([...next].map(([path, e]) => [path, e.objectsHash]));
    return { objects: Object.freeze(out), version };
  }
}

async function walk(dir: string, out: string[]): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(".")) continue;
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) await walk(p, out);
    else if ((e.isFile || e.isSymlink) && MANIFEST_EXT.test(e.name)) out.push(p);
  }
}

/** Options of {@linkcode rescanTriggers}. */
export interface RescanOptions {
  clock: Clock;
  log: Logger;
  /** Rescan at least this often, whatever the file system reports. */
  intervalMs: number;
  /** Also react to file-system events (inotify and friends); off where they do not work. */
  useFsEvents: boolean;
  /** After an event, wait this long so a burst of writes becomes one rescan. */
  debounceMs: number;
}

/**
 * Yields whenever `root` should be read again: after file-system events (debounced) and at least
 * every `intervalMs`, so changes are seen even where file-system events are not delivered (network
 * and container mounts). Ends when `signal` aborts.
 */
export async function* rescanTriggers(
  root: string,
  opts: RescanOptions,
  signal: AbortSignal,
): AsyncGenerator<void> {
  let dirty = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    dirty = true;
    wake?.();
  };
  let watcher: Deno.FsWatcher | undefined;
  if (opts.useFsEvents) {
    try {
      watcher = Deno.watchFs(root, { recursive: true });
      const w = watcher;
      (async () => {
        try {
          for await (const _ of w) notify();
        } catch (e) {
          opts.log.warn("file watch ended; relying on periodic rescans", { dir: root, error: String(e) });
        }
      })();
    } catch (e) {
      opts.log.warn("file watch unavailable; relying on periodic rescans", { dir: root, error: String(e) });
    }
  }
  const close = () => {
    try {
      watcher?.close();
    } catch {
      // already closed
    }
    watcher = undefined;
  };
  const onAbort = () => {
    close();
    wake?.();
  };
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    while (!signal.aborted) {
      if (!dirty) {
        const round = new AbortController();
        const woke = new Promise<void>((r) => wake = r);
        await Promise.race([
          woke,
          opts.clock.sleep(opts.intervalMs, AbortSignal.any([signal, round.signal])).catch(() => {}),
        ]);
        wake = undefined;
        round.abort();
        if (signal.aborted) return;
      }
      if (dirty && opts.debounceMs > 0) {
        await opts.clock.sleep(opts.debounceMs, signal).catch(() => {});
        if (signal.aborted) return;
      }
      dirty = false;
      yield;
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    close();
  }
}
