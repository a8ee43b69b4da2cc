/**
 * Load generator for `deno task bench:relay`: one process simulating many agents, driven by the
 * orchestrator (`scripts/bench_relay.ts`) through JSON lines on stdin, answering on stdout.
 *
 * Relay agents here are the real thing: each is a `RelayAgent` (mTLS mode) with its own memory
 * secret store, its own P-256 key made locally, its own Bootstrap (shared token + CSR) over server
 * TLS, and its own grpc-js channel and TLS connection for Sync. Only the backends are memory
 * (discovery source and applier), so the server sees exactly what N real agents would send.
 *
 * Baseline clients are the same number of bare grpc-js mTLS channels, each holding one bidi stream
 * to `bench/baseline_server.ts`: what the relay's costs are compared with.
 *
 * Times are wall-clock milliseconds with sub-millisecond precision (timeOrigin + performance.now()),
 * comparable across the bench's processes on one machine.
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { out, serveCommands } from "./command_loop.ts";
import { systemClock } from "../src/clock.ts";
import type { LogFields, Logger } from "../src/log.ts";
import { type Gauge, type Labels, MetricsRegistry, RelayAgent } from "../src/relay/mod.ts";
import { AgentMessageCodec, ServerMessageCodec } from "../src/proto/mod.ts";
import { MemoryDiscoverySource } from "../src/relay/testing_sync.ts";
import {
  type Applier,
  type KubeObject,
  type ObjectKey,
  objectKey,
  type ObjectStatus,
  resourceVersionOf,
} from "../src/state/mod.ts";
import { MemorySecretStore } from "../src/store/mod.ts";

/** Wall-clock ms with sub-ms precision. */
export const now = (): number => performance.timeOrigin + performance.now();

/** Name of the config object whose `data.stamp` the fan-out rounds change. */
export const FANOUT_CONFIGMAP = "bench-fanout";

/**
 * Counts warnings and errors by message instead of printing them (5,000 agents log a lot), and tells
 * `onInfo` about info lines (the agent's "connected" line marks a Welcome received).
 */
function countingLogger(counts: Map<string, number>, onInfo: (msg: string) => void = () => {}): Logger {
  // Numbers (timings, ports) are masked so one cause is one row, with its gRPC code and reason.
  const count = (level: string, m: string, f?: LogFields) => {
    const why = f?.error ?? f?.message;
    const k = `${level}: ${m}${f?.code !== undefined ? ` [code ${f.code}]` : ""}` +
      (why ? ` (${String(why).replace(/\d+(\.\d+)?/g, "#").slice(0, 100)})` : "");
    counts.set(k, (counts.get(k) ?? 0) + 1);
  };
  const l: Logger = {
    debug() {},
    info: (m: string) => onInfo(m),
    warn: (m: string, f?: LogFields) => count("warn", m, f),
    error: (m: string, f?: LogFields) => count("error", m, f),
    child: () => l,
  };
  return l;
}

/** Calls `onSynced` when the agent's "in sync" gauge goes to 1 (exact, no polling). */
class HookedMetrics extends MetricsRegistry {
  #onSynced: () => void;
  constructor(onSynced: () => void) {
    super();
    this.#onSynced = onSynced;
  }
  override gauge(name: string, help: string): Gauge {
    const g = super.gauge(name, help);
    if (name !== "meshrelay_agent_connected") return g;
    const hook = this.#onSynced;
    return {
      set: (v: number, l?: Labels) => {
        g.set(v, l);
        if (v === 1) hook();
      },
      inc: (l?: Labels, by?: number) => g.inc(l, by),
      dec: (l?: Labels, by?: number) => g.dec(l, by),
      remove: (l?: Labels) => g.remove(l),
    };
  }
}

/** A lean in-memory applier that records when each fan-out stamp was applied. */
class StampApplier implements Applier {
  #held = new Map<ObjectKey, { object: KubeObject; version: string }>();
  stamps = new Map<string, number>();

