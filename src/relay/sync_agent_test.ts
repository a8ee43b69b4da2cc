import { FakeClock } from "../clock.ts";
import { GrpcStatus } from "../errors.ts";
import { memoryLogger, nullLogger } from "../log.ts";
import { objectKey } from "../state/mod.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { MetricsRegistry } from "./metrics.ts";
import { type SessionEnd, SyncAgent, type SyncDialer } from "./sync_agent.ts";
import {
  MemoryApplier,
  MemoryDiscoverySource,
  objects as o,
  startTestRelay,
  testDialer,
  type TestRelay,
} from "./testing_sync.ts";

/** A fake clock that remembers every requested sleep. */
class RecordingClock extends FakeClock {
  sleeps: number[] = [];
  override sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    return super.sleep(ms, signal);
  }
}

async function waitUntil(pred: () => boolean, what = "condition"): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`${what} not reached`);
}

/** `p`, or a failure naming `what` if it has not settled after a generous bound (a hang, not a timing). */
async function settles<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle`)), 10_000);
  });
  try {
    return await Promise.race([p, bound]);
  } finally {
    clearTimeout(timer);
  }
}

type Env = TestRelay;

function server(opts: { maxMessageBytes?: number } = {}): Promise<Env> {
  return startTestRelay([
    o.cluster("c1"),
    o.clusterConfig("base", ["c1"], [o.configMap("a"), o.configMap("b")]),
  ], opts);
}

function agentFor(
  dial: SyncDialer,
  clock: FakeClock,
  extra: Partial<ConstructorParameters<typeof SyncAgent>[0]> = {},
) {
  const discovery = new MemoryDiscoverySource([o.service("web", true), o.deployment("web")]);
  const applier = new MemoryApplier();
  const ends: SessionEnd[] = [];
  const agent = new SyncAgent({
    dial,
    discovery,
    applier,
    clock,
    random: () => 0.5,
    log: nullLogger,
    agentVersion: "test",
    stopGraceMs: 0,
    onSessionEnd: (e) => ends.push(e),
    ...extra,
  });
  return { agent, discovery, applier, ends };
}

Deno.test("SyncAgent backs off with full jitter between failed attempts and resets after a healthy session", async (t) => {
  const env = await server();
  const clock = new RecordingClock();
  let dials = 0;
  let failNext = 3;
  const real = testDialer("c1", () => env.srv.port);
  const dial: SyncDialer = (signal) => {
    dials++;
    if (failNext > 0) {
      failNext--;
      throw new Error("connection refused");
    }
    return real(signal);
  };
  const { agent, ends } = agentFor(dial, clock);
  const ac = new AbortController();
  const run = agent.run(ac.signal);
  try {
    await t.step("failed dials wait 0.5 × 500, 1000, 2000 ms (random() = 0.5)", async () => {
      for (const want of [250, 500, 1000]) {
        await clock.waitForSleepers(1);
        assertEquals(clock.sleeps.at(-1), want);
        await clock.advance(want);
      }
      await waitUntil(() => agent.state === "synced", "synced");
      assertEquals(dials, 4);
      assertEquals(ends.map((e) => e.nextDelayMs), [250, 500, 1000]);
    });
    await t.step("after a healthy session the next wait starts over at the first ceiling", async () => {
      env.hub.disconnect("c1", "test cut", GrpcStatus.UNAVAILABLE);
      await clock.waitForSleepers(1);
      assertEquals(clock.sleeps.at(-1), 250);
      assertEquals(ends.at(-1)!.synced, true);
      assertEquals(ends.at(-1)!.code, GrpcStatus.UNAVAILABLE);
      await clock.advance(250);
      await waitUntil(() => agent.state === "synced", "synced again");
      assertEquals(dials, 5);
    });
    await t.step("reconnect() skips the wait and dials again through the factory", async () => {
      agent.reconnect("client certificate renewed");
      await waitUntil(() => dials === 6 && agent.state === "synced", "redialed");
      assertEquals(ends.at(-1)!.nextDelayMs, 0);
    });
  } finally {
    ac.abort();
    await run;
    await env.stop();
  }
  assertEquals(agent.state, "stopped");
});

Deno.test("SyncAgent keeps the server's inventory equal to what it discovers", async (t) => {
  const env = await server();
  const clock = new FakeClock();
  const { agent, discovery, applier } = agentFor(testDialer("c1", () => env.srv.port), clock);
  const ac = new AbortController();
  const run = agent.run(ac.signal);
  const converged = () => {
    const inv = env.hub.inventoryVersions("c1");
    const local = discovery.versions();
    return inv.size === local.size && [...local].every(([k, v]) => inv.get(k) === v);
  };
  try {
    await t.step("initial push and desired state applied", async () => {
      await waitUntil(() => agent.state === "synced" && converged(), "initial sync");
      assertEquals([...applier.applied.keys()].sort(), ["v1|ConfigMap|apps|a", "v1|ConfigMap|apps|b"]);
    });
    await t.step("watched upserts and deletes are pushed as differences", async () => {
      const before = agent.stats.discoveryObjectsSent;
      discovery.upsert(o.service("api", false));
      discovery.remove(objectKey(o.deployment("web")));
      await waitUntil(converged, "deltas pushed");
      assertEquals(agent.stats.discoveryObjectsSent - before, 1);
    });
    await t.step("a watch that lost track re-snapshots and pushes only the difference", async () => {
      const before = agent.stats;
      discovery.replaceAndResync([o.service("web", true), o.service("api", false), o.service("db", false)]);
      await waitUntil(converged, "resync pushed");
      assertEquals(agent.stats.discoveryObjectsSent - before.discoveryObjectsSent, 1);
      assertEquals(agent.stats.discoveryDeletesSent - before.discoveryDeletesSent, 0);
      assertEquals(agent.discovered(), discovery.versions());
    });
    await t.step("a config change is applied and its statuses reported, failures included", async () => {
      applier.failKeys.add("v1|ConfigMap|apps|c");
      env.config.set([
        o.cluster("c1"),
        o.clusterConfig("base", ["c1"], [o.configMap("a"), o.configMap("c")]),
      ]);
      await waitUntil(() => applier.calls.at(-1)?.includes("v1|ConfigMap|apps|c") === true, "applied");
      await waitUntil(() => env.hub.status("c1")!.failed === 1, "status reported");
      const st = env.hub.status("c1")!;
      assertEquals(st.statuses.map((s) => `${s.key} ${s.state}`), [
        "v1|ConfigMap|apps|a applied",
        "v1|ConfigMap|apps|b pruned",
        "v1|ConfigMap|apps|c failed",
      ]);
      assertEquals(st.reportedGeneration, env.hub.desiredFor("c1")!.generation);
    });
  } finally {
    ac.abort();
    await run;
    await env.stop();
  }
});

Deno.test("SyncAgent: an object too large to push is logged once and never blocks the rest", async () => {
  const env = await server({ maxMessageBytes: 2048 });
  const clock = new FakeClock();
  const log = memoryLogger();
  const { agent, discovery } = agentFor(
    testDialer("c1", () => env.srv.port, { maxMessageBytes: 2048 }),
    clock,
    {
      log,
      maxMessageBytes: 2048,
    },
  );
  // A Service's content is read by the server, so it must travel whole: this one cannot.
  const huge = o.service("huge", true);
  huge.metadata.annotations = { blob: "x".repeat(5000) };
  discovery.upsert(huge);
  // A ConfigMap as large travels as its version alone (the server keeps nothing else of it).
  discovery.upsert(o.configMap("large", { blob: "x".repeat(5000) }));
  const ac = new AbortController();
  const run = agent.run(ac.signal);
  try {
    await waitUntil(() => agent.state === "synced", "synced");
    discovery.upsert(o.service("later", false));
    await waitUntil(
      () => env.hub.inventoryVersions("c1").has(objectKey(o.service("later", false))),
      "pushed",
    );
    const inv = env.hub.inventoryVersions("c1");
    assert(!inv.has("v1|Service|apps|huge"));
    assertEquals(inv.get("v1|ConfigMap|apps|large"), discovery.versions().get("v1|ConfigMap|apps|large"));
    assertEquals(inv.size, discovery.versions().size - 1);
    const lines = log.lines.filter((l) =>
      l.msg === "discovered object too large to push; the server will not see it"
    );
    assertEquals(lines.length, 1);
    assertEquals(lines[0].key, "v1|Service|apps|huge");
  } finally {
    ac.abort();
    await run;
    await env.stop();
  }
});

Deno.test("SyncAgent stops gracefully: the server sees the stream end, not an error", async () => {
  const env = await server();
  const metrics = new MetricsRegistry();
  const { agent } = agentFor(testDialer("c1", () => env.srv.port), new FakeClock(), { metrics });
  const ac = new AbortController();
  const run = agent.run(ac.signal);
  await waitUntil(() => agent.state === "synced", "synced");
  assert(metrics.render().includes("meshrelay_agent_connected 1"));
  ac.abort();
  await run;
  await waitUntil(() => !env.hub.status("c1")!.connected, "server saw the end");
  assertEquals(agent.state, "stopped");
  assert(!env.metrics.render().includes("meshrelay_stream_errors_total{"), "no stream error counted");
  assert(metrics.render().includes("meshrelay_agent_connected 0"));
  await env.stop();
});

Deno.test("SyncAgent: stop and reconnect() that land while a dial is in progress are not lost", async (t) => {
  const env = await server();
  try {
    await t.step("stop during the dial: run() still returns", async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => release = r);
      let dialing = false;
      const real = testDialer("c1", () => env.srv.port);
      const { agent } = agentFor(
        async (signal) => {
          dialing = true;
          await gate;
          return real(signal);
        },
        new FakeClock(),
        { stopGraceMs: 0 },
      );
      const ac = new AbortController();
      const run = agent.run(ac.signal);
      await waitUntil(() => dialing, "dialing");
      ac.abort();
      release();
      await settles(run, "run() after a stop during the dial");
      assertEquals(agent.state, "stopped");
    });
    await t.step("reconnect() during the dial ends that stream and dials again", async () => {
      let dials = 0;
      let release!: () => void;
      let gate = new Promise<void>((r) => release = r);
      const real = testDialer("c1", () => env.srv.port);
      const { agent, ends } = agentFor(
        async (signal) => {
          dials++;
          await gate;
          return real(signal);
        },
        new FakeClock(),
        { stopGraceMs: 0 },
      );
      const ac = new AbortController();
      const run = agent.run(ac.signal);
      try {
        await waitUntil(() => dials === 1, "first dial");
        agent.reconnect("certificate renewed during the dial");
        const first = release;
        gate = Promise.resolve();
        first();
        await waitUntil(() => dials === 2 && agent.state === "synced", "second dial in sync");
        assertEquals(ends[0].code, GrpcStatus.CANCELLED);
        assertEquals(ends[0].nextDelayMs, 0);
      } finally {
        ac.abort();
        await run;
      }
    });
  } finally {
    await env.stop();
  }
});

Deno.test("SyncAgent pushes whole only what the server reads; the rest as versions, the same inventory", async () => {
  const env = await server();
  const clock = new FakeClock();
  const { agent, discovery } = agentFor(testDialer("c1", () => env.srv.port), clock);
  // About 16 KB as whole objects; as key and version alone, two generations at most.
  for (let i = 0; i < 40; i++) discovery.upsert(o.configMap(`m${i}`, { pad: "x".repeat(300) }));
  discovery.upsert(o.service("web", true));
  const ac = new AbortController();
  const run = agent.run(ac.signal);
  try {
    await waitUntil(() => agent.state === "synced", "synced");
    assertEquals(env.hub.inventoryVersions("c1"), discovery.versions());
    assertEquals(agent.stats.discoveryObjectsSent, discovery.versions().size);
    assert(agent.stats.discoveryBytesSent < 5000, `${agent.stats.discoveryBytesSent} bytes sent`);
    assert(agent.stats.discoveryGenerationsSent <= 2, `${agent.stats.discoveryGenerationsSent} generations`);
    // A change to a version-only object is a change on the server too.
    discovery.upsert(o.configMap("m0", { pad: "changed" }));
    await waitUntil(
      () =>
        env.hub.inventoryVersions("c1").get("v1|ConfigMap|apps|m0") ===
          discovery.versions().get("v1|ConfigMap|apps|m0"),
      "changed version pushed",
    );
  } finally {
    ac.abort();
    await run;
    await env.stop();
  }
});

Deno.test("SyncAgent splits a large push into acknowledged generations and is in sync only after the last", async () => {
  const env = await server();
  const clock = new FakeClock();
  const { agent, discovery } = agentFor(testDialer("c1", () => env.srv.port), clock);
  // About 16 KB of Services (the server reads their content, so they travel whole): four or more
  // generations of DISCOVERY_PUSH_BYTES.
  for (let i = 0; i < 40; i++) {
    const svc = o.service(`s${i}`, false);
    svc.metadata.annotations = { pad: "x".repeat(300) };
    discovery.upsert(svc);
  }
  const ac = new AbortController();
  const run = agent.run(ac.signal);
  try {
    await waitUntil(() => agent.state === "synced", "synced");
    // Checked at once, not waited for: "synced" must mean the server holds the whole push.
    const inv = env.hub.inventoryVersions("c1");
    assertEquals(inv, discovery.versions());
    assertEquals(env.hub.status("c1")!.warmed, true);
    const generations = agent.stats.discoveryGenerationsSent;
    assert(generations >= 4, `${generations} generations`);
    assertEquals(agent.stats.discoveryObjectsSent, discovery.versions().size);
  } finally {
    ac.abort();
    await run;
    await env.stop();
  }
});
