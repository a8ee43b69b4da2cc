import { InvalidInputError } from "../errors.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import {
  ConnectionCounter,
  DEFAULT_CONNECTION_LIMITS,
  resolveConnectionLimits,
} from "./connection_limits.ts";

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