  apply(desired: KubeObject[]): Promise<ObjectStatus[]> {
    const t = now();
    const want = new Map(desired.map((o) => [objectKey(o), o]));
    const out: ObjectStatus[] = [];
    for (const [k, o] of want) {
      const version = resourceVersionOf(o);
      this.#held.set(k, { object: o, version });
      out.push({ key: k, state: "applied" });
      if (o.kind === "ConfigMap" && o.metadata.name === FANOUT_CONFIGMAP) {
        const stamp = String((o as { data?: Record<string, string> }).data?.stamp ?? "");
        if (!this.stamps.has(stamp)) this.stamps.set(stamp, t);
      }
    }
    for (const k of [...this.#held.keys()]) {
      if (!want.has(k)) {
        this.#held.delete(k);
        out.push({ key: k, state: "pruned" });
      }
    }
    return Promise.resolve(out);
  }

  held(): Promise<Map<ObjectKey, { object: KubeObject; version: string }>> {
    return Promise.resolve(new Map(this.#held));
  }

  /** key → version of what is applied. */
  versions(): { key: string; version: string }[] {
    return [...this.#held].map(([key, v]) => ({ key, version: v.version }));
  }
}

/**
 * Bytes of the version lists a reconnect exchanges besides the diffs: the agent's Hello (what its
 * applier holds) and the server's Welcome (what it holds of the agent's inventory), protobuf-encoded.
 */
function versionListBytes(a: SimAgent): number {
  const hello = AgentMessageCodec.encode(AgentMessageCodec.fromPartial({
    hello: { agentVersion: "bench", applied: a.applier.versions() },
  })).finish().length;
  const inventory = [...(a.agent?.sync.discovered() ?? [])].map(([key, version]) => ({ key, version }));
  const welcome = ServerMessageCodec.encode(ServerMessageCodec.fromPartial({
    welcome: { cluster: a.cluster, inventory, maxMessageBytes: 4 * 1024 * 1024 },
  })).finish().length;
  return hello + welcome;
}

/** Discovered objects of simulated agent `i` (a few hundred bytes each, like trimmed Deployments). */
export function discoveredObjects(cluster: string, count: number): KubeObject[] {
  return Array.from({ length: count }, (_, j) => ({
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: `app-${j}`, namespace: "bench", labels: { app: `app-${j}`, cluster } },
    spec: { replicas: 2, selector: { matchLabels: { app: `app-${j}` } }, template: { image: "x:1" } },
  }));
}

interface SimAgent {
  cluster: string;
  agent?: RelayAgent;
  discovery: MemoryDiscoverySource;
  applier: StampApplier;
  bootstrappedAt?: number;
  syncTimes: number[];
  /** Times a session got its Welcome (connected and identified). */
  connectTimes: number[];
  /** syncTimes.length / connectTimes.length at the last `mark`: waits count sessions after it. */
  mark: number;
  connectMark: number;
}

interface BaselineStream {
  client: grpc.Client;
  call?: grpc.ClientDuplexStream<Buffer, Buffer>;
  openAt?: number;
  stamps: Map<string, number>;
  ended?: string;
}

const agents: SimAgent[] = [];
const baseline: BaselineStream[] = [];
const logCounts = new Map<string, number>();
const log = countingLogger(logCounts);

const identity = (b: Buffer) => b;
const BaselineClient = grpc.makeGenericClientConstructor({
  stream: {
    path: "/bench.Baseline/Stream",
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
}, "Baseline");

async function waitFor(pred: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = now() + timeoutMs;
  while (!pred()) {
    if (now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

function rss(): { rssBytes: number; heapBytes: number } {
  const m = Deno.memoryUsage();
  return { rssBytes: m.rss, heapBytes: m.heapUsed };
}

// deno-lint-ignore no-explicit-any
type Cmd = Record<string, any>;

async function handle(c: Cmd): Promise<Record<string, unknown>> {
  switch (c.cmd) {
    case "agents": {
      const t0 = now();
      const rootCaPem = String(c.rootCaPem);
      const token = String(c.token);
      // The driver always says how many (its --discovered): no second default here.
      const discovered = Number(c.discoveryObjects);
      if (!Number.isInteger(discovered) || discovered < 0) {
        throw new Error("agents: discoveryObjects must be a count");
      }
      for (const cluster of c.clusters as string[]) {
        const a: SimAgent = {
          cluster,
          discovery: new MemoryDiscoverySource(discoveredObjects(cluster, discovered)),
          applier: new StampApplier(),
          syncTimes: [],
          connectTimes: [],
          mark: 0,
          connectMark: 0,
        };
        agents.push(a);
        const metrics = new HookedMetrics(() => a.syncTimes.push(now()));
        a.agent = await RelayAgent.start({
          mode: "mtls",
          cluster,
          serverAddress: `127.0.0.1:${c.serverPort}`,
          store: new MemorySecretStore(),
          rootCaPem: () => Promise.resolve(rootCaPem),
          token: () => Promise.resolve(token),
          discovery: a.discovery,
          applier: a.applier,
          clock: systemClock,
          random: Math.random,
          log: countingLogger(logCounts, (m) => {
            if (m === "connected") a.connectTimes.push(now());
          }),
          metrics,
          agentVersion: "bench",
          metricsPort: null,
          ...(c.backoff ? { backoff: c.backoff } : {}),
        });
        a.agent.identity?.onChange(() => a.bootstrappedAt ??= now());
      }
      return { t0, started: agents.length };
    }
    case "mark": {
      for (const a of agents) {
        a.mark = a.syncTimes.length;
        a.connectMark = a.connectTimes.length;
      }
      return {};
    }
    case "waitSynced": {
      const ok = await waitFor(
        () => agents.every((a) => a.syncTimes.length > a.mark),
        c.timeoutMs ?? 120_000,
      );
      return {
        complete: ok,
        synced: agents.filter((a) => a.syncTimes.length > a.mark).length,
        times: agents.map((a) => a.syncTimes[a.mark] ?? null),
        connected: agents.map((a) => a.connectTimes[a.connectMark] ?? null),
        bootstrapped: agents.map((a) => a.bootstrappedAt ?? null),
      };
    }
    case "waitStamp": {
      const s = String(c.stamp);
      const ok = await waitFor(() => agents.every((a) => a.applier.stamps.has(s)), c.timeoutMs ?? 60_000);
      return { complete: ok, times: agents.map((a) => a.applier.stamps.get(s) ?? null) };
    }
    case "ingest": {
      const m = Number(c.perAgent);
      const t0 = now();
      for (const a of agents) {
        for (let j = 0; j < m; j++) {
          a.discovery.upsert({
            apiVersion: "v1",
            kind: "ConfigMap",
            metadata: { name: `ingest-${c.tag}-${j}`, namespace: "bench" },
            data: { v: String(c.tag), pad: "x".repeat(Number(c.padBytes ?? 200)) },
          });
        }
      }
      return { t0, t1: now(), changes: m * agents.length };
    }
    case "reconnect": {
      for (const a of agents) a.agent?.sync.reconnect("bench: reconnect by difference");
      return { t0: now() };
    }
    case "stats": {
      let discoveryBytesSent = 0,
        discoveryObjectsSent = 0,
        sessions = 0,
        syncedSessions = 0,
        versionLists = 0;
      for (const a of agents) {
        versionLists += versionListBytes(a);
        const s = a.agent!.sync.stats;
        discoveryBytesSent += s.discoveryBytesSent;
        discoveryObjectsSent += s.discoveryObjectsSent;
        sessions += s.sessions;
        syncedSessions += s.syncedSessions;
      }
      return {
        ...rss(),
        agents: agents.length,
        discoveryBytesSent,
        discoveryObjectsSent,
        sessions,
        syncedSessions,
        versionListBytes: versionLists,
        baselineStreams: baseline.filter((b) => b.openAt && !b.ended).length,
        logs: Object.fromEntries([...logCounts].sort((a, b) => b[1] - a[1]).slice(0, 12)),
      };
    }
    case "baseline": {
      const t0 = now();
      const creds = grpc.credentials.createSsl(
        Buffer.from(String(c.rootCaPem)),
        Buffer.from(String(c.keyPem)),
        Buffer.from(String(c.certPem)),
      );
      for (let i = 0; i < Number(c.n); i++) {
        // A local subchannel pool: otherwise grpc-js shares one connection between equal channels.
        const client = new BaselineClient(`localhost:${c.port}`, creds, {
          "grpc.use_local_subchannel_pool": 1,
          "grpc.keepalive_time_ms": 30_000,
        });
        const b: BaselineStream = { client, stamps: new Map() };
        baseline.push(b);
        const call = (client as unknown as {
          stream: () => grpc.ClientDuplexStream<Buffer, Buffer>;
        }).stream();
        b.call = call;
        call.on("data", (d: Buffer) => {
          const t = now();
          if (!b.openAt) {
            b.openAt = t;
            return;
          }
          const head = d.subarray(0, 64).toString("utf8");
          const stamp = head.slice(0, head.indexOf("|"));
          if (!b.stamps.has(stamp)) b.stamps.set(stamp, t);
        });
        call.on("error", (e: grpc.ServiceError) => b.ended = e.details ?? e.message);
        call.on("end", () => b.ended ??= "end");
      }
      return { t0 };
    }
    case "waitBaselineOpen": {
      // A stream that failed before its first message is done too (counted as not open), not waited for.
      const ok = await waitFor(() => baseline.every((b) => b.openAt || b.ended), c.timeoutMs ?? 120_000);
      const failed = baseline.filter((b) => !b.openAt && b.ended).map((b) => b.ended!);
      return {
        complete: ok && failed.length === 0,
        times: baseline.map((b) => b.openAt ?? null),
        failed: failed.length,
        firstFailure: failed[0],
      };
    }
    case "waitBaselineStamp": {
      const s = String(c.stamp);
      const ok = await waitFor(() => baseline.every((b) => b.stamps.has(s)), c.timeoutMs ?? 60_000);
      return { complete: ok, times: baseline.map((b) => b.stamps.get(s) ?? null) };
    }
    case "baselineIngest": {
      const t0 = now();
      const msg = Buffer.alloc(Number(c.bytes ?? 300), 120);
      let writes = 0;
      for (let j = 0; j < Number(c.perStream); j++) {
        for (const b of baseline) {
          b.call!.write(msg);
          writes++;
        }
        // Yield now and then so the transport can flush.
        if (j % 5 === 4) await new Promise((r) => setTimeout(r, 0));
      }
      return { t0, t1: now(), writes };
    }
    case "stop": {
      await Promise.all(agents.map((a) => a.agent?.stop()));
      for (const b of baseline) {
        try {
          b.call?.cancel();
          b.client.close();
        } catch {
          // gone
        }
      }
      setTimeout(() => Deno.exit(0), 200);
      return { stopped: true };
    }
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

async function main(): Promise<void> {
  out({ event: "ready", pid: Deno.pid });
  await serveCommands<Cmd>(handle);
}

if (import.meta.main) {
  // Stray errors from cut connections must not end the run: count them instead.
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    log.error("unhandled rejection", { error: String(e.reason) });
  });
  await main();
}
