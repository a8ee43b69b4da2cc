import { InvalidInputError, ResourceExhaustedError } from "../errors.ts";
import { AgentMessageCodec, type ResourceDiff, ServerMessageCodec, type Welcome } from "../proto/mod.ts";
import { diffByVersion, type KubeObject, resourceVersionOf, versionedMap } from "../state/mod.ts";
import { assert, assertEquals, assertStringIncludes, assertThrows } from "../testing/assert.ts";
import {
  checkMaxMessageBytes,
  chunkDiff,
  contentNeededBy,
  DiffAssembler,
  DiscoveryAssembler,
  ENVELOPE_BYTES,
  fromResource,
  grpcMessageOptions,
  HeldAssembler,
  helloMessages,
  MAX_STATUS_MESSAGE_CHARS,
  StatusAssembler,
  statusMessages,
  SYNC_FILL_BYTES,
  toResource,
  toVersionOnlyResource,
  welcomeMessages,
} from "./wire.ts";

function lcg(seed: number): () => number {
  return () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

function service(name: string, ns: string, payload = 0): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: ns, labels: { app: name, "ü": "ünïcödé" } },
    spec: { ports: [{ port: 80 }], note: "x".repeat(payload) },
  };
}

const enc = new TextEncoder();

Deno.test("toResource/fromResource", async (t) => {
  const o = service("reviews", "apps");
  const good = toResource({ key: "v1|Service|apps|reviews", object: o, version: resourceVersionOf(o) });
  await t.step("round trip keeps key, version and content", () => {
    const back = fromResource(good);
    assertEquals(back, { key: good.key, object: o, version: good.version });
  });
  const bad: { name: string; r: typeof good; msg: string }[] = [
    { name: "not JSON", r: { ...good, objectJson: enc.encode("{") }, msg: "not valid UTF-8 JSON" },
    { name: "invalid UTF-8", r: { ...good, objectJson: new Uint8Array([0xff, 0xfe]) }, msg: "UTF-8" },
    { name: "array", r: { ...good, objectJson: enc.encode("[]") }, msg: "Kubernetes-shaped" },
    {
      name: "no name",
      r: { ...good, objectJson: enc.encode('{"apiVersion":"v1","kind":"X","metadata":{}}') },
      msg: "Kubernetes-shaped",
    },
    { name: "key does not match content", r: { ...good, key: "v1|Service|apps|other" }, msg: "has key" },
    {
      name: "version does not match content",
      r: { ...good, version: "0".repeat(32) },
      msg: "does not match",
    },
  ];
  for (const c of bad) {
    await t.step(`refuses: ${c.name}`, () => {
      const e = assertThrows(() => fromResource(c.r), InvalidInputError);
      assertStringIncludes(e.message, c.msg);
    });
  }
});

