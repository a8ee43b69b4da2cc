import { assert, assertEquals, assertNotEquals } from "../testing/assert.ts";
import { canonicalJson, contentHash, resourceVersionOf } from "./canonical.ts";

Deno.test("canonicalJson", async (t) => {
  const cases: [string, unknown, string][] = [
    [
      "sorts keys at every level",
      { b: 1, a: { d: [1, { z: 1, y: 2 }], c: null } },
      '{"a":{"c":null,"d":[1,{"y":2,"z":1}]},"b":1}',
    ],
    ["drops undefined members", { a: undefined, b: 2 }, '{"b":2}'],
    ["keeps array order", [3, 1, 2], "[3,1,2]"],
    ["scalars", "x", '"x"'],
  ];
  for (const [name, input, want] of cases) {
    await t.step(name, () => assertEquals(canonicalJson(input), want));
  }
});

Deno.test("contentHash and resourceVersionOf", async (t) => {
  const a = { apiVersion: "v1", kind: "Service", metadata: { name: "x", namespace: "n" }, spec: { p: 1 } };
  const reordered = {
    spec: { p: 1 },
    metadata: { namespace: "n", name: "x" },
    kind: "Service",
    apiVersion: "v1",
  };
  await t.step(
    "independent of key order",
    () => assertEquals(resourceVersionOf(a), resourceVersionOf(reordered)),
  );
  await t.step(
    "changes with content",
    () => assertNotEquals(resourceVersionOf(a), resourceVersionOf({ ...a, spec: { p: 2 } })),
  );
  await t.step("is 32 hex chars", () => assert(/^[0-9a-f]{32}$/.test(contentHash(a))));
  await t.step(
    "equals sha256 of the canonical bytes (other implementations can agree)",
    () => assertEquals(contentHash({ b: 1, a: 2 }), "d3626ac30a87e6f7a6428233b3c68299"),
  );
});
