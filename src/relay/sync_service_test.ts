import * as grpc from "@grpc/grpc-js";
import { GrpcStatus } from "../errors.ts";
import { type AgentMessage, RelayClient, type ServerMessage } from "../proto/mod.ts";
import { type KubeObject, objectKey, resourceVersionOf, versionedMap } from "../state/mod.ts";
import { assert, assertEquals, assertStringIncludes } from "../testing/assert.ts";
import { objects as o, startTestRelay, TEST_CLUSTER_METADATA, type TestRelay } from "./testing_sync.ts";
import { chunkDiff, toResource } from "./wire.ts";

/** A hand-driven Sync client: the test decides every message. */
class RawAgent {
  #client: RelayClient;
  stream: grpc.ClientDuplexStream<AgentMessage, ServerMessage>;
  #queue: ServerMessage[] = [];
  #wake?: () => void;
  status: Promise<grpc.StatusObject>;

  constructor(port: number, cluster?: string) {
    this.#client = new RelayClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const md = new grpc.Metadata();
    if (cluster) md.set(TEST_CLUSTER_METADATA, cluster);
    this.stream = this.#client.sync(md);
    this.stream.on("data", (m: ServerMessage) => {
      this.#queue.push(m);
      this.#wake?.();
    });
    this.stream.on("error", () => {});
    this.status = new Promise((r) =>
      this.stream.on("status", (s: grpc.StatusObject) => {
        r(s);
        this.#wake?.();
      })
    );
  }

  send(m: AgentMessage): void {
    this.stream.write(m);
  }

  /** The next message, or undefined if the stream ended first. */
  async next(): Promise<ServerMessage | undefined> {
    let ended = false;
    this.status.then(() => ended = true);
    while (this.#queue.length === 0) {
      if (ended) return undefined;
      await new Promise<void>((r) => this.#wake = r);
      await Promise.resolve();
    }
    return this.#queue.shift();
  }

  /** Messages until one matches `pred` (returned), failing if the stream ends first. */
  async until(pred: (m: ServerMessage) => boolean): Promise<ServerMessage> {
    while (true) {
      const m = await this.next();
      if (!m) {
        throw new Error(`stream ended before the expected message: ${JSON.stringify(await this.status)}`);
      }
      if (pred(m)) return m;
    }
  }

  /** Reads the chunked Welcome. */
  async welcome(): Promise<{ messages: number; inventory: Map<string, string> }> {
    const inventory = new Map<string, string>();
    let messages = 0;
    while (true) {
      const m = await this.until((x) => !!x.welcome);
      messages++;
      for (const h of m.welcome!.inventory) inventory.set(h.key, h.version);
      if (!m.welcome!.more) return { messages, inventory };
    }
  }

  /** Reads one complete desired diff. */
  async desired(): Promise<{ generation: number; upserts: string[]; deletes: string[]; chunks: number }> {
    const upserts: string[] = [];
    const deletes: string[] = [];
    let chunks = 0;
    while (true) {
      const m = await this.until((x) => !!x.desired);
      chunks++;
      upserts.push(...m.desired!.upserts.map((u) => u.key));
      deletes.push(...m.desired!.deletes);
      if (m.desired!.last) return { generation: m.desired!.generation, upserts, deletes, chunks };
    }
  }

  /** Messages received and not read yet. */
  get pending(): number {
    return this.#queue.length;
  }

  close(): void {
    this.stream.cancel();
    this.#client.close();
  }
}

/** Polls the event loop until `pred` holds (bounded: fails after ~5 s rather than hanging). */
async function waitUntil(pred: () => boolean): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error("condition not reached");
}

const cm = (name: string, data: Record<string, string> = {}) => o.configMap(name, data);
const vv = (obj: KubeObject) => ({ key: objectKey(obj), version: resourceVersionOf(obj) });

async function withServer(
  fn: (ctx: TestRelay) => Promise<void>,
  opts: { maxMessageBytes?: number; desired?: KubeObject[] } = {},
): Promise<void> {
  const relay = await startTestRelay([
    o.cluster("c1"),
    o.cluster("c2"),
    o.clusterConfig("base", ["c1"], opts.desired ?? [cm("a"), cm("b"), cm("c")]),
  ], { maxMessageBytes: opts.maxMessageBytes });
  try {
    await fn(relay);
  } finally {
    await relay.stop();
  }
}

