import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { KubeConfig } from "@kubernetes/client-node";
import { FakeClock } from "../clock.ts";
import { nullLogger } from "../log.ts";
import { KubeRest } from "./kube_rest.ts";
import { mergeAsync, watchCollection } from "./kube_watch.ts";

async function* from<T>(items: T[], log?: string[], tag?: string): AsyncGenerator<T> {
  for (const x of items) {
    log?.push(`${tag} produces ${x}`);
    yield x;
  }
}

Deno.test("mergeAsync", async (t) => {
  await t.step("yields every item of every source, each source in its own order", async () => {
    const out: string[] = [];
    for await (const x of mergeAsync([from(["a1", "a2", "a3"]), from(["b1"]), from<string>([])])) out.push(x);
    assertEquals(out.filter((x) => x.startsWith("a")), ["a1", "a2", "a3"]);
    assertEquals(out.filter((x) => x.startsWith("b")), ["b1"]);
    assertEquals(out.length, 4);
  });
  await t.step("pulls at most one item ahead per source (no unbounded buffering)", async () => {
    const log: string[] = [];
    const it = mergeAsync([from([1, 2, 3, 4, 5], log, "a")])[Symbol.asyncIterator]();
    await it.next();
    // Item 1 was handed out and item 2 requested: nothing further was produced.
    assertEquals(log, ["a produces 1", "a produces 2"]);
    await it.return?.(undefined);
  });
  await t.step("a failing source fails the merge", async () => {
    async function* boom(): AsyncGenerator<number> {
      yield 1;
      throw new Error("boom");
    }
    await assertRejects(async () => {
      for await (const _ of mergeAsync([boom(), from([7])])) {
        // drain
      }
    }, Error);
  });
});

Deno.test("watchCollection resumes from the last version (bookmarks included) and reports expiry", async (t) => {
  const requests: URLSearchParams[] = [];
  const lines = (evs: unknown[]) => evs.map((e) => JSON.stringify(e) + "\n").join("");
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const q = new URL(req.url).searchParams;
    requests.push(q);
    switch (requests.length) {
      case 1: // A normal stream that the server ends (timeoutSeconds): the client resumes from the bookmark.
        return new Response(lines([
          { type: "ADDED", object: { metadata: { name: "a", resourceVersion: "5" } } },
          { type: "BOOKMARK", object: { metadata: { resourceVersion: "9" } } },
        ]));
      case 2: // A failure: the client waits (backoff on its clock) and tries again from the same version.
        return Response.json({ kind: "Status", code: 500, reason: "InternalError", message: "boom" }, {
          status: 500,
        });
      default: // The version was compacted away.
        return new Response(
          lines([{
            type: "ERROR",
            object: { kind: "Status", code: 410, reason: "Expired", message: "too old" },
          }]),
        );
    }
  });
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "c", server: `http://127.0.0.1:${server.addr.port}`, skipTLSVerify: true }],
    users: [{ name: "u" }],
    contexts: [{ name: "c", cluster: "c", user: "u" }],
    currentContext: "c",
  });
  const clock = new FakeClock();
  const items: unknown[] = [];
  try {
    const done = (async () => {
      const w = watchCollection(
        { path: "/api/v1/services", resourceVersion: "3", clock, log: nullLogger, random: () => 0 },
        new KubeRest({ kubeConfig: kc }),
        new AbortController().signal,
      );
      for await (const it of w) items.push(it);
    })();
    await clock.waitForSleepers(1);
    await clock.advance(30_000);
    await done;
  } finally {
    await server.shutdown();
  }
  await t.step("events and the bookmark, then one EXPIRED, then the end", () => {
    assertEquals(items, [
      { type: "ADDED", object: { metadata: { name: "a", resourceVersion: "5" } }, resourceVersion: "5" },
      { type: "BOOKMARK", resourceVersion: "9" },
      { type: "EXPIRED", message: "too old" },
    ]);
  });
  await t.step("each connection asked for bookmarks and resumed from the latest version", () => {
    assertEquals(requests.map((q) => q.get("resourceVersion")), ["3", "9", "9"]);
    assert(requests.every((q) => q.get("allowWatchBookmarks") === "true" && q.get("watch") === "true"));
  });
});