Deno.test("chunkDiff: every message fits the limit and reassembles to the diff", async (t) => {
  const rnd = lcg(42);
  for (const maxBytes of [1024, 2048, 8192]) {
    await t.step(`limit ${maxBytes}`, () => {
      for (let round = 0; round < 30; round++) {
        const objs = Array.from(
          { length: Math.floor(rnd() * 60) },
          (_, i) => service(`s${i}`, "apps", Math.floor(rnd() * maxBytes * 0.6)),
        );
        const have = new Map(
          Array.from({ length: Math.floor(rnd() * 20) }, (_, i) => [`v1|Service|old|x${i}`, "v"] as const),
        );
        const diff = diffByVersion(have, versionedMap(objs));
        const gen = round + 1;
        const { chunks, oversized, sent } = chunkDiff(diff, gen, maxBytes);
        assertEquals(oversized, []);
        assert(chunks.length >= 1);
        chunks.forEach((c, i) => {
          assertEquals(c.last, i === chunks.length - 1);
          assertEquals(c.generation, gen);
          assert(AgentMessageCodec.encode({ discovery: c }).finish().length <= maxBytes);
          assert(ServerMessageCodec.encode({ desired: c }).finish().length <= maxBytes);
        });
        const asm = new DiffAssembler("test", 1_000_000);
        let done;
        for (const c of chunks) done = asm.add(c);
        assertEquals(done, { generation: gen, diff: sent, partial: false });
        assertEquals(sent, diff);
      }
    });
  }
  await t.step("an empty diff is one empty last chunk", () => {
    assertEquals(chunkDiff({ upserts: [], deletes: [] }, 7, 1024).chunks, [
      { generation: 7, upserts: [], deletes: [], last: true, partial: false },
    ]);
  });
  await t.step("an object larger than the limit is left out and reported, the rest is sent", () => {
    const objs = [service("small", "apps"), service("huge", "apps", 5000), service("tiny", "apps")];
    const diff = diffByVersion(new Map(), versionedMap(objs));
    const r = chunkDiff(diff, 1, 2048);
    assertEquals(r.oversized.map((o) => o.key), ["v1|Service|apps|huge"]);
    assert(r.oversized[0].bytes > 5000);
    assertEquals(r.oversized[0].maxBytes, 2048);
    assertEquals(r.sent.upserts.map((u) => u.key), ["v1|Service|apps|small", "v1|Service|apps|tiny"]);
    assertEquals(r.chunks.flatMap((c) => c.upserts.map((u) => u.key)), r.sent.upserts.map((u) => u.key));
  });
  await t.step(
    "under a 4 MiB limit, messages are filled to SYNC_FILL_BYTES; a larger object goes alone",
    () => {
      const objs = [
        ...Array.from({ length: 20 }, (_, i) => service(`s${i}`, "apps")),
        service("big", "apps", 3 * SYNC_FILL_BYTES),
      ];
      const r = chunkDiff(diffByVersion(new Map(), versionedMap(objs)), 1, 4 * 2 ** 20);
      assert(r.chunks.length > 2, `${r.chunks.length} chunks`);
      const sizes = r.chunks.map((c) => ServerMessageCodec.encode({ desired: c }).finish().length);
      const big = r.chunks.findIndex((c) => c.upserts.some((u) => u.key.endsWith("|big")));
      assertEquals(r.chunks[big].upserts.length, 1);
      sizes.forEach((n, i) => assert(i === big || n <= SYNC_FILL_BYTES, `chunk ${i}: ${n} bytes`));
      assertEquals(r.chunks.flatMap((c) => c.upserts).length, 21);
    },
  );
});

Deno.test("helloMessages/welcomeMessages chunk held versions below the limit", async (t) => {
  const held = new Map(
    Array.from({ length: 500 }, (_, i) => [`v1|Service|ns|svc-${i}`, `${i}`.padStart(32, "0")]),
  );
  // 500 entries of about 75 encoded bytes: 37 KB in all.
  const cases: { name: string; held: Map<string, string>; max: number; want?: number }[] = [
    { name: "empty set: one message", held: new Map<string, string>(), max: 1024, want: 1 },
    { name: "small set: one message", held: new Map([["a", "1"]]), max: 1024, want: 1 },
    { name: "large set, limit below the fill target: several, filled to the limit", held, max: 512 },
    // Filled to SYNC_FILL_BYTES, not to the 4 MiB a single message could hold.
    { name: "large set, 4 MiB limit: several, filled to SYNC_FILL_BYTES", held, max: 4 * 2 ** 20 },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const hello = helloMessages("0.1.0", c.held, c.max);
      // With the content prefixes on every message, as the server sends them.
      const welcome = welcomeMessages("cluster-1", c.held, c.max, ["v1|Service|", "v1|Endpoints|"]);
      const bound = Math.min(c.max, SYNC_FILL_BYTES);
      if (c.want !== undefined) {
        assertEquals([hello.length, welcome.length], [c.want, c.want]);
      } else {
        assert(hello.length > 1 && welcome.length > 1);
      }
      const size = {
        hello: (m: (typeof hello)[number]) => AgentMessageCodec.encode(m).finish().length,
        welcome: (m: (typeof welcome)[number]) => ServerMessageCodec.encode(m).finish().length,
      };
      for (const m of hello) assert(size.hello(m) <= bound);
      for (const m of welcome) assert(size.welcome(m) <= bound);
      // Filled, not merely under the bound: the next message's first entry would not have fitted. wire.ts
      // reckons each message's envelope generously, so "fitted" allows for that much.
      const envelope = ENVELOPE_BYTES;
      // The allowance makes "filled" laxer as it grows: it stays a few dozen bytes.
      assert(envelope <= 32, `ENVELOPE_BYTES ${envelope}`);
      hello.slice(0, -1).forEach((m, i) => {
        const more = {
          hello: { ...m.hello!, applied: [...m.hello!.applied, hello[i + 1].hello!.applied[0]] },
        };
        assert(size.hello(more) + envelope > bound, `hello ${i} could have taken one more entry`);
      });
      welcome.slice(0, -1).forEach((m, i) => {
        const w = m.welcome!;
        const more = { welcome: { ...w, inventory: [...w.inventory, welcome[i + 1].welcome!.inventory[0]] } };
        assert(size.welcome(more) + envelope > bound, `welcome ${i} could have taken one more entry`);
      });
      const ha = new HeldAssembler("hello", 10_000);
      const wa = new HeldAssembler("welcome", 10_000);
      let h, w;
      hello.forEach((m, i) => {
        assert(AgentMessageCodec.encode(m).finish().length <= c.max);
        assertEquals(m.hello!.more, i < hello.length - 1);
        h = ha.add(m.hello!.applied, m.hello!.more);
      });
      welcome.forEach((m) => {
        assert(ServerMessageCodec.encode(m).finish().length <= c.max);
        assertEquals(m.welcome!.maxMessageBytes, c.max);
        w = wa.add(m.welcome!.inventory, m.welcome!.more);
      });
      assertEquals(h, c.held);
      assertEquals(w, c.held);
    });
  }
});