Deno.test("Sync service refuses callers it cannot identify or that are not registered", async (t) => {
  await withServer(async ({ srv }) => {
    const cases = [
      {
        name: "no identity",
        cluster: undefined,
        code: GrpcStatus.UNAUTHENTICATED,
        msg: "no x-meshrelay-cluster",
      },
      {
        name: "unregistered cluster",
        cluster: "c9",
        code: GrpcStatus.PERMISSION_DENIED,
        msg: "not registered",
      },
    ];
    for (const c of cases) {
      await t.step(c.name, async () => {
        const a = new RawAgent(srv.port, c.cluster);
        const st = await a.status;
        assertEquals(st.code, c.code);
        assertStringIncludes(st.details, c.msg);
        a.close();
      });
    }
  });
});

Deno.test("Sync service resyncs by difference both ways, in chunks", async (t) => {
  const desired = Array.from({ length: 20 }, (_, i) => cm(`obj-${i}`, { pad: "x".repeat(200) }));
  await withServer(async ({ hub, srv }) => {
    const discovered = Array.from({ length: 30 }, (_, i) => o.service(`svc-${i}`, false));
    hub.applyDiscovery("c1", 1, {
      upserts: [...versionedMap(discovered)].map(([key, v]) => ({ key, ...v })),
      deletes: [],
    });
    const a = new RawAgent(srv.port, "c1");
    await t.step("Welcome lists the server's inventory versions in several chunks", async () => {
      const w = await a.welcome();
      assert(w.messages > 1, `expected several Welcome chunks, got ${w.messages}`);
      assertEquals(w.inventory, new Map(discovered.map((x) => [vv(x).key, vv(x).version])));
    });
    await t.step("Hello (chunked) with held versions: only the difference comes back", async () => {
      // The server's desired objects carry its managed-by label: take their versions from the hub.
      const want = [...hub.desiredFor("c1")!.items].map(([key, v]) => ({ key, version: v.version }));
      assertEquals(want.length, 20);
      const held = [
        ...want.slice(0, 15), // held at the right version: not re-sent
        { key: want[15].key, version: "stale" }, // wrong version: re-sent
        { key: "v1|ConfigMap|apps|gone", version: "x" }, // no longer desired: deleted
      ];
      a.send({ hello: { agentVersion: "t", applied: held.slice(0, 10), more: true } });
      a.send({ hello: { agentVersion: "t", applied: held.slice(10), more: false } });
      const d = await a.desired();
      assertEquals(d.upserts, want.slice(15).map((x) => x.key));
      assertEquals(d.deletes, ["v1|ConfigMap|apps|gone"]);
      assert(d.chunks > 1, "the 1 KiB limit splits the diff");
      a.send({ status: { generation: d.generation, statuses: [], more: false } });
    });
    await t.step("a chunked discovery diff is applied on its last chunk and acknowledged", async () => {
      const add = [o.service("new-1", true), o.service("new-2", true)];
      const diff = {
        upserts: [...versionedMap(add)].map(([key, v]) => ({ key, ...v })),
        deletes: [objectKey(discovered[0])],
      };
      const { chunks } = chunkDiff(diff, 1, 1024);
      const split = [{ ...chunks[0], upserts: chunks[0].upserts.slice(0, 1), last: false }, {
        ...chunks[0],
        upserts: chunks[0].upserts.slice(1),
      }];
      a.send({ discovery: split[0] });
      a.send({ discovery: split[1] });
      const ack = await a.until((m) => !!m.discoveryAck);
      assertEquals(ack.discoveryAck!.generation, 1);
      const inv = hub.inventoryVersions("c1");
      assertEquals(inv.size, 31);
      assert(inv.has(objectKey(add[0])) && !inv.has(objectKey(discovered[0])));
    });
    a.close();
  }, { maxMessageBytes: 1024, desired });
});

Deno.test("Sync service: a slow agent gets only the latest desired state, after it reports", async () => {
  await withServer(async ({ srv, config, hub }) => {
    const a = new RawAgent(srv.port, "c1");
    await a.welcome();
    a.send({ hello: { agentVersion: "t", applied: [], more: false } });
    const first = await a.desired();
    // Three config changes while the agent has not reported: nothing is sent meanwhile.
    const valueOfA = () =>
      (hub.desiredFor("c1")!.objects.find((x) => x.metadata.name === "a")?.data as Record<string, string>)?.v;
    for (const v of ["1", "2", "3"]) {
      config.set([o.cluster("c1"), o.cluster("c2"), o.clusterConfig("base", ["c1"], [cm("a", { v })])]);
      await waitUntil(() => valueOfA() === v);
    }
    assertEquals(a.pending, 0, "nothing was queued for an agent that has not reported");
    a.send({ status: { generation: first.generation, statuses: [], more: false } });
    const next = await a.desired();
    assert(next.generation > first.generation);
    assertEquals(next.upserts, ["v1|ConfigMap|apps|a"]);
    assertEquals(next.deletes, ["v1|ConfigMap|apps|b", "v1|ConfigMap|apps|c"]);
    assertEquals(next.generation, hub.desiredFor("c1")!.generation);
    a.close();
  });
});

