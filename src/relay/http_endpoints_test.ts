import { FakeClock } from "../clock.ts";
import { nullLogger } from "../log.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../testing/assert.ts";
import { UnavailableError } from "../errors.ts";
import { httpHandler, Readiness, serveHttpEndpoints } from "./http_endpoints.ts";
import { MetricsRegistry } from "./metrics.ts";

function setup(clock = new FakeClock()) {
  const metrics = new MetricsRegistry();
  metrics.counter("meshrelay_discovery_pushes_total", "Pushes.").inc(undefined, 4);
  const readiness = new Readiness({ clock, timeoutMs: 1000 });
  return { metrics, readiness, handler: httpHandler({ metrics, readiness, log: nullLogger }), clock };
}

Deno.test("httpHandler routes", async (t) => {
  const cases: {
    name: string;
    method?: string;
    path: string;
    checks?: Record<string, () => boolean | string | Promise<boolean | string>>;
    status: number;
    body?: string[];
    contentType?: string;
  }[] = [
    {
      name: "/metrics serves the registry",
      path: "/metrics",
      status: 200,
      body: ["meshrelay_discovery_pushes_total 4\n"],
      contentType: "text/plain; version=0.0.4; charset=utf-8",
    },
    {
      name: "/healthz is alive even when not ready",
      path: "/healthz",
      checks: { x: () => false },
      status: 200,
    },
    { name: "/readyz with no checks is ready", path: "/readyz", status: 200, body: ["ready\n"] },
    {
      name: "/readyz all checks pass",
      path: "/readyz",
      checks: { config: () => true, grpc: () => Promise.resolve(true) },
      status: 200,
      body: ["[+] config ok", "[+] grpc ok"],
    },
    {
      name: "/readyz names the failing check and its reason",
      path: "/readyz",
      checks: { config: () => true, grpc: () => "not listening yet" },
      status: 503,
      body: ["[-] grpc: not listening yet", "not ready"],
    },
    {
      name: "/readyz: a throwing check is not ready",
      path: "/readyz",
      checks: {
        store: () => {
          throw new Error("store unreadable");
        },
      },
      status: 503,
      body: ["[-] store: store unreadable"],
    },
    { name: "unknown path is 404", path: "/nope", status: 404 },
    { name: "root is 404", path: "/", status: 404 },
    { name: "POST /metrics is 405", method: "POST", path: "/metrics", status: 405 },
    { name: "HEAD /healthz is fine", method: "HEAD", path: "/healthz", status: 200 },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const s = setup();
      for (const [n, fn] of Object.entries(c.checks ?? {})) s.readiness.set(n, fn);
      const res = await s.handler(new Request(`http://x${c.path}`, { method: c.method ?? "GET" }));
      assertEquals(res.status, c.status);
      const body = await res.text();
      for (const part of c.body ?? []) assertStringIncludes(body, part);
      if (c.contentType) assertEquals(res.headers.get("content-type"), c.contentType);
    });
  }
});

Deno.test("Readiness: a hanging check times out through the clock", async () => {
  const s = setup();
  s.readiness.set("slow", () => new Promise(() => {}));
  const pending = s.handler(new Request("http://x/readyz"));
  await s.clock.waitForSleepers(1);
  await s.clock.advance(1000);
  const res = await pending;
  assertEquals(res.status, 503);
  assertStringIncludes(await res.text(), "[-] slow: no answer within 1000 ms");
  assertEquals(s.clock.pending, 0);
});

Deno.test("Readiness: set replaces, delete removes", async () => {
  const r = new Readiness({ clock: new FakeClock() });
  r.set("a", () => false);
  assertEquals((await r.evaluate()).ready, false);
  r.set("a", () => true);
  assertEquals((await r.evaluate()).ready, true);
  r.set("b", () => false);
  r.delete("b");
  assertEquals(await r.evaluate(), { ready: true, results: [{ name: "a", ok: true }] });
});

Deno.test("serveHttpEndpoints listens on 127.0.0.1 and closes", async () => {
  const s = setup(new FakeClock());
  let listening = false;
  s.readiness.set("grpc", () => listening || "not listening");
  const srv = await serveHttpEndpoints({
    hostname: "127.0.0.1",
    port: 0,
    metrics: s.metrics,
    readiness: s.readiness,
    log: nullLogger,
  });
  try {
    assert(srv.port > 0);
    const get = async (p: string) => {
      const r = await fetch(`http://127.0.0.1:${srv.port}${p}`);
      return [r.status, await r.text()] as const;
    };
    assertEquals((await get("/readyz"))[0], 503);
    listening = true;
    assertEquals((await get("/readyz"))[0], 200);
    assertEquals(await get("/healthz"), [200, "ok\n"]);
    assertStringIncludes((await get("/metrics"))[1], "# TYPE meshrelay_discovery_pushes_total counter");
    assertEquals((await get("/other"))[0], 404);
  } finally {
    await srv.close();
  }
});

Deno.test("serveHttpEndpoints: a port already taken is one clear error, not an internal one", async () => {
  const s = setup(new FakeClock());
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (taken.addr as Deno.NetAddr).port;
    const e = await assertRejects(
      () =>
        serveHttpEndpoints({
          hostname: "127.0.0.1",
          port,
          metrics: s.metrics,
          readiness: s.readiness,
          log: nullLogger,
        }),
      UnavailableError,
    );
    assertEquals(
      e.message,
      `cannot listen on 127.0.0.1:${port} for /metrics, /healthz, /readyz (port in use or address not available)`,
    );
  } finally {
    taken.close();
  }
});
