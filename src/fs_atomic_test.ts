import { assertEquals, assertRejects } from "./testing/assert.ts";
import { replaceFileAtomic } from "./fs_atomic.ts";

Deno.test("replaceFileAtomic", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-fs-atomic-" });
  try {
    await t.step("replaces the content and leaves no temp file", async () => {
      await Deno.writeTextFile(`${dir}/a`, "old");
      await replaceFileAtomic(`${dir}/a`, new TextEncoder().encode("new"), { mode: 0o640, suffix: "x" });
      assertEquals(await Deno.readTextFile(`${dir}/a`), "new");
      assertEquals((await Deno.stat(`${dir}/a`)).mode! & 0o777, 0o640);
      assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["a"]);
    });
    await t.step("a failed rename removes the temp file and keeps the old content", async () => {
      await Deno.mkdir(`${dir}/d`);
      await assertRejects(() => replaceFileAtomic(`${dir}/d`, new TextEncoder().encode("x")), Error);
      assertEquals([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["a", "d"]);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
