import { FakeClock } from "../clock.ts";
import { InvalidInputError, ResourceExhaustedError } from "../errors.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import { AdmissionGate, type AdmissionGateOptions, DEFAULT_ADMISSION } from "./admission.ts";
import { MetricsRegistry } from "./metrics.ts";

const BUSY = "server busy signing certificates, retry later";

/** A promise settled from outside. */
function deferred() {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every ready continuation run (event-loop turns, not time). */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((r) => setTimeout(r, 0));
}

/** A gate plus jobs that run until the test finishes them, recording the order they started in. */
function rig(opts: Partial<AdmissionGateOptions> = {}) {
  const clock = new FakeClock();
  const metrics = new MetricsRegistry();
  const gate = new AdmissionGate({ clock, metrics, busyMessage: BUSY, ...opts });
  const started: string[] = [];
  const gates = new Map<string, ReturnType<typeof deferred>>();
  /** Submits job `name`; its outcome ("ok", "busy", "aborted" or the error message) resolves `done`. */
  const submit = (name: string, signal?: AbortSignal) => {
    const d = deferred();
    gates.set(name, d);
    const done = gate.run(() => {
      started.push(name);
      return d.promise;
    }, signal).then(
      () => "ok",
      (e) =>
        e instanceof ResourceExhaustedError
          ? `busy: ${e.message}`
          : e === signal?.reason
          ? "aborted"
          : `error: ${(e as Error).message}`,
    );
    return done;
  };
  const finish = async (name: string, error?: Error) => {
    const d = gates.get(name)!;
    if (error) d.reject(error);
    else d.resolve();
    await settle();
  };
  const metric = (name: string, labels = "") => {
    const line = metrics.render().split("\n").find((l) =>
      l.startsWith(`${name}{`) && l.includes(`gate="signing"`) && l.includes(labels)
    );
    return line ? Number(line.split(" ").pop()) : 0;
  };
  return { clock, gate, started, submit, finish, metric };
}

Deno.test("admission gate: at most maxConcurrent run, the rest wait in FIFO order", async (t) => {
  await t.step("limits: two run, two wait, gauges agree", async () => {
    const r = rig({ maxConcurrent: 2, maxQueued: 10 });
    const done = ["a", "b", "c", "d"].map((n) => r.submit(n));
    await settle();
    assertEquals(r.started, ["a", "b"]);
    assertEquals([r.gate.inFlight, r.gate.queued], [2, 2]);
    assertEquals([r.metric("meshrelay_admission_in_flight"), r.metric("meshrelay_admission_queued")], [2, 2]);
    for (const n of ["a", "b", "c", "d"]) await r.finish(n);
    assertEquals(await Promise.all(done), ["ok", "ok", "ok", "ok"]);
    assertEquals([r.gate.inFlight, r.gate.queued], [0, 0]);
    assertEquals([r.metric("meshrelay_admission_in_flight"), r.metric("meshrelay_admission_queued")], [0, 0]);
  });

  await t.step("FIFO: waiters start in arrival order, and a newcomer never overtakes a waiter", async () => {
    const r = rig({ maxConcurrent: 1, maxQueued: 10 });
    const done = ["a", "b", "c"].map((n) => r.submit(n));
    await settle();
    await r.finish("a");
    // The slot a freed went to b, so d (arriving now) queues behind c.
    done.push(r.submit("d"));
    await settle();
    assertEquals(r.started, ["a", "b"]);
    for (const n of ["b", "c", "d"]) await r.finish(n);
    assertEquals(r.started, ["a", "b", "c", "d"]);
    assertEquals(await Promise.all(done), ["ok", "ok", "ok", "ok"]);
  });

  await t.step("release on error: a throwing call frees its slot for the next", async () => {
    const r = rig({ maxConcurrent: 1, maxQueued: 10 });
    const a = r.submit("a");
    const b = r.submit("b");
    await settle();
    await r.finish("a", new Error("bad CSR"));
    assertEquals(await a, "error: bad CSR");
    assertEquals(r.started, ["a", "b"]);
    assertEquals(r.gate.inFlight, 1);
    await r.finish("b");
    assertEquals(await b, "ok");
    assertEquals(r.gate.inFlight, 0);
  });
});

