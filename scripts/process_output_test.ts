import { assertEquals } from "../src/testing/assert.ts";
import { collectLines, listFiles, type LogLine } from "./process_output.ts";

Deno.test("collectLines splits chunks into lines, parses the JSON ones and tees every chunk", async () => {
  const chunks = ['{"msg":"a","level":"info"}\nplain te', 'xt\n{"msg":"b","lev', 'el":"warn"}\n{broken\n'];
  const enc = new TextEncoder();
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      for (const ch of chunks) c.enqueue(enc.encode(ch));
      c.close();
    },
  });
  const into = { raw: [] as string[], lines: [] as LogLine[] };
  let teed = 0;
  await collectLines(stream, into, (b) => teed += b.length);
  assertEquals(into.raw, [
    '{"msg":"a","level":"info"}',
    "plain text",
    '{"msg":"b","level":"warn"}',
    "{broken",
  ]);
  assertEquals(into.lines.map((l) => l.msg), ["a", "b"]);
  assertEquals(teed, chunks.join("").length);
});

Deno.test("listFiles lists nested files sorted, hidden ones left out, [] for a missing folder", async () => {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-list-files-" });
  try {
    await Deno.mkdir(`${dir}/b/c`, { recursive: true });
    for (const f of ["z.yaml", "b/c/x.yaml", "b/a.yaml", ".state.json"]) {
      await Deno.writeTextFile(`${dir}/${f}`, "");
    }
    assertEquals(await listFiles(dir), ["b/a.yaml", "b/c/x.yaml", "z.yaml"]);
    assertEquals(await listFiles(`${dir}/missing`), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
