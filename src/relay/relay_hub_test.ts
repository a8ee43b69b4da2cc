import { FakeClock } from "../clock.ts";
import { GrpcStatus, PermissionDeniedError, UnavailableError } from "../errors.ts";
import { nullLogger } from "../log.ts";
import { assert, assertEquals, assertStringIncludes, assertThrows } from "../testing/assert.ts";
import { MetricsRegistry } from "./metrics.ts";
import { RelayHub, type SyncSession } from "./relay_hub.ts";
import { MemoryConfigSource, objects as o } from "./testing_sync.ts";
import { versionedMap } from "../state/mod.ts";

class FakeSession implements SyncSession {
  notified = 0;
  closed?: { code: number; message: string };
  constructor(readonly cluster: string) {}
  desiredChanged(): void {
    this.notified++;
  }
  close(code: number, message: string): void {
    this.closed ??= { code, message };
  }
}

const baseConfig = () => [
  o.cluster("c1"),
  o.cluster("c2"),
  o.federation(),
  o.clusterConfig("base", ["c1", "c2"], [o.configMap("settings", { a: "1" })]),
];

function setup(opts: { warmupMs?: number; debounceMs?: number } = {}) {
  const clock = new FakeClock();
  const config = new MemoryConfigSource(baseConfig());
  const metrics = new MetricsRegistry();
  const hub = new RelayHub({
    config,
    clock,
    log: nullLogger,
    metrics,
    warmupMs: opts.warmupMs ?? 0,
    debounceMs: opts.debounceMs ?? 100,
    firstGeneration: 1,
  });
  const ac = new AbortController();
  return { clock, config, metrics, hub, ac };
}

