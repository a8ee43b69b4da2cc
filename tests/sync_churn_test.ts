/**
 * Disconnects and abrupt client exits never crash the server: hundreds of Sync streams against one
 * in-process server, each ending badly in its own way (cancelled before or after the Welcome,
 * half a Hello, half a discovery diff, the channel closed under it, garbage bytes, unknown and
 * unidentified callers, streams replacing each other), plus agent processes killed with SIGKILL
 * mid-message. Afterwards the server still serves a real agent to convergence and holds no stale
 * session. (Deno is pinned to 2.9.3 because later versions abort in exactly this churn.)
 *
 * Identity is the test-only `metadataIdentify` over insecure loopback (see tests/sync_e2e_test.ts).
 */
import * as grpc from "@grpc/grpc-js";
import { systemClock } from "../src/clock.ts";
import { nullLogger } from "../src/log.ts";
import { type AgentMessage, RelayClient, type ServerMessage } from "../src/proto/mod.ts";
import { SyncAgent } from "../src/relay/mod.ts";
import {
  MemoryApplier,
  MemoryDiscoverySource,
  objects as o,
  startTestRelay,
  TEST_CLUSTER_METADATA,
  testDialer,
} from "../src/relay/testing_sync.ts";
import { assert, assertEquals, assertStringIncludes } from "../src/testing/assert.ts";

const ROUNDS = 300;
const FIXTURE = new URL("./fixtures/sync_abrupt_client.ts", import.meta.url).pathname;

async function waitUntil(pred: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`${what}: not reached`);
}

const md = (cluster?: string) => {
  const m = new grpc.Metadata();
  if (cluster) m.set(TEST_CLUSTER_METADATA, cluster);
  return m;
};

/** Resolves when the stream has ended one way or another (status, error or close). */
function ended(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise((r) => {
    stream.on("error", () => r());
    stream.on("status", () => r());
    stream.on("close", () => r());
  });
}

function firstMessage(stream: grpc.ClientDuplexStream<AgentMessage, ServerMessage>): Promise<void> {
  return new Promise((r) => {
    stream.once("data", () => r());
    stream.on("error", () => r());
    stream.on("status", () => r());
  });
}

type Mode = (port: number, shared: RelayClient) => Promise<void>;

const modes: Record<string, Mode> = {
  "cancel at once": (_port, shared) => {
    const s = shared.sync(md("c1"));
    s.on("error", () => {});
    s.cancel();
    return Promise.resolve();
  },
  "half a Hello, then cancel": async (_port, shared) => {
    const s = shared.sync(md("c1"));
    const done = ended(s);
    s.write({ hello: { agentVersion: "churn", applied: [{ key: "k", version: "v" }], more: true } });
    await firstMessage(s);
    s.cancel();
    await done;
  },
  "half a discovery diff, then the channel is closed": async (port) => {
    const c = new RelayClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const s = c.sync(md("c1"));
    s.on("error", () => {});
    await firstMessage(s);
    s.write({
      discovery: { generation: 1, upserts: [], deletes: ["v1|Service|apps|x"], last: false, partial: false },
    });
    c.close();
  },
  "garbage bytes": async (port) => {
    const c = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const s = c.makeBidiStreamRequest<Uint8Array, Uint8Array>(
      "/meshrelay.relay.v1.Relay/Sync",
      (v) => v as Buffer,
      (b) => b,
      md("c1"),
    );
    const done = ended(s);
    s.write(new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]));
    s.write(crypto.getRandomValues(new Uint8Array(64)));
    await done;
    c.close();
  },
  "unidentified caller": async (_port, shared) => {
    const s = shared.sync(md());
    await ended(s);
  },
  "unregistered cluster, channel closed mid-call": async (port) => {
    const c = new RelayClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const s = c.sync(md("nobody"));
    s.on("error", () => {});
    c.close();
    await new Promise((r) => setTimeout(r, 0));
  },
  "a full Hello, then half-close and walk away": async (_port, shared) => {
    const s = shared.sync(md("c1"));
    const done = ended(s);
    s.write({ hello: { agentVersion: "churn", applied: [], more: false } });
    s.end();
    await done;
  },
};

Deno.test("sync churn: hundreds of broken streams and killed agent processes, then the server still serves", async (t) => {
  const { hub, srv, metrics, stop } = await startTestRelay([
    o.cluster("c1"),
    o.cluster("c2"),
    o.clusterConfig("base", ["c1", "c2"], [o.configMap("a")]),
  ]);
  const shared = new RelayClient(`127.0.0.1:${srv.port}`, grpc.credentials.createInsecure());
  try {
    await t.step(`${ROUNDS} broken streams, ${Object.keys(modes).length} ways, 8 at a time`, async () => {
      const names = Object.keys(modes);
      for (let i = 0; i < ROUNDS; i += 8) {
        await Promise.all(
          Array.from(
            { length: Math.min(8, ROUNDS - i) },
            (_, j) => modes[names[(i + j) % names.length]](srv.port, shared),
          ),
        );
      }
    });

    await t.step("agent processes killed with SIGKILL mid-message", async () => {
      for (let round = 0; round < 3; round++) {
        const procs = Array.from({ length: 3 }, () =>
          new Deno.Command(Deno.execPath(), {
            args: ["run", "-A", FIXTURE, String(srv.port), "c1"],
            stdout: "piped",
            stderr: "null",
          }).spawn());
        for (const p of procs) {
          const reader = p.stdout.getReader();
          const { value } = await reader.read();
          assertStringIncludes(new TextDecoder().decode(value), "ready");
          reader.releaseLock();
          p.kill("SIGKILL");
          await p.status;
          await p.stdout.cancel();
        }
      }
    });

    await t.step("the server still serves a real agent to convergence, with no stale session", async () => {
      const applier = new MemoryApplier();
      const discovery = new MemoryDiscoverySource([o.service("web", false)]);
      const agent = new SyncAgent({
        dial: testDialer("c2", () => srv.port),
        discovery,
        applier,
        clock: systemClock,
        random: Math.random,
        log: nullLogger,
        agentVersion: "after-churn",
        stopGraceMs: 0,
      });
      const ac = new AbortController();
      const run = agent.run(ac.signal);
      try {
        await waitUntil(() => agent.state === "synced", "agent synced");
        assertEquals([...applier.applied.keys()], ["v1|ConfigMap|apps|a"]);
        assertEquals(hub.inventoryVersions("c2"), discovery.versions());
        await waitUntil(() => !hub.status("c1")!.connected, "c1's broken streams all gone");
        await waitUntil(
          () => metrics.render().includes("\nrelay_push_clients_connected 1\n"),
          "exactly one connected agent counted",
        );
        assert(metrics.render().includes("\nrelay_pull_clients_connected 1\n"));
      } finally {
        ac.abort();
        await run;
      }
    });
  } finally {
    shared.close();
    await stop();
  }
});
