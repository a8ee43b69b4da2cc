/**
 * A watch that survives the API server's normal stream ends and transient failures, resuming from
 * the last resourceVersion it saw (objects and BOOKMARK events both move it), and that reports
 * expiry (410 Gone: the version was compacted away) instead of hiding it: after expiry only a new
 * list can tell what happened in between.
 * @module
 */
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { isKubeStatus, KubeApiError, type KubeRest, type KubeStatus, type Query } from "./kube_rest.ts";

/** What {@linkcode watchCollection} yields. */
export type WatchItem =
  | { type: "ADDED" | "MODIFIED" | "DELETED"; object: Record<string, unknown>; resourceVersion: string }
  | { type: "BOOKMARK"; resourceVersion: string }
  /** The watch cannot continue from its version (410) or the collection is gone (404); list again. */
  | { type: "EXPIRED"; message: string };

/** Options of {@linkcode watchCollection}. */
export interface WatchOptions {
  /** The collection path, e.g. `/apis/apps/v1/deployments`. */
  path: string;
  /** Version to start from (the list's resourceVersion). */
  resourceVersion: string;
  clock: Clock;
  log: Logger;
  /** Extra query parameters (labelSelector, …). */
  query?: Query;
  /** Server-side length of one watch connection. Default 300 s. */
  timeoutSeconds?: number;
  /** Waits after a failed connection: min(maxMs, initialMs·2^n) times a factor in [0.5, 1). Default 500/30,000. */
  backoff?: { initialMs: number; maxMs: number };
  /** Randomness for the backoff factor. Default Math.random. */
  random?: () => number;
}

/**
 * Watches a collection until `signal` aborts or the watch expires (then yields one `EXPIRED` item
 * and returns). Server stream ends and network failures reconnect from the last version seen,
 * waiting with backoff after failures; 403 and other refusals are logged and retried the same way,
 * so a fixed RBAC rule or a restarted API server heals without a restart of meshrelay.
 */
export async function* watchCollection(
  opts: WatchOptions,
  rest: KubeRest,
  signal: AbortSignal,
): AsyncGenerator<
  WatchItem
> {
  let rv = opts.resourceVersion;
  let failures = 0;
  const backoff = opts.backoff ?? { initialMs: 500, maxMs: 30_000 };
  const random = opts.random ?? Math.random;
  while (!signal.aborted) {
    let healthy = false;
    try {
      const stream = rest.watch(opts.path, {
        ...opts.query,
        resourceVersion: rv,
        allowWatchBookmarks: true,
        timeoutSeconds: opts.timeoutSeconds ?? 300,
      }, signal);
      for await (const ev of stream) {
        healthy = true;
        if (ev.type === "ERROR") {
          const st = ev.object as KubeStatus;
          if (st.code === 410) {
            yield { type: "EXPIRED", message: st.message ?? "resource version expired" };
            return;
          }
          throw new KubeApiError(st.code ?? 500, st, `WATCH ${opts.path}`);
        }
        const meta = (ev.object.metadata ?? {}) as { resourceVersion?: string };
        if (meta.resourceVersion) rv = meta.resourceVersion;
        if (ev.type === "BOOKMARK") yield { type: "BOOKMARK", resourceVersion: rv };
        else yield { type: ev.type, object: ev.object, resourceVersion: rv };
      }
      failures = 0;
    } catch (e) {
      if (signal.aborted) return;
      if (isKubeStatus(e, 410) || isKubeStatus(e, 404)) {
        yield { type: "EXPIRED", message: (e as Error).message };
        return;
      }
      if (healthy) failures = 0;
      const wait = Math.floor(
        Math.min(backoff.maxMs, backoff.initialMs * 2 ** failures) * (0.5 + 0.5 * clamp01(random())),
      );
      failures++;
      opts.log.warn("watch failed; retrying", {
        path: opts.path,
        error: e instanceof Error ? e.message : String(e),
        retryInMs: wait,
      });
      try {
        await opts.clock.sleep(wait, signal);
      } catch {
        return;
      }
    }
  }
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(Math.max(x, 0), 1) : 0;
}

/**
 * Merges async iterables into one, in arrival order, with at most one pending item per source (a
 * slow consumer slows the sources instead of buffering without bound). Ends when all sources end;
 * the first source error is rethrown after the others are closed.
 */
export async function* mergeAsync<T>(sources: AsyncIterable<T>[]): AsyncGenerator<T> {
  const its = sources.map((s) => s[Symbol.asyncIterator]());
  const pending = new Map<number, Promise<{ i: number; r: IteratorResult<T> }>>();
  const pull = (i: number) => pending.set(i, its[i].next().then((r) => ({ i, r })));
  its.forEach((_, i) => pull(i));
  try {
    while (pending.size > 0) {
      const { i, r } = await Promise.race(pending.values());
      if (r.done) {
        pending.delete(i);
        continue;
      }
      pull(i);
      yield r.value;
    }
  } finally {
    // Close the sources still running. A source blocked in I/O finishes its pending next() only when
    // it notices (the caller aborts their signal); its outcome no longer matters, so it must not
    // surface as an unhandled rejection.
    for (const [i, p] of pending) {
      p.catch(() => {});
      its[i].return?.(undefined).catch(() => {});
    }
  }
}