Deno.test("Welcome content prefixes and DiscoveryAssembler: versions alone only where they suffice", async (t) => {
  const svc = service("web", "apps");
  const cm: KubeObject = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "c", namespace: "apps" } };
  const [welcome] = welcomeMessages("cluster-1", new Map(), 4096, ["v1|Service|"]);
  const needed = contentNeededBy(welcome.welcome!);
  await t.step("the Welcome's prefixes decide what travels whole", () => {
    assertEquals([needed("v1|Service|apps|web"), needed("v1|ConfigMap|apps|c")], [true, false]);
    // A server without the fields (an older one) gets everything whole.
    const old: Welcome = { ...welcome.welcome!, contentKeyPrefixes: [], versionsSuffice: false };
    assertEquals(contentNeededBy(old)("v1|ConfigMap|apps|c"), true);
    const none = welcomeMessages("cluster-1", new Map(), 4096)[0].welcome!;
    assertEquals(contentNeededBy(none)("v1|ConfigMap|apps|c"), true);
  });
  const chunk = (upserts: ResourceDiff["upserts"], generation = 1): ResourceDiff => ({
    generation,
    upserts,
    deletes: [],
    last: true,
    partial: false,
  });
  const versionOf = (o: KubeObject) => versionedMap([o]).values().next().value!.version;
  await t.step("a version alone is taken where it suffices, a whole object everywhere", () => {
    const asm = new DiscoveryAssembler(100, (k) => !needed(k));
    const key = "v1|ConfigMap|apps|c";
    const done = asm.add(chunk([
      toVersionOnlyResource({ key, version: versionOf(cm) }),
      toResource({ key: "v1|Service|apps|web", object: svc, version: versionOf(svc) }),
      toResource({
        key: "v1|ConfigMap|apps|whole",
        object: { ...cm, metadata: { ...cm.metadata, name: "whole" } },
        version: versionOf({ ...cm, metadata: { ...cm.metadata, name: "whole" } }),
      }),
    ]))!;
    assertEquals(done.diff.upserts.map((u) => [u.key, u.object !== undefined]), [
      [key, false],
      ["v1|ConfigMap|apps|whole", true],
      ["v1|Service|apps|web", true],
    ]);
  });
  // [what, key, version, what the refusal says]
  const refused: [string, string, string, string][] = [
    ["a Service without its content", "v1|Service|apps|web", "v", "not valid UTF-8 JSON"],
    ["a key of three parts", "v1|ConfigMap|c", "v", "apiVersion|kind|namespace|name"],
    ["a key without a name", "v1|ConfigMap|apps|", "v", "apiVersion|kind|namespace|name"],
    ["an empty version", "v1|ConfigMap|apps|c", "", "1 to 128 characters"],
    ["a version of 129 characters", "v1|ConfigMap|apps|c", "a".repeat(129), "1 to 128 characters"],
  ];
  for (const [name, key, version, msg] of refused) {
    await t.step(`refused: ${name}`, () => {
      const asm = new DiscoveryAssembler(100, (k) => !needed(k));
      const r = toVersionOnlyResource({ key, version });
      const e = assertThrows(() => asm.add(chunk([r])), InvalidInputError);
      assertStringIncludes(e.message, msg);
    });
  }
  await t.step("the desired-state assembler takes no version alone", () => {
    const asm = new DiffAssembler("desired", 100);
    const e = assertThrows(
      () => asm.add(chunk([toVersionOnlyResource({ key: "v1|ConfigMap|apps|c", version: versionOf(cm) })])),
      InvalidInputError,
    );
    assertStringIncludes(e.message, "not valid UTF-8 JSON");
  });
});

