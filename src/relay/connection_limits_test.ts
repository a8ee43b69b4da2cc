import type net from "node:net";
import { InvalidInputError } from "../errors.ts";
import { memoryLogger } from "../log.ts";
import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import {
  ConnectionCounter,
  DEFAULT_CONNECTION_LIMITS,
  grpcLimitOptions,
  LimitedListener,
  resolveConnectionLimits,
} from "./connection_limits.ts";
import { MetricsRegistry } from "./metrics.ts";

Deno.test("ConnectionCounter: per-peer and total limits, release, 0 is unlimited", async (t) => {
  await t.step("per peer", () => {
    const c = new ConnectionCounter(
      resolveConnectionLimits({ maxConnectionsPerPeer: 2, maxConnections: 10 }),
    );
    assertEquals([c.acquire("a"), c.acquire("a"), c.acquire("a"), c.acquire("b")], [
      "ok",
      "ok",
      "per_peer",
      "ok",
    ]);
    c.release("a");
    assertEquals(c.acquire("a"), "ok");
    assertEquals([c.of("a"), c.of("b"), c.total], [2, 1, 3]);
  });
  await t.step("total", () => {
    const c = new ConnectionCounter(resolveConnectionLimits({ maxConnectionsPerPeer: 0, maxConnections: 3 }));
    assertEquals(["a", "b", "c", "d"].map((p) => c.acquire(p)), ["ok", "ok", "ok", "total"]);
    c.release("b");
    c.release("b"); // a second release of a gone peer changes nothing
    assertEquals([c.total, c.acquire("d")], [2, "ok"]);
  });
  await t.step("unlimited", () => {
    const c = new ConnectionCounter(resolveConnectionLimits({ maxConnectionsPerPeer: 0, maxConnections: 0 }));
    for (let i = 0; i < 5000; i++) assertEquals(c.acquire("a"), "ok");
  });
});

Deno.test("resolveConnectionLimits: defaults and refusals", () => {
  assertEquals(resolveConnectionLimits(), DEFAULT_CONNECTION_LIMITS);
  assertEquals(resolveConnectionLimits({ idleTimeoutMs: 0 }).idleTimeoutMs, 0);
  for (
    const bad of [{ maxConnections: -1 }, { handshakeTimeoutMs: 0 }, { maxStreamsPerConnection: 0 }, {
      maxConnectionsPerPeer: 1.5,
    }]
  ) {
    assertThrows(() => resolveConnectionLimits(bad), InvalidInputError);
  }
});

Deno.test("grpcLimitOptions: streams always, the idle timeout only when set", async (t) => {
  const cases: { name: string; limits: Parameters<typeof resolveConnectionLimits>[0]; want: object }[] = [
    {
      name: "defaults",
      limits: {},
      want: { "grpc.max_concurrent_streams": 100, "grpc.max_connection_idle_ms": 300_000 },
    },
    {
      name: "set",
      limits: { maxStreamsPerConnection: 7, idleTimeoutMs: 2000 },
      want: { "grpc.max_concurrent_streams": 7, "grpc.max_connection_idle_ms": 2000 },
    },
    // grpc-js reads a present 0 as "close at once"; absent is its "never".
    { name: "no idle timeout", limits: { idleTimeoutMs: 0 }, want: { "grpc.max_concurrent_streams": 100 } },
  ];
  for (const c of cases) {
    await t.step(c.name, () => assertEquals(grpcLimitOptions(resolveConnectionLimits(c.limits)), c.want));
  }
});

async function waitUntil(what: string, cond: () => boolean): Promise<void> {
  const end = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Whether the listener closed `c` (EOF or reset) rather than keeping it. A connection it kept sends
 * nothing, so the read is bounded: false after 5 s instead of a test that hangs.
 */
async function closedByServer(c: Deno.TcpConn): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const kept = new Promise<boolean>((r) => timer = setTimeout(() => r(false), 5_000));
  try {
    return await Promise.race([c.read(new Uint8Array(1)).then((n) => n === null, () => true), kept]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("LimitedListener: closes over-limit connections at accept, warns once per peer and minute", async (t) => {
  let now = 0;
  const log = memoryLogger();
  const metrics = new MetricsRegistry();
  const accepted: net.Socket[] = [];
  const l = await LimitedListener.listen({
    host: "127.0.0.1",
    port: 0,
    limits: resolveConnectionLimits({ maxConnectionsPerPeer: 2, maxConnections: 0 }),
    inject: (s) => accepted.push(s),
    log,
    metrics,
    now: () => now,
  });
  const clients: Deno.TcpConn[] = [];
  const connect = async () => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: l.port });
    clients.push(c);
    return c;
  };
  const warnings = () => log.lines.filter((x) => String(x.msg).startsWith("connection refused")).length;
  const refused = () =>
    /meshrelay_connections_refused_total\{limit="per_peer"\} (\d+)/.exec(metrics.render())?.[1];
  try {
    await t.step("within the limit: handed on", async () => {
      await connect();
      await connect();
      await waitUntil("two handed on", () => accepted.length === 2);
    });
    await t.step("over it: closed at once, counted, one warning", async () => {
      assert(await closedByServer(await connect()));
      assert(await closedByServer(await connect()));
      assertEquals([accepted.length, refused(), warnings()], [2, "2", 1]);
    });
    await t.step("within the minute: still one warning; after it, another", async () => {
      now += 60_000;
      assert(await closedByServer(await connect()));
      assertEquals(warnings(), 1);
      now += 1;
      assert(await closedByServer(await connect()));
      assertEquals([refused(), warnings()], ["4", 2]);
    });
    await t.step("a closed connection gives its slot back", async () => {
      accepted[0].destroy();
      await waitUntil("slot released", () => l.counter.of("127.0.0.1") === 1);
      await connect();
      await waitUntil("handed on again", () => accepted.length === 3);
    });
  } finally {
    for (const c of clients) {
      try {
        c.close();
      } catch { /* closed by the server */ }
    }
    await l.close();
  }
});
