import { assertEquals } from "../testing/assert.ts";
import { resourceVersionOf } from "./canonical.ts";
import { applyVersionDiff, diffByVersion, versionedMap } from "./diff.ts";
import type { VersionedObject } from "./inventory.ts";
import type { KubeObject } from "./types.ts";

const cm = (name: string, v: string): KubeObject => ({
  apiVersion: "v1",
  kind: "ConfigMap",
  metadata: { name, namespace: "n" },
  data: { v },
});
const want = (...objs: KubeObject[]) =>
  new Map<string, VersionedObject>(
    objs.map((o) => [`v1|ConfigMap|n|${o.metadata.name}`, { object: o, version: resourceVersionOf(o) }]),
  );
const have = (...objs: KubeObject[]) => new Map([...want(...objs)].map(([k, v]) => [k, v.version]));

Deno.test("diffByVersion", async (t) => {
  const cases: [string, Map<string, string>, Map<string, VersionedObject>, string[], string[]][] = [
    ["empty peer gets everything", have(), want(cm("b", "1"), cm("a", "1")), [
      "v1|ConfigMap|n|a",
      "v1|ConfigMap|n|b",
    ], []],
    ["in sync: nothing", have(cm("a", "1")), want(cm("a", "1")), [], []],
    [
      "changed version is sent, same is not",
      have(cm("a", "1"), cm("b", "1")),
      want(cm("a", "2"), cm("b", "1")),
      [
        "v1|ConfigMap|n|a",
      ],
      [],
    ],
    ["extra at the peer is deleted", have(cm("a", "1"), cm("z", "1"), cm("y", "1")), want(cm("a", "1")), [], [
      "v1|ConfigMap|n|y",
      "v1|ConfigMap|n|z",
    ]],
    ["want nothing: delete all", have(cm("a", "1")), want(), [], ["v1|ConfigMap|n|a"]],
  ];
  for (const [name, h, w, upserts, deletes] of cases) {
    await t.step(name, () => {
      const d = diffByVersion(h, w);
      assertEquals(d.upserts.map((u) => u.key), upserts);
      assertEquals(d.deletes, deletes);
      for (const u of d.upserts) assertEquals(u.version, w.get(u.key)!.version);
    });
  }
  await t.step("applying the diff to the peer makes it equal to want", () => {
    const h = have(cm("a", "1"), cm("z", "1"));
    const w = want(cm("a", "2"), cm("b", "1"));
    const d = diffByVersion(h, w);
    for (const k of d.deletes) h.delete(k);
    for (const u of d.upserts) h.set(u.key, u.version);
    assertEquals(h, have(cm("a", "2"), cm("b", "1")));
    assertEquals(diffByVersion(h, w), { upserts: [], deletes: [] });
  });
});

Deno.test("applyVersionDiff and versionedMap", async (t) => {
  await t.step("the receiver converges to want, re-applying is a no-op", () => {
    const held = want(cm("a", "1"), cm("z", "1"));
    const w = versionedMap([cm("b", "1"), cm("a", "2")]);
    const d = diffByVersion(new Map([...held].map(([k, v]) => [k, v.version])), w);
    const after = applyVersionDiff(held, d);
    assertEquals([...after.keys()], ["v1|ConfigMap|n|a", "v1|ConfigMap|n|b"]);
    assertEquals(after, new Map([...w].sort(([a], [b]) => a < b ? -1 : 1)));
    assertEquals(applyVersionDiff(after, d), after);
  });
  await t.step("versionedMap keeps the last duplicate", () => {
    const m = versionedMap([cm("a", "1"), cm("a", "2")]);
    assertEquals(m.get("v1|ConfigMap|n|a")!.object.data, { v: "2" });
  });
});
