import { assertEquals, assertRejects } from "../testing/assert.ts";
import { mergeAsync } from "./kube_watch.ts";

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