Deno.test("Sync service closes streams with a clear status", async (t) => {
  await withServer(async ({ srv, hub }) => {
    await t.step("a second stream for the cluster replaces the first with ABORTED", async () => {
      const a = new RawAgent(srv.port, "c1");
      await a.welcome();
      const b = new RawAgent(srv.port, "c1");
      await b.welcome();
      const st = await a.status;
      assertEquals(st.code, GrpcStatus.ABORTED);
      assert(hub.status("c1")!.connected);
      a.close();
      b.close();
    });
    await t.step("hub.disconnect ends the stream with PERMISSION_DENIED and the reason", async () => {
      const a = new RawAgent(srv.port, "c2");
      await a.welcome();
      hub.disconnect("c2", "certificate revoked");
      const st = await a.status;
      assertEquals([st.code, st.details], [GrpcStatus.PERMISSION_DENIED, "certificate revoked"]);
      a.close();
    });
    const violations: { name: string; msgs: AgentMessage[]; code: number; text: string }[] = [
      { name: "empty message", msgs: [{}], code: GrpcStatus.INVALID_ARGUMENT, text: "empty AgentMessage" },
      {
        name: "object whose version does not match its content",
        msgs: [{
          discovery: {
            generation: 1,
            upserts: [{ ...toResource({ ...vv(cm("x")), object: cm("x") }), version: "forged" }],
            deletes: [],
            last: true,
            partial: false,
          },
        }],
        code: GrpcStatus.INVALID_ARGUMENT,
        text: "does not match its content",
      },
      {
        name: "interleaved discovery generations",
        msgs: [
          { discovery: { generation: 1, upserts: [], deletes: ["k"], last: false, partial: false } },
          { discovery: { generation: 2, upserts: [], deletes: [], last: true, partial: false } },
        ],
        code: GrpcStatus.INVALID_ARGUMENT,
        text: "started before generation 1 was complete",
      },
      {
        name: "unknown status state",
        msgs: [{
          status: { generation: 1, statuses: [{ key: "k", state: "exploded", message: "" }], more: false },
        }],
        code: GrpcStatus.INVALID_ARGUMENT,
        text: "is not applied, pruned or failed",
      },
      {
        name: "a second Hello",
        msgs: [
          { hello: { agentVersion: "t", applied: [], more: false } },
          { hello: { agentVersion: "t", applied: [], more: false } },
        ],
        code: GrpcStatus.INVALID_ARGUMENT,
        text: "Hello received after it was complete",
      },
    ];
    for (const v of violations) {
      await t.step(`protocol violation: ${v.name} → ${v.code}`, async () => {
        const a = new RawAgent(srv.port, "c2");
        await a.welcome();
        for (const m of v.msgs) a.send(m);
        const st = await a.status;
        assertEquals(st.code, v.code);
        assertStringIncludes(st.details, v.text);
        a.close();
      });
    }
  });
});

Deno.test("Sync service: a desired object larger than the limit is a failed status, the rest is delivered", async () => {
  const big = cm("big", { blob: "x".repeat(3000) });
  await withServer(async ({ srv, hub }) => {
    const a = new RawAgent(srv.port, "c1");
    await a.welcome();
    a.send({ hello: { agentVersion: "t", applied: [], more: false } });
    const d = await a.desired();
    assertEquals(d.upserts, ["v1|ConfigMap|apps|small"]);
    a.send({
      status: {
        generation: d.generation,
        statuses: [{ key: d.upserts[0], state: "applied", message: "" }],
        more: false,
      },
    });
    await new Promise((r) => setTimeout(r, 20));
    const st = hub.status("c1")!;
    const bigStatus = st.statuses.find((s) => s.key === objectKey(big))!;
    assertEquals(bigStatus.state, "failed");
    assertStringIncludes(bigStatus.message!, "cannot fit in a message of at most 2048 bytes");
    a.close();
  }, { maxMessageBytes: 2048, desired: [big, cm("small")] });
});