Deno.test("assemblers refuse protocol violations", async (t) => {
  const o = service("a", "x");
  const r = toResource({ key: "v1|Service|x|a", object: o, version: resourceVersionOf(o) });
  const cases: {
    name: string;
    run: () => void;
    err: typeof InvalidInputError | typeof ResourceExhaustedError;
  }[] = [
    {
      name: "generation zero",
      run: () =>
        new DiffAssembler("d", 10).add({
          generation: 0,
          upserts: [],
          deletes: [],
          last: true,
          partial: false,
        }),
      err: InvalidInputError,
    },
    {
      name: "interleaved generations",
      run: () => {
        const a = new DiffAssembler("d", 10);
        a.add({ generation: 1, upserts: [r], deletes: [], last: false, partial: false });
        a.add({ generation: 2, upserts: [], deletes: [], last: true, partial: false });
      },
      err: InvalidInputError,
    },
    {
      name: "generation going back",
      run: () => {
        const a = new DiffAssembler("d", 10);
        a.add({ generation: 5, upserts: [], deletes: [], last: true, partial: false });
        a.add({ generation: 5, upserts: [], deletes: [], last: true, partial: false });
      },
      err: InvalidInputError,
    },
    {
      name: "too many pending objects",
      run: () => {
        const a = new DiffAssembler("d", 2);
        a.add({ generation: 1, upserts: [r], deletes: ["k1", "k2"], last: false, partial: false });
      },
      err: ResourceExhaustedError,
    },
    {
      name: "hello after complete",
      run: () => {
        const a = new HeldAssembler("hello", 10);
        a.add([], false);
        a.add([], false);
      },
      err: InvalidInputError,
    },
    {
      name: "hello too long",
      run: () =>
        new HeldAssembler("hello", 1).add([{ key: "a", version: "1" }, { key: "b", version: "1" }], true),
      err: ResourceExhaustedError,
    },
  ];
  for (const c of cases) await t.step(c.name, () => void assertThrows(c.run, c.err));
  await t.step("a later delete cancels an earlier upsert within one generation, and vice versa", () => {
    const a = new DiffAssembler("d", 10);
    assertEquals(a.add({ generation: 3, upserts: [r], deletes: [], last: false, partial: false }), undefined);
    assertEquals(
      a.add({ generation: 3, upserts: [], deletes: [r.key, "gone"], last: true, partial: false }),
      {
        generation: 3,
        diff: { upserts: [], deletes: ["gone", r.key] },
        partial: false,
      },
    );
    assertEquals(a.lastGeneration, 3);
  });
});

Deno.test("checkMaxMessageBytes", async (t) => {
  for (const v of [1024, 4 * 1024 * 1024]) {
    await t.step(`accepts ${v}`, () => assertEquals(checkMaxMessageBytes(v), v));
  }
  for (const v of [0, 100, 1.5, 2 ** 31]) {
    await t.step(`refuses ${v}`, () => void assertThrows(() => checkMaxMessageBytes(v), InvalidInputError));
  }
});

