/**
 * A folder of YAML manifests standing for a workload cluster: what an agent "discovers" when no
 * Kubernetes API server is around (demo, tests, laptops).
 * @module
 */
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { resourceVersionOf } from "./canonical.ts";
import { ManifestDirectory, rescanTriggers } from "./manifest_dir.ts";
import {
  type DiscoveryEvent,
  type DiscoverySource,
  type KubeObject,
  type ObjectKey,
  objectKey,
} from "./types.ts";

/** Options of {@linkcode DirectoryDiscoverySource}. */
export interface DirectoryDiscoveryOptions {
  /** The folder standing for the cluster. */
  root: string;
  clock: Clock;
  log: Logger;
  /**
   * Only these kinds are discovered: `Service` matches any apiVersion, `apps/v1/Deployment` one
   * exactly. Empty or absent: every kind.
   */
  kinds?: string[];
  /** Periodic rescan, so changes are seen even without file-system events. Default 5000. */
  rescanIntervalMs?: number;
  /** React to file-system events too. Default true. */
  useFsEvents?: boolean;
  /** Coalesce a burst of file events into one rescan. Default 100. */
  debounceMs?: number;
}

interface Known {
  object: KubeObject;
  version: string;
}

/**
 * {@linkcode DiscoverySource} over a folder of manifests. `watch` reports differences from the last
 * `snapshot` (or from the state when the watch began) as upserts and deletes by object key; when
 * the same key appears in several files the last file in path order wins.
 */
export class DirectoryDiscoverySource implements DiscoverySource {
  #dir: ManifestDirectory;
  #opts: Required<Omit<DirectoryDiscoveryOptions, "kinds">> & { kinds: string[] };
  #known?: Map<ObjectKey, Known>;

  constructor(opts: DirectoryDiscoveryOptions) {
    this.#opts = {
      rescanIntervalMs: 5000,
      useFsEvents: true,
      debounceMs: 100,
      ...opts,
      kinds: opts.kinds ?? [],
    };
    this.#dir = new ManifestDirectory(opts.root, {
      log: opts.log.child({ component: "directory-discovery" }),
      defaultNamespace: "default",
    });
  }

  async snapshot(_signal?: AbortSignal): Promise<KubeObject[]> {
    this.#known = await this.#scan();
    return [...this.#known.entries()].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([, k]) =>
      structuredClone(k.object)
    );
  }

  async *watch(signal: AbortSignal): AsyncIterable<DiscoveryEvent | { type: "resync" }> {
    if (!this.#known) this.#known = await this.#scan();
    const triggers = rescanTriggers(this.#dir.root, {
      clock: this.#opts.clock,
      log: this.#opts.log,
      intervalMs: this.#opts.rescanIntervalMs,
      useFsEvents: this.#opts.useFsEvents,
      debounceMs: this.#opts.debounceMs,
    }, signal);
    for await (const _ of triggers) {
      let next: Map<ObjectKey, Known>;
      try {
        next = await this.#scan();
      } catch (e) {
        // A folder that vanished for a moment must not look like every object was deleted.
        this.#opts.log.warn("discovery rescan failed; keeping the last known state", {
          dir: this.#dir.root,
          error: e instanceof Error ? e.message : String(e),
        });
        continue;
      }
      const prev = this.#known!;
      this.#known = next;
      for (const ev of changesBetween(prev, next)) yield ev;
    }
  }

  async #scan(): Promise<Map<ObjectKey, Known>> {
    const out = new Map<ObjectKey, Known>();
    for (const o of await this.#dir.read()) {
      if (!kindSelected(this.#opts.kinds, o)) continue;
      out.set(objectKey(o), { object: o, version: resourceVersionOf(o) });
    }
    return out;
  }
}

function kindSelected(kinds: string[], o: KubeObject): boolean {
  return kinds.length === 0 || kinds.includes(o.kind) || kinds.includes(`${o.apiVersion}/${o.kind}`);
}

function changesBetween(prev: Map<ObjectKey, Known>, next: Map<ObjectKey, Known>): DiscoveryEvent[] {
  const events: DiscoveryEvent[] = [];
  for (const key of [...new Set([...prev.keys(), ...next.keys()])].sort()) {
    const a = prev.get(key);
    const b = next.get(key);
    if (b && (!a || a.version !== b.version)) {
      events.push({ type: "upsert", object: structuredClone(b.object) });
    } else if (a && !b) events.push({ type: "delete", key });
  }
  return events;
}