Deno.test("admission gate: refuses fast when busy", async (t) => {
  const cases: {
    name: string;
    maxQueued: number;
    run: (r: ReturnType<typeof rig>) => Promise<string[]>;
    reason: string;
  }[] = [
    {
      name: "queue full: the call beyond maxQueued is refused at once",
      maxQueued: 1,
      run: async (r) => {
        const a = r.submit("a");
        const b = r.submit("b");
        const c = await r.submit("c"); // settles without any slot freed
        await r.finish("a");
        await r.finish("b");
        return [await a, await b, c];
      },
      reason: "queue_full",
    },
    {
      name: "no queue (maxQueued 0): refused whenever every slot is taken",
      maxQueued: 0,
      run: async (r) => {
        const a = r.submit("a");
        const b = await r.submit("b");
        await r.finish("a");
        return [await a, b];
      },
      reason: "queue_full",
    },
    {
      name: "wait expiry: a waiter is refused after maxWaitMs on the clock, not before",
      maxQueued: 10,
      run: async (r) => {
        const a = r.submit("a");
        let bDone: string | undefined;
        const b = r.submit("b").then((o) => bDone = o);
        await r.clock.waitForSleepers(1);
        await r.clock.advance(999);
        assertEquals([bDone, r.gate.queued], [undefined, 1]);
        await r.clock.advance(1);
        await b;
        assertEquals([r.gate.queued, r.clock.pending], [0, 0]);
        await r.finish("a");
        assertEquals(r.started, ["a"], "the expired waiter never runs");
        return [await a, bDone!];
      },
      reason: "wait_expired",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const r = rig({ maxConcurrent: 1, maxQueued: c.maxQueued, maxWaitMs: 1000 });
      const outcomes = await c.run(r);
      assertEquals(outcomes.slice(0, -1).every((o) => o === "ok"), true, JSON.stringify(outcomes));
      assertEquals(outcomes.at(-1), `busy: ${BUSY}`);
      assertEquals(r.metric("meshrelay_admission_refused_total", `reason="${c.reason}"`), 1);
      assertEquals([r.gate.inFlight, r.gate.queued], [0, 0]);
    });
  }
});

Deno.test("admission gate: a cancelled call leaves the queue and never runs", async (t) => {
  await t.step("aborted while queued", async () => {
    const r = rig({ maxConcurrent: 1, maxQueued: 10 });
    const a = r.submit("a");
    const ac = new AbortController();
    const b = r.submit("b", ac.signal);
    const c = r.submit("c");
    await settle();
    assertEquals(r.gate.queued, 2);
    ac.abort(new Error("client went away"));
    assertEquals(await b, "aborted");
    assertEquals([r.gate.queued, r.clock.pending], [1, 1], "its wait timer is gone too");
    await r.finish("a");
    assertEquals(r.started, ["a", "c"]);
    await r.finish("c");
    assertEquals([await a, await c], ["ok", "ok"]);
    assertEquals([r.gate.inFlight, r.gate.queued, r.clock.pending], [0, 0, 0]);
    assertEquals(r.metric("meshrelay_admission_refused_total"), 0, "a cancellation is not a refusal");
  });

  await t.step("already aborted: refused without queueing", async () => {
    const r = rig({ maxConcurrent: 1, maxQueued: 10 });
    const ac = new AbortController();
    ac.abort(new Error("gone"));
    assertEquals(await r.submit("a", ac.signal), "aborted");
    assertEquals([r.started.length, r.gate.inFlight, r.gate.queued], [0, 0, 0]);
  });

  await t.step("aborted after admission: the call runs to its end and frees its slot", async () => {
    const r = rig({ maxConcurrent: 1, maxQueued: 10 });
    const ac = new AbortController();
    const a = r.submit("a", ac.signal);
    await settle();
    ac.abort(new Error("gone"));
    await r.finish("a");
    assertEquals(await a, "ok");
    assertEquals(r.gate.inFlight, 0);
  });
});

Deno.test("admission gate: limits are validated, defaults are sensible", async (t) => {
  const clock = new FakeClock();
  const bad: [string, Partial<AdmissionGateOptions>, RegExp][] = [
    ["zero concurrency", { maxConcurrent: 0 }, /maxConcurrent/],
    ["fractional concurrency", { maxConcurrent: 1.5 }, /maxConcurrent/],
    ["negative queue", { maxQueued: -1 }, /maxQueued/],
    ["zero wait", { maxWaitMs: 0 }, /maxWaitMs/],
    ["infinite wait", { maxWaitMs: Infinity }, /maxWaitMs/],
  ];
  for (const [name, o, re] of bad) {
    await t.step(name, () => {
      const e = assertThrows(() => new AdmissionGate({ clock, ...o }), InvalidInputError);
      assert(re.test(e.message), e.message);
    });
  }
  await t.step("defaults (undefined fields keep them)", () => {
    const g = new AdmissionGate({ clock, maxConcurrent: undefined });
    assertEquals(g.limits, DEFAULT_ADMISSION);
    assert(DEFAULT_ADMISSION.maxWaitMs < 30_000, "below the agent's call deadline");
  });
  await t.step("the default refusal names no detail, and the gate knows its own refusals", async () => {
    const g = new AdmissionGate({ clock, maxConcurrent: 1, maxQueued: 0 });
    const hold = deferred();
    const a = g.run(() => hold.promise);
    const e = await assertRejects(() => g.run(() => Promise.resolve()), ResourceExhaustedError);
    assertEquals(e.message, "server busy, retry later");
    assertEquals(
      [g.refused(e), g.refused(new ResourceExhaustedError("server busy, retry later")), g.refused("x")],
      [true, false, false],
    );
    hold.resolve();
    await a;
  });
});
