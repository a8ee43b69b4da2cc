import { assertEquals, assertNotEquals } from "../testing/assert.ts";
import { resourceVersionOf } from "./canonical.ts";
import { diffByVersion, versionedMap } from "./diff.ts";
import { Inventory } from "./inventory.ts";
import type { DiscoveryEvent, KubeObject } from "./types.ts";

const svc = (name: string, port = 80): KubeObject => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: "n" },
  spec: { ports: [{ port }] },
});
const key = (name: string) => `v1|Service|n|${name}`;

Deno.test("Inventory.applySnapshot", async (t) => {
  const inv = new Inventory();
  const steps: [string, KubeObject[], { upserts: string[]; deletes: string[] }, string[]][] = [
    ["first snapshot upserts all", [svc("b"), svc("a")], { upserts: [key("a"), key("b")], deletes: [] }, [
      "a",
      "b",
    ]],
    ["re-sent identical snapshot changes nothing", [svc("a"), svc("b")], { upserts: [], deletes: [] }, [
      "a",
      "b",
    ]],
    ["duplicates in a snapshot: last wins", [svc("a"), svc("a", 81), svc("c")], {
      upserts: [key("a"), key("c")],
      deletes: [key("b")],
    }, ["a", "c"]],
    ["empty snapshot deletes all", [], { upserts: [], deletes: [key("a"), key("c")] }, []],
  ];
  for (const [name, objs, change, names] of steps) {
    await t.step(name, () => {
      assertEquals(inv.applySnapshot(objs), change);
      assertEquals(inv.objects().map((o) => o.metadata.name), names);
    });
  }
});

Deno.test("Inventory.applyDeltas", async (t) => {
  const inv = new Inventory();
  inv.applySnapshot([svc("a"), svc("b")]);
  const steps: [string, DiscoveryEvent[], { upserts: string[]; deletes: string[] }][] = [
    ["update and delete", [{ type: "upsert", object: svc("a", 81) }, { type: "delete", key: key("b") }], {
      upserts: [key("a")],
      deletes: [key("b")],
    }],
    ["replayed deltas change nothing", [{ type: "upsert", object: svc("a", 81) }, {
      type: "delete",
      key: key("b"),
    }], {
      upserts: [],
      deletes: [],
    }],
    ["upsert then delete of a new key nets to nothing", [
      { type: "upsert", object: svc("z") },
      { type: "delete", key: key("z") },
    ], { upserts: [], deletes: [] }],
    ["change and change back nets to nothing", [
      { type: "upsert", object: svc("a", 1) },
      { type: "upsert", object: svc("a", 81) },
    ], { upserts: [], deletes: [] }],
  ];
  for (const [name, evs, change] of steps) {
    await t.step(name, () => assertEquals(inv.applyDeltas(evs), change));
  }
  await t.step("versions are content hashes", () => {
    assertEquals(inv.versions(), new Map([[key("a"), resourceVersionOf(svc("a", 81))]]));
  });
  await t.step("digest follows content", () => {
    const other = new Inventory();
    other.applySnapshot([svc("a", 81)]);
    assertEquals(other.digest(), inv.digest());
    other.applyDeltas([{ type: "upsert", object: svc("a", 82) }]);
    assertNotEquals(other.digest(), inv.digest());
  });
  await t.step("stored objects do not alias callers'", () => {
    const o = svc("q");
    inv.applyDeltas([{ type: "upsert", object: o }]);
    o.metadata.name = "changed";
    inv.get(key("q"))!.object.metadata.name = "changed";
    assertEquals(inv.get(key("q"))!.object.metadata.name, "q");
  });
});

Deno.test("Inventory.applyDiff from diffByVersion converges the server's copy", () => {
  const server = new Inventory();
  server.applySnapshot([svc("a"), svc("b")]);
  const agentNow = [svc("a", 90), svc("c")];
  const d = diffByVersion(server.versions(), versionedMap(agentNow));
  assertEquals(server.applyDiff(d), { upserts: [key("a"), key("c")], deletes: [key("b")] });
  const fresh = new Inventory();
  fresh.applySnapshot(agentNow);
  assertEquals(server.digest(), fresh.digest());
  assertEquals(server.applyDiff(d), { upserts: [], deletes: [] });
});

Deno.test("Inventory keeps content only where keepContent says", async (t) => {
  const deploy = (name: string, replicas = 1): KubeObject => ({
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace: "n" },
    spec: { replicas },
  });
  const dkey = (name: string) => `apps/v1|Deployment|n|${name}`;
  const keepServices = (k: string) => k.startsWith("v1|Service|");
  const full = new Inventory();
  const slim = new Inventory({ keepContent: keepServices });
  for (const inv of [full, slim]) inv.applySnapshot([svc("a"), deploy("d")]);

  await t.step("versions and digest do not depend on what is kept", () => {
    assertEquals(slim.versions(), full.versions());
    assertEquals(slim.digest(), full.digest());
    assertEquals(slim.size, 2);
    assertEquals(slim.versions().get(dkey("d")), resourceVersionOf(deploy("d")));
  });
  await t.step("objects and entries hold only the kept kinds", () => {
    assertEquals(slim.objects(), [svc("a")]);
    assertEquals([...slim.entries().keys()], [key("a")]);
    assertEquals(slim.get(dkey("d")), undefined);
    assertEquals(full.get(dkey("d"))?.object, deploy("d"));
  });
  await t.step("kept objects come sorted by key, whatever order they arrived in", () => {
    const mixed = new Inventory({ keepContent: keepServices });
    mixed.applyDeltas(["c", "a", "b"].flatMap((n) => [
      { type: "upsert" as const, object: deploy(n) },
      { type: "upsert" as const, object: svc(n) },
    ]));
    assertEquals([...mixed.entries().keys()], [key("a"), key("b"), key("c")]);
    assertEquals(mixed.objects(), [svc("a"), svc("b"), svc("c")]);
  });
  const steps: [string, DiscoveryEvent[], { upserts: string[]; deletes: string[] }][] = [
    ["a re-sent version-only object changes nothing", [{ type: "upsert", object: deploy("d") }], {
      upserts: [],
      deletes: [],
    }],
    ["a changed version-only object is a change", [{ type: "upsert", object: deploy("d", 2) }], {
      upserts: [dkey("d")],
      deletes: [],
    }],
    ["deleting it is a delete", [{ type: "delete", key: dkey("d") }], { upserts: [], deletes: [dkey("d")] }],
  ];
  for (const [name, events, want] of steps) {
    await t.step(name, () => {
      assertEquals(slim.applyDeltas(events), want);
      full.applyDeltas(events);
      assertEquals(slim.digest(), full.digest());
    });
  }
  await t.step("a snapshot compares versions of version-only objects", () => {
    assertEquals(slim.applySnapshot([svc("a"), deploy("e")]), { upserts: [dkey("e")], deletes: [] });
    assertEquals(slim.applySnapshot([svc("a"), deploy("e")]), { upserts: [], deletes: [] });
  });
});