Deno.test("statusMessages/StatusAssembler: reports chunked below the limit, reassembled whole", async (t) => {
  const statuses = Array.from({ length: 300 }, (_, i) => ({
    key: `v1|ConfigMap|apps|obj-${i}`,
    state: (["applied", "pruned", "failed"] as const)[i % 3],
    ...(i % 3 === 2 ? { message: `write failed: ${"e".repeat(i)}` } : {}),
  }));
  await t.step("every message fits; more on all but the last; the whole report comes back", () => {
    const msgs = statusMessages(9, statuses, 2048);
    assert(msgs.length > 5);
    const asm = new StatusAssembler(10_000);
    let done;
    msgs.forEach((m, i) => {
      assert(AgentMessageCodec.encode(m).finish().length <= 2048);
      assertEquals(m.status!.more, i < msgs.length - 1);
      done = asm.add(m.status!);
    });
    assertEquals(done, { generation: 9, statuses });
  });
  await t.step("an empty report is one message", () => {
    assertEquals(statusMessages(3, [], 1024), [{ status: { generation: 3, statuses: [], more: false } }]);
  });
  await t.step("a long message is cut so that the status still fits", () => {
    const msgs = statusMessages(1, [{ key: "k", state: "failed", message: "x".repeat(100_000) }], 2048);
    assertEquals(msgs.length, 1);
    assertEquals(msgs[0].status!.statuses[0].message.length, MAX_STATUS_MESSAGE_CHARS);
  });
  await t.step("chunks of two generations must not interleave", () => {
    const asm = new StatusAssembler(10);
    asm.add({ generation: 1, statuses: [], more: true });
    assertThrows(() => asm.add({ generation: 2, statuses: [], more: false }), InvalidInputError);
  });
  await t.step("too many entries", () => {
    const asm = new StatusAssembler(1);
    const two = [{ key: "a", state: "applied", message: "" }, { key: "b", state: "applied", message: "" }];
    assertThrows(() => asm.add({ generation: 1, statuses: two, more: true }), ResourceExhaustedError);
  });
});

Deno.test("grpcMessageOptions: limits both ways, no transparent retries", () => {
  assertEquals(grpcMessageOptions(2048), {
    "grpc.max_receive_message_length": 2048,
    "grpc.max_send_message_length": 2048,
    "grpc.enable_retries": 0,
  });
  assertEquals(grpcMessageOptions()["grpc.max_receive_message_length"], 4 * 1024 * 1024);
});

Deno.test("chunkDiff with a budget: generations that add up to the diff, the last one not partial", async (t) => {
  const rnd = lcg(7);
  for (const budget of [1, 1000, 4096, 20_000]) {
    await t.step(`budget ${budget}`, () => {
      const objs = Array.from({ length: 40 }, (_, i) => service(`s${i}`, "apps", Math.floor(rnd() * 600)));
      const want = versionedMap(objs);
      const have = new Map<string, string>(
        Array.from({ length: 15 }, (_, i) => [`v1|Service|old|x${i}`, "v"] as const),
      );
      const start = new Map(have);
      let gen = 0;
      for (;;) {
        const diff = diffByVersion(have, want);
        const r = chunkDiff(diff, ++gen, 4 * 2 ** 20, undefined, budget);
        const items = r.sent.upserts.length + r.sent.deletes.length;
        assert(items >= 1, "every generation carries something");
        // Within the budget, unless one item alone is larger.
        assert(items === 1 || r.bytes <= budget, `${r.bytes} bytes in ${items} items over ${budget}`);
        const last = r.chunks.at(-1)!;
        assertEquals(last.partial, r.deferred);
        assert(r.chunks.slice(0, -1).every((c) => !c.partial));
        const asm = new DiffAssembler("t", 1_000_000);
        let done;
        for (const c of r.chunks) done = asm.add(c);
        assertEquals(done, { generation: gen, diff: r.sent, partial: r.deferred });
        for (const k of r.sent.deletes) have.delete(k);
        for (const u of r.sent.upserts) have.set(u.key, u.version);
        if (!r.deferred) break;
        // A deferring generation is full: the next item would not have fitted.
        const rest = diffByVersion(have, want);
        const next = rest.deletes.length > 0
          ? chunkDiff({ upserts: [], deletes: rest.deletes.slice(0, 1) }, 0, 4 * 2 ** 20).bytes
          : chunkDiff({ upserts: rest.upserts.slice(0, 1), deletes: [] }, 0, 4 * 2 ** 20).bytes;
        assert(r.bytes + next > budget, `the next item (${next} bytes) fitted in ${budget - r.bytes}`);
      }
      assertEquals(have, new Map([...want].map(([k, v]) => [k, v.version])));
      const total = diffByVersion(start, want);
      const whole = chunkDiff(total, 1, 4 * 2 ** 20).bytes;
      if (budget >= whole) assertEquals(gen, 1);
      else assert(gen > 1);
      if (budget === 1) assertEquals(gen, total.upserts.length + total.deletes.length);
    });
  }
});
