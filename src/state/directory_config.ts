/**
 * Declared configuration read from a folder of YAML documents (the management cluster's CRDs when
 * there is no API server).
 * @module
 */
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { ManifestDirectory, rescanTriggers } from "./manifest_dir.ts";
import type { ConfigSource, KubeObject } from "./types.ts";

/** Options of {@linkcode DirectoryConfigSource}. */
export interface DirectoryConfigOptions {
  root: string;
  clock: Clock;
  log: Logger;
  /** Periodic rescan, so changes are seen even without file-system events. Default 5000. */
  rescanIntervalMs?: number;
  /** React to file-system events too. Default true. */
  useFsEvents?: boolean;
  /** Coalesce a burst of file events into one rescan. Default 100. */
  debounceMs?: number;
}

/**
 * {@linkcode ConfigSource} over a folder. `changes` yields once per rescan whose documents differ
 * from those the previous `list` or rescan saw; unchanged rescans stay silent. Validation of the
 * documents is the reader's business (`parseDeclaredConfig`), YAML errors are logged naming the file.
 */
export class DirectoryConfigSource implements ConfigSource {
  #dir: ManifestDirectory;
  #opts: Required<DirectoryConfigOptions>;
  #lastHash?: string;

  constructor(opts: DirectoryConfigOptions) {
    this.#opts = { rescanIntervalMs: 5000, useFsEvents: true, debounceMs: 100, ...opts };
    this.#dir = new ManifestDirectory(opts.root, { log: opts.log.child({ component: "directory-config" }) });
  }

  async list(_signal?: AbortSignal): Promise<readonly KubeObject[]> {
    const snap = await this.#dir.snapshot();
    this.#lastHash = snap.version;
    return snap.objects;
  }

  async *changes(signal: AbortSignal): AsyncIterable<void> {
    if (this.#lastHash === undefined) await this.list();
    const triggers = rescanTriggers(this.#dir.root, {
      clock: this.#opts.clock,
      log: this.#opts.log,
      intervalMs: this.#opts.rescanIntervalMs,
      useFsEvents: this.#opts.useFsEvents,
      debounceMs: this.#opts.debounceMs,
    }, signal);
    for await (const _ of triggers) {
      let hash: string;
      try {
        hash = (await this.#dir.snapshot()).version;
      } catch (e) {
        this.#opts.log.warn("config rescan failed; keeping the last known state", {
          dir: this.#dir.root,
          error: e instanceof Error ? e.message : String(e),
        });
        continue;
      }
      if (hash === this.#lastHash) continue;
      this.#lastHash = hash;
      yield;
    }
  }
}