/** Lets pending promise continuations run (no time passes on the fake clock). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
}

const pushAll = (hub: RelayHub, cluster: string, objs: ReturnType<typeof o.service>[], gen = 1) => {
  const diff = { upserts: [...versionedMap(objs)].map(([key, v]) => ({ key, ...v })), deletes: [] };
  return hub.applyDiscovery(cluster, gen, diff);
};

Deno.test("RelayHub loads config and computes desired state per cluster", async () => {
  const { hub } = setup();
  assertEquals(hub.ready, false);
  await hub.load();
  assert(hub.ready);
  assertEquals(hub.clusters(), ["c1", "c2"]);
  assertEquals(hub.desiredFor("c1")!.generation, 1);
  assertEquals([...hub.desiredFor("c1")!.items.keys()], ["v1|ConfigMap|apps|settings"]);
  assertEquals(hub.desiredFor("nope"), undefined);
  assert(hub.isRegistered("c2"));
  assert(!hub.isRegistered("c3"));
});

Deno.test("RelayHub warm-up holds desired state back until every cluster pushed or time is up", async (t) => {
  await t.step("every cluster pushed", async () => {
    const { hub } = setup({ warmupMs: 30_000 });
    await hub.load();
    const s = new FakeSession("c1");
    hub.attach(s);
    assertEquals(hub.desiredFor("c1"), undefined);
    pushAll(hub, "c1", []);
    assertEquals(hub.serving, false);
    pushAll(hub, "c2", []);
    assert(hub.serving);
    assertEquals(s.notified, 1);
    assert(hub.desiredFor("c1"));
  });
  await t.step("a push split into generations counts only at its last", async () => {
    const { hub } = setup({ warmupMs: 30_000 });
    await hub.load();
    pushAll(hub, "c1", []);
    const part = { upserts: [], deletes: [] };
    hub.applyDiscovery("c2", 1, part, true);
    hub.applyDiscovery("c2", 2, part, true);
    assertEquals(hub.status("c2")!.warmed, false);
    assertEquals(hub.serving, false);
    hub.applyDiscovery("c2", 3, part);
    assertEquals(hub.status("c2")!.warmed, true);
    assert(hub.serving);
  });
  await t.step("time is up", async () => {
    const { hub, clock, ac } = setup({ warmupMs: 30_000 });
    const s = new FakeSession("c2");
    const running = hub.run(ac.signal);
    await clock.waitForSleepers(1);
    hub.attach(s);
    pushAll(hub, "c1", []);
    await clock.advance(29_999);
    assertEquals(hub.serving, false);
    await clock.advance(1);
    assert(hub.serving);
    assertEquals(s.notified, 1);
    ac.abort();
    await running;
  });
});

Deno.test("RelayHub recomputes on changes, coalesced, and wakes only clusters whose state changed", async (t) => {
  const { hub, clock, config, ac, metrics } = setup();
  const running = hub.run(ac.signal);
  await settle();
  const s1 = new FakeSession("c1");
  const s2 = new FakeSession("c2");
  hub.attach(s1);
  hub.attach(s2);
  const listsBefore = config.lists;

  await t.step("a burst of config changes is one recomputation after the quiet period", async () => {
    config.set([...baseConfig(), o.clusterConfig("only-c1", ["c1"], [o.configMap("x")])]);
    await settle();
    config.set([...baseConfig(), o.clusterConfig("only-c1", ["c1"], [o.configMap("y")])]);
    await clock.waitForSleepers(1);
    assertEquals(config.lists, listsBefore);
    await clock.advance(100);
    await settle();
    assertEquals(config.lists, listsBefore + 1);
    assertEquals([s1.notified, s2.notified], [1, 0]);
    assertEquals([...hub.desiredFor("c1")!.items.keys()].sort(), [
      "v1|ConfigMap|apps|settings",
      "v1|ConfigMap|apps|y",
    ]);
    assertEquals(hub.desiredFor("c1")!.generation, 2);
    assertStringIncludes(metrics.render(), 'meshrelay_config_generation{cluster="c1"} 2');
  });

  await t.step("an exported Service discovered in c2 reaches c1's desired state", async () => {
    pushAll(hub, "c2", [o.service("ratings", true)]);
    await clock.waitForSleepers(1);
    await clock.advance(100);
    await settle();
    assertEquals([s1.notified, s2.notified], [2, 0]);
    assert([...hub.desiredFor("c1")!.items.keys()].some((k) => k.includes("ServiceEntry")));
  });

  await t.step("a Deployment change does not trigger a recomputation", async () => {
    const before = hub.desiredFor("c1")!.generation;
    pushAll(hub, "c2", [o.deployment("ratings", 3)], 2);
    await settle();
    assertEquals(clock.pending, 0, "no recomputation was scheduled");
    assertEquals(hub.desiredFor("c1")!.generation, before);
    assertEquals([s1.notified, s2.notified], [2, 0]);
  });

  await t.step(
    "deregistration closes the cluster's stream with PERMISSION_DENIED and forgets it",
    async () => {
      config.set(baseConfig().filter((d) => d.metadata.name !== "c2"));
      await clock.waitForSleepers(1);
      await clock.advance(100);
      await settle();
      assertEquals(s2.closed, { code: GrpcStatus.PERMISSION_DENIED, message: "cluster deregistered" });
      assertEquals(hub.clusters(), ["c1"]);
      assertEquals(hub.status("c2"), undefined);
      assertThrows(() => hub.attach(new FakeSession("c2")), PermissionDeniedError);
      assertThrows(() => pushAll(hub, "c2", []), PermissionDeniedError);
      // c2's exported Service no longer federates into c1.
      assert(![...hub.desiredFor("c1")!.items.keys()].some((k) => k.includes("ServiceEntry")));
    },
  );
  ac.abort();
  await running;
});

Deno.test("RelayHub sessions: one per cluster, disconnect, status", async (t) => {
  const { hub } = setup();
  await hub.load();
  await t.step("a second stream replaces the first, which is closed with ABORTED", () => {
    const a = new FakeSession("c1");
    const b = new FakeSession("c1");
    hub.attach(a);
    hub.attach(b);
    assertEquals(a.closed?.code, GrpcStatus.ABORTED);
    hub.detach(a); // the replaced stream ending must not drop the new one
    assert(hub.isCurrent(b));
    assert(hub.status("c1")!.connected);
  });
  await t.step("disconnect closes with the given reason and code", () => {
    const s = new FakeSession("c2");
    hub.attach(s);
    assert(hub.disconnect("c2", "certificate revoked"));
    assertEquals(s.closed, { code: GrpcStatus.PERMISSION_DENIED, message: "certificate revoked" });
    assert(!hub.disconnect("c2", "again"));
    assertEquals(hub.status("c2")!.connected, false);
  });
  await t.step("status merges the agent's report with objects too large to send", () => {
    hub.recordStatus("c1", 1, [
      { key: "a", state: "applied" },
      { key: "b", state: "failed", message: "nope" },
      { key: "big", state: "applied" },
    ]);
    hub.recordSent("c1", 1, [{ key: "big", bytes: 5_000_000, maxBytes: 4_194_304 }]);
    const st = hub.status("c1")!;
    assertEquals(st.reportedGeneration, 1);
    assertEquals(st.failed, 2);
    assertEquals(st.statuses.map((s) => `${s.key}:${s.state}`), ["a:applied", "b:failed", "big:failed"]);
    assertStringIncludes(st.statuses[2].message!, "cannot fit in a message of at most 4194304 bytes");
  });
  await t.step("closeAll ends every stream with UNAVAILABLE and refuses new ones", () => {
    const s = new FakeSession("c2");
    hub.attach(s);
    hub.closeAll();
    assertEquals(s.closed?.code, GrpcStatus.UNAVAILABLE);
    assertThrows(() => hub.attach(new FakeSession("c1")), UnavailableError);
  });
});
