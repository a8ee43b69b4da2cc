/**
 * watchCollection against a real kube-apiserver (with its watch cache, as clusters run it): the server's
 * BOOKMARK events arrive and move the version, and the watch resumes across the server's own stream ends
 * (timeoutSeconds) without losing or repeating an event. Expiry (410) is covered by
 * discovery_backend_test.ts.
 */
import { systemClock } from "../../src/clock.ts";
import { KubeRest, type Query, type RawWatchEvent } from "../../src/kube/mod.ts";
import { watchCollection, type WatchItem } from "../../src/kube/kube_watch.ts";
import { nullLogger } from "../../src/log.ts";
import { assert, assertEquals } from "../../src/testing/assert.ts";
import { TestKube } from "./backend_helpers.ts";
import { kubeAvailable, startTestCluster } from "./harness.ts";

/** Counts watch connections, to see the watch resume after the server ended a stream. */
class CountingRest extends KubeRest {
  connections = 0;
  override watch(path: string, query: Query, signal: AbortSignal): AsyncGenerator<RawWatchEvent> {
    this.connections++;
    return super.watch(path, query, signal);
  }
}

const rvOf = (i: WatchItem): string => i.type === "EXPIRED" ? "0" : i.resourceVersion;

/** Bound of each wait: generous for two shared cores, never an assertion on speed. */
const WAIT_MS = 60_000;

Deno.test({
  name:
    "watchCollection against a real kube-apiserver: bookmarks, and resuming after the server ends streams",
  ignore: !kubeAvailable(),
  fn: async () => {
    await using cluster = await startTestCluster({ name: "watch" });
    const kube = new TestKube(cluster.kubeConfig);
    const rest = new CountingRest({ kubeConfig: cluster.kubeConfig });
    const ns = (name: string) => ({ apiVersion: "v1", kind: "Namespace", metadata: { name } });
    const list = await rest.list("/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace" });

    const items: WatchItem[] = [];
    const ctl = new AbortController();
    const started = Date.now();
    // The server ends each stream after 4 s, sending a bookmark 2 s before (kube-apiserver's cacher).
    const running = (async () => {
      for await (
        const it of watchCollection(
          {
            path: "/api/v1/namespaces",
            resourceVersion: list.resourceVersion!,
            clock: systemClock,
            log: nullLogger,
            timeoutSeconds: 4,
          },
          rest,
          ctl.signal,
        )
      ) items.push(it);
    })();
    const waitFor = async (what: string, ok: () => boolean) => {
      const end = Date.now() + WAIT_MS;
      while (!ok()) {
        assert(Date.now() < end, `${what} did not happen in time; got ${JSON.stringify(items)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const added = (name: string) =>
      items.filter((i) => i.type === "ADDED" && (i.object.metadata as { name: string }).name === name).length;
    try {
      await kube.apply(ns("first"));
      await waitFor("ADDED first", () => added("first") === 1);
      await waitFor("a BOOKMARK", () => items.some((i) => i.type === "BOOKMARK"));
      const bookmark = items.find((i) => i.type === "BOOKMARK")!;
      const firstAdded = items.find((i) => i.type === "ADDED")!;
      assert(BigInt(rvOf(bookmark)) >= BigInt(rvOf(firstAdded)), JSON.stringify(bookmark));

      // Past at least two server-side stream ends: the watch resumed from its last version each time.
      await new Promise((r) => setTimeout(r, Math.max(0, started + 9_000 - Date.now())));
      await kube.apply(ns("second"));
      await waitFor("ADDED second", () => added("second") === 1);
      await kube.delete(ns("second"));
      await waitFor(
        "second deleted (no controller-manager: it goes Terminating, a MODIFIED)",
        () =>
          items.some((i) =>
            i.type === "MODIFIED" && (i.object.metadata as { name: string }).name === "second" &&
            !!(i.object.metadata as { deletionTimestamp?: string }).deletionTimestamp
          ),
      );
      // Nothing was replayed across the reconnects and nothing expired.
      assertEquals(added("first"), 1);
      assertEquals(added("second"), 1);
      assertEquals(items.filter((i) => i.type === "EXPIRED"), []);
      assert(rest.connections >= 3, `the watch resumed after the server's stream ends (${rest.connections})`);
      // Versions never go backwards.
      const rvs = items.map((i) => BigInt(rvOf(i)));
      assertEquals(rvs, [...rvs].sort((a, b) => a < b ? -1 : a > b ? 1 : 0));
    } finally {
      ctl.abort();
      await running;
    }
  },
});
