import { ResourceExhaustedError } from "../errors.ts";
import { assert, assertEquals, assertStringIncludes, assertThrows } from "../testing/assert.ts";
import { chunkBySize, jsonSize } from "./chunk.ts";

Deno.test("chunkBySize", async (t) => {
  const id = (n: number) => n;
  const cases: [string, number[], number, number, number[][]][] = [
    ["no items, no chunks", [], 10, 0, []],
    ["everything fits in one", [1, 2, 3], 10, 0, [[1, 2, 3]]],
    ["exact fit stays in one chunk", [5, 5], 10, 0, [[5, 5]]],
    ["splits in order, filling greedily", [6, 4, 3, 8, 2], 10, 0, [[6, 4], [3], [8, 2]]],
    ["per-chunk overhead counts", [4, 4, 4], 10, 2, [[4, 4], [4]]],
    ["an item exactly at the limit is alone", [1, 10, 1], 10, 0, [[1], [10], [1]]],
    ["zero-size items", [0, 0, 10, 0], 10, 0, [[0, 0, 10, 0]]],
  ];
  for (const [name, items, max, base, want] of cases) {
    await t.step(name, () => assertEquals(chunkBySize(items, max, id, { baseBytes: base }), want));
  }
  const fills: [string, number[], number, number, number[][]][] = [
    ["fill target below the limit starts chunks early", [3, 3, 3, 3], 100, 6, [[3, 3], [3, 3]]],
    ["an item over the fill target travels alone", [2, 9, 2, 2], 100, 5, [[2], [9], [2, 2]]],
    ["a fill target above the limit is the limit", [6, 4, 3], 10, 50, [[6, 4], [3]]],
  ];
  for (const [name, items, max, fill, want] of fills) {
    await t.step(name, () => assertEquals(chunkBySize(items, max, id, { fillBytes: fill }), want));
  }
  await t.step("a fill target not above the overhead: one item per chunk", () => {
    assertEquals(chunkBySize([1, 2, 3], 100, id, { baseBytes: 5, fillBytes: 5 }), [[1], [2], [3]]);
  });
  await t.step("no chunk ever exceeds the limit (random sizes)", () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let round = 0; round < 200; round++) {
      const items = Array.from({ length: Math.floor(rnd() * 50) }, () => Math.floor(rnd() * 100));
      const chunks = chunkBySize(items, 120, id, { baseBytes: 20 });
      for (const c of chunks) assert(20 + c.reduce((a, b) => a + b, 0) <= 120);
      assertEquals(chunks.flat(), items);
    }
  });
  await t.step("an item that cannot fit is a clear error naming it", () => {
    const e = assertThrows(
      () => chunkBySize(["a", "bbbbbbbbbbbb"], 10, (s) => s.length, { describe: (_s, i) => `object #${i}` }),
      ResourceExhaustedError,
    );
    assertStringIncludes(e.message, "object #1 is 12 bytes and cannot fit in a message of at most 10 bytes");
  });
  await t.step("with overhead, an item that fits alone only without it is refused", () => {
    assertThrows(() => chunkBySize([9], 10, id, { baseBytes: 2 }), ResourceExhaustedError);
  });
  await t.step("a limit not above the overhead is a programming error", () => {
    assertThrows(() => chunkBySize([1], 2, id, { baseBytes: 2 }), RangeError);
  });
});

Deno.test("jsonSize counts UTF-8 bytes", async (t) => {
  const cases: [string, unknown, number][] = [
    ["ascii", { a: "b" }, 9],
    ["multi-byte", "é", 4],
  ];
  for (const [name, v, want] of cases) await t.step(name, () => assertEquals(jsonSize(v), want));
});
