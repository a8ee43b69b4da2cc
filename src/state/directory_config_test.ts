import { FakeClock } from "../clock.ts";
import { memoryLogger } from "../log.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { DirectoryConfigSource } from "./directory_config.ts";

const kc = (name: string, env: string) =>
  `apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: ${name}\n  labels: {env: ${env}}\n`;

Deno.test("DirectoryConfigSource", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "mr-cfg-" });
  await Deno.writeTextFile(`${root}/clusters.yaml`, kc("c1", "prod") + "---\n" + kc("c2", "dev"));
  const clock = new FakeClock();
  const log = memoryLogger();
  const src = new DirectoryConfigSource({ root, clock, log, useFsEvents: false, rescanIntervalMs: 1000 });
  await t.step("list reads every document", async () => {
    assertEquals((await src.list()).map((d) => d.metadata.name), ["c1", "c2"]);
  });
  await t.step("documents are frozen and shared by reads of an unchanged folder, not copied", async () => {
    const [a, b] = [await src.list(), await src.list()];
    assert(a[0] === b[0] && Object.isFrozen(a[0]) && Object.isFrozen(a[0].metadata), "shared, deep-frozen");
  });
  const ctl = new AbortController();
  const it = src.changes(ctl.signal)[Symbol.asyncIterator]();
  const steps: [string, () => Promise<void>, boolean][] = [
    [
      "a changed label signals once",
      () => Deno.writeTextFile(`${root}/clusters.yaml`, kc("c1", "dev")),
      true,
    ],
    [
      "a rewrite with identical documents stays silent",
      () => Deno.writeTextFile(`${root}/clusters.yaml`, kc("c1", "dev")),
      false,
    ],
    [
      "other text with the same documents (a comment) stays silent",
      () => Deno.writeTextFile(`${root}/clusters.yaml`, "# reviewed\n" + kc("c1", "dev")),
      false,
    ],
    ["a new nested file signals", async () => {
      await Deno.mkdir(`${root}/more`);
      await Deno.writeTextFile(`${root}/more/x.yaml`, kc("c3", "dev"));
    }, true],
    [
      "a broken file stays silent (last good kept) and is logged",
      () => Deno.writeTextFile(`${root}/more/x.yaml`, "a: ["),
      false,
    ],
  ];
  let pending: Promise<IteratorResult<void>> | undefined;
  for (const [name, change, signals] of steps) {
    await t.step(name, async () => {
      const p = pending ?? it.next();
      let settled = false;
      p.then(() => settled = true);
      await clock.waitForSleepers(1);
      await change();
      await clock.advance(1000);
      if (signals) {
        assertEquals((await p).done, false);
        pending = undefined;
      } else {
        // Parked again for the next period without yielding: nothing was signalled.
        await clock.waitForSleepers(1);
        await new Promise((r) => setTimeout(r, 10));
        assertEquals(settled, false);
        pending = p;
      }
    });
  }
  await t.step("abort ends the stream", async () => {
    ctl.abort();
    assertEquals((await (pending ?? it.next())).done, true);
  });
  await t.step("the broken file was named in a warning", () => {
    assert(log.lines.some((l) => l.level === "warn" && l.file === "more/x.yaml"));
  });
  await Deno.remove(root, { recursive: true });
});
