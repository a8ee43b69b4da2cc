/**
 * `deno task bench:relay`: the relay's scale figures, each next to a baseline measured in the same run.
 *
 * For each N (default 1000 and 5000 agents) it runs two phases on loopback:
 * 1. baseline: `bench/baseline_server.ts` (bare grpc-js mTLS server in Deno) and N bare mTLS channels
 *    with one bidi stream each (`bench/relay_loadgen.ts`): handshake storm, RSS per held stream,
 *    broadcast latency, client-stream ingest;
 * 2. meshrelay: a real `meshrelay server` process (own temp secrets and config dirs, N registered
 *    KubernetesCluster documents) and N real agents (bootstrap with the shared token + CSR, then mTLS
 *    Sync) simulated by one or more load-generator processes: bootstrap storm, RSS per agent,
 *    fan-out latency from a config file change to "applied" in every agent, discovery ingest,
 *    bytes of a reconnect by difference vs the full sync, and a reconnect storm after `kill -9`.
 *
 * Prints a table and writes JSON (`--out`, default bench/results/latest.json).
 *
 * Usage: deno task bench:relay [--agents 1000,5000] [--quick] [--rounds 5] [--ingest 20]
 *        [--per-loadgen 2500] [--out FILE]
 * @module
 */
import { Command } from "commander";
import { FileSecretStore } from "../src/store/mod.ts";
import { makeTestPki } from "../src/relay/testing_pki.ts";
import { FANOUT_CONFIGMAP } from "../bench/relay_loadgen.ts";
import { Driven } from "../bench/command_loop.ts";
import { type BaselineTls, startBaselineServer, writeBaselineTls } from "../bench/baseline_driver.ts";
import { freePort, rssOf } from "../bench/proc.ts";
import { RUNTIME_V8_FLAGS } from "./v8_flags.ts";
import {
  diffHeapSummaries,
  formatHeapSummary,
  type HeapSummary,
  memoryOf,
  summarizeHeapSnapshot,
  takeHeapSnapshot,
} from "./heap_snapshot.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dec = new TextDecoder();

// ------------------------------------------------------------------ child processes

/** The server's memory split as its /metrics reports it: JS heap used and reserved, external, the rest. */
async function memorySplit(port: number): Promise<Json> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const read = (line: string) =>
    Number(text.split("\n").find((l) => l.startsWith(line + " "))?.split(" ").pop());
  return withOutsideHeap({
    rss: read("process_resident_memory_bytes"),
    heapUsed: read('meshrelay_js_heap_bytes{kind="used"}'),
    heapTotal: read('meshrelay_js_heap_bytes{kind="total"}'),
    external: read("meshrelay_js_external_memory_bytes"),
  });
}

/** The memory figures with what is neither JS heap nor external: native buffers, sessions, code. */
function withOutsideHeap(m: { rss: number; heapUsed: number; heapTotal: number; external: number }): Json {
  return { ...m, outsideHeap: m.rss - m.heapTotal - m.external };
}

const mibs = (m: Json) =>
  Object.entries(m).map(([k, v]) => `${k} ${Math.round(Number(v) / 2 ** 20)}`).join(", ") + " (MiB)";

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(name + " ") || line.startsWith(name + "{")) sum += Number(line.split(" ").pop());
  }
  return sum;
}

// ------------------------------------------------------------------ statistics

function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

function latencies(times: (number | null)[], t0: number): { values: number[]; missing: number } {
  const values = times.filter((t): t is number => t !== null).map((t) => t - t0);
  return { values, missing: times.length - values.length };
}

/** Counts per 1-second bucket after `t0`. */
function timeline(times: (number | null)[], t0: number): number[] {
  const out: number[] = [];
  for (const t of times) {
    if (t === null) continue;
    const b = Math.max(0, Math.floor((t - t0) / 1000));
    while (out.length <= b) out.push(0);
    out[b]++;
  }
  return out;
}

const r1 = (x: number) => Math.round(x * 10) / 10;
const r3 = (x: number) => Math.round(x * 1000) / 1000;

// ------------------------------------------------------------------ fixture

function configDocs(clusters: string[], stamp: string): { clusters: string; fanout: string } {
  const cl = clusters.map((c) =>
    `apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: ${c}\n  labels:\n    env: bench\n`
  ).join("---\n");
  const pad = "x".repeat(800);
  const objects = [
    `    - apiVersion: v1\n      kind: ConfigMap\n      metadata:\n        name: ${FANOUT_CONFIGMAP}\n        namespace: bench\n      data:\n        stamp: "${stamp}"\n        pad: "${pad}"\n`,
    ...[1, 2, 3, 4].map((i) =>
      `    - apiVersion: v1\n      kind: ConfigMap\n      metadata:\n        name: static-${i}\n        namespace: bench\n      data:\n        pad: "${pad}"\n`
    ),
  ].join("");
  const fanout =
    `apiVersion: meshrelay.io/v1alpha1\nkind: ClusterConfig\nmetadata:\n  name: bench\nspec:\n  clusterSelector:\n    matchLabels:\n      env: bench\n  objects:\n${objects}`;
  return { clusters: cl, fanout };
}

async function writeAtomic(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(path + ".tmp", text);
  await Deno.rename(path + ".tmp", path);
}

/** Deployments each simulated agent discovers at start by default (`--discovered`; `--ingest` adds more). */
const DISCOVERED_PER_AGENT = 10;

// ------------------------------------------------------------------ one N

interface Options {
  /** Agents per bootstrap wave (0: all at once, the default since the server admits signing in a queue). */
  wave: number;
  /** Extra V8 flags for the meshrelay server process (e.g. a smaller young generation). */
  serverV8Flags?: string;
  /** Extra `deno run` flags for the meshrelay server process (e.g. --cpu-prof-dir=DIR). */
  serverFlags?: string[];
  /** Skip the kill -9 storm (so a profiled server exits normally and writes its profile). */
  noStorm?: boolean;
  /** Heap snapshots of the server, idle and with N agents, written as FILE-<n>-{idle,held}.heapsnapshot. */
  heapSnapshot?: string;
  rounds: number;
  /** Objects each agent discovers at start. */
  discovered: number;
  ingest: number;
  perLoadgen: number;
  keep: boolean;
}

function split<T>(xs: T[], per: number): T[][] {
  const n = Math.max(1, Math.ceil(xs.length / per));
  return Array.from({ length: n }, (_, i) => xs.filter((_, j) => j % n === i));
}

async function all(gens: Driven[], cmd: Record<string, unknown>) {
  return await Promise.all(gens.map((g) => g.req(cmd)));
}

const concat = <T>(rs: Record<string, T[]>[], key: string): T[] => rs.flatMap((r) => r[key] ?? []);

function startLoadgens(count: number, tmp: string): Driven[] {
  return Array.from(
    { length: count },
    (_, i) =>
      new Driven(`loadgen-${i}`, ["run", "-A", "bench/relay_loadgen.ts"], {
        cwd: ROOT,
        stderrFile: `${tmp}/loadgen-${i}.log`,
      }),
  );
}

async function stopAll(gens: Driven[]): Promise<void> {
  await Promise.all(gens.map((g) => g.req({ cmd: "stop" }).catch(() => {})));
  await Promise.all(gens.map((g) => g.kill("SIGTERM")));
}

function log(msg: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

async function runBaseline(n: number, o: Options, tmp: string, pem: BaselineTls): Promise<Json> {
  const inspect = o.heapSnapshot ? `127.0.0.1:${freePort()}` : undefined;
  // The same flags as the meshrelay server: the ratio is meshrelay's cost, not the flags'.
  const { srv, port } = startBaselineServer({
    tls: pem,
    stderrFile: `${tmp}/baseline.log`,
    v8Flags: o.serverV8Flags,
    inspect,
  });
  await srv.ready();
  await sleep(1000);
  const rss0 = rssOf(srv.proc.pid);
  const idleHeap = inspect
    ? await snapshot(inspect, `${o.heapSnapshot}-${n}-baseline-idle.heapsnapshot`)
    : undefined;
  const gens = startLoadgens(Math.ceil(n / o.perLoadgen), tmp);
  try {
    await Promise.all(gens.map((g) => g.ready()));
    const sizes = split(Array.from({ length: n }, (_, i) => i), o.perLoadgen).map((x) => x.length);
    const t0 = now();
    await Promise.all(gens.map((g, i) =>
      g.req({
        cmd: "baseline",
        port,
        n: sizes[i],
        rootCaPem: pem.rootPem,
        certPem: pem.clientChain,
        keyPem: pem.clientKey,
      })
    ));
    const open = await all(gens, { cmd: "waitBaselineOpen", timeoutMs: 60_000 + n * 100 });
    const openLat = latencies(concat(open, "times"), t0);
    const storm = Math.max(...openLat.values) / 1000;
    const failed = open.reduce((a, x) => a + Number(x.failed ?? 0), 0);
    const why = open.find((x) => x.firstFailure)?.firstFailure;
    log(
      `baseline: ${openLat.values.length}/${n} streams open in ${r1(storm)} s` +
        (failed ? ` (${failed} failed, e.g. ${String(why).slice(0, 120)})` : ""),
    );
    await sleep(2000);
    const rssN = rssOf(srv.proc.pid);
    const mem = await srv.req({ cmd: "memory" });
    const memSplit = withOutsideHeap({
      rss: Number(mem.rss),
      heapUsed: Number(mem.heapUsed),
      heapTotal: Number(mem.heapTotal),
      external: Number(mem.external),
    });
    if (inspect && idleHeap) {
      const held = await snapshot(inspect, `${o.heapSnapshot}-${n}-baseline-held.heapsnapshot`);
      log(
        `baseline: heap with ${n} streams held vs idle\n` +
          formatHeapSummary(diffHeapSummaries(idleHeap, held), { top: 40, perUnit: { n, unit: "stream" } }),
      );
    }
    log(`baseline: memory with ${n} streams held: ${mibs(memSplit)}`);

    const fan: number[] = [];
    for (let r = 0; r < o.rounds; r++) {
      const stamp = `b${r}`;
      const b = await srv.req({ cmd: "broadcast", stamp, bytes: 1100 });
      const got = await all(gens, { cmd: "waitBaselineStamp", stamp, timeoutMs: 30_000 });
      fan.push(...latencies(concat(got, "times"), b.t0).values);
      await sleep(300);
    }

    const before = (await srv.req({ cmd: "counts" })).received as number;
    const ing = await all(gens, { cmd: "baselineIngest", perStream: o.ingest, bytes: 300 });
    const done = await srv.req({ cmd: "waitReceived", count: before + n * o.ingest, timeoutMs: 120_000 });
    const ingestRate = (n * o.ingest) / ((done.t - Math.min(...ing.map((x) => x.t0))) / 1000);
    return {
      streamsOpen: openLat.values.length,
      handshakeStormSeconds: r3(storm),
      handshakesPerSecond: r1(openLat.values.length / storm),
      rssIdleBytes: rss0,
      rssBytes: rssN,
      rssPerStreamBytes: Math.round((rssN - rss0) / n),
      memoryHeld: memSplit,
      fanoutP50Ms: r1(quantile(fan, 0.5)),
      fanoutP99Ms: r1(quantile(fan, 0.99)),
      fanoutSamples: fan.length,
      ingestMessagesPerSecond: Math.round(ingestRate),
      ingestComplete: done.complete,
    };
  } finally {
    await stopAll(gens);
    await srv.kill("SIGKILL");
  }
}

class RelayProcess {
  proc?: Deno.ChildProcess;
  constructor(readonly args: string[], readonly logFile: string, readonly metricsPort: number) {}

  async start(): Promise<number> {
    const t0 = now();
    this.proc = new Deno.Command(Deno.execPath(), {
      args: this.args,
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const f = Deno.openSync(this.logFile, { write: true, create: true, append: true });
    void this.proc.stdout.pipeTo(f.writable).catch(() => {});
    void this.proc.stderr.pipeTo(Deno.openSync(this.logFile, { write: true, append: true }).writable)
      .catch(() => {});
    for (let i = 0; i < 600; i++) {
      try {
        const r = await fetch(`http://127.0.0.1:${this.metricsPort}/readyz`);
        await r.body?.cancel();
        if (r.status === 200) return now() - t0;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    throw new Error("meshrelay server did not become ready in 30 s");
  }

  async kill(sig: Deno.Signal): Promise<Deno.CommandStatus> {
    try {
      this.proc!.kill(sig);
    } catch {
      // gone
    }
    return await this.proc!.status;
  }
}

/** A heap snapshot of the server written to `file`, summarized. */
async function snapshot(inspect: string, file: string): Promise<HeapSummary> {
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)}`;
  const m = await memoryOf(inspect);
  log(`memory (MiB) ${Object.entries(m).map(([k, v]) => `${k}=${mib(v)}`).join(" ")}`);
  const text = await takeHeapSnapshot(inspect);
  await Deno.writeTextFile(file, text);
  const s = summarizeHeapSnapshot(text);
  log(`heap snapshot ${file}: ${Math.round(s.totalBytes / 2 ** 20)} MiB live`);
  return s;
}

async function runRelay(n: number, o: Options, tmp: string, rootPem: string, token: string): Promise<Json> {
  const clusters = Array.from({ length: n }, (_, i) => `bench-${String(i).padStart(5, "0")}`);
  const configDir = `${tmp}/config`;
  await Deno.mkdir(configDir, { recursive: true });
  const docs = configDocs(clusters, "m-initial");
  await writeAtomic(`${configDir}/clusters.yaml`, docs.clusters);
  await writeAtomic(`${configDir}/fanout.yaml`, docs.fanout);

  const port = freePort();
  const mport = freePort();
  const inspect = o.heapSnapshot ? `127.0.0.1:${freePort()}` : undefined;
  const server = new RelayProcess(
    [
      "run",
      "-A",
      ...(inspect ? [`--inspect=${inspect}`] : []),
      ...(o.serverV8Flags ? [`--v8-flags=${o.serverV8Flags}`] : []),
      ...(o.serverFlags ?? []),
      "mod.ts",
      "server",
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--metrics-host",
      "127.0.0.1",
      "--metrics-port",
      String(mport),
      "--secrets-dir",
      `${tmp}/secrets`,
      "--config-dir",
      configDir,
      "--log-level",
      "warn",
      // Every simulated agent dials from 127.0.0.1: one peer address as far as limits go.
      "--max-connections-per-peer",
      "0",
    ],
    `${tmp}/server.log`,
    mport,
  );
  const startupMs = await server.start();
  await sleep(1000);
  const rss0 = rssOf(server.proc!.pid);
  log(`meshrelay: server ready in ${Math.round(startupMs)} ms, RSS ${Math.round(rss0 / 2 ** 20)} MiB`);
  const memIdle = await memorySplit(mport);
  log(`meshrelay: idle memory: ${mibs(memIdle)}`);

  const groups = split(clusters, o.perLoadgen);
  const gens = startLoadgens(groups.length, tmp);
  const result: Json = { serverStartupMs: Math.round(startupMs), rssIdleBytes: rss0 };
  const idleHeap = inspect ? await snapshot(inspect, `${o.heapSnapshot}-${n}-idle.heapsnapshot`) : undefined;
  try {
    await Promise.all(gens.map((g) => g.ready()));
    // --- bootstrap storm: all at once, or in waves of `--wave` agents (each wave waits for the last)
    const t0 = now();
    const w = o.wave;
    const wave = w > 0 && w < n ? w : n;
    let synced: Json[] = [];
    for (let from = 0; from < n; from += wave) {
      const part = groups.map((g) =>
        g.filter((_, j) => j * groups.length >= from && j * groups.length < from + wave)
      );
      await Promise.all(
        gens.map((g, i) =>
          g.req({
            cmd: "agents",
            clusters: part[i],
            serverPort: port,
            rootCaPem: rootPem,
            token,
            discoveryObjects: o.discovered,
          })
        ),
      );
      synced = await all(gens, { cmd: "waitSynced", timeoutMs: 120_000 + n * 100 });
      if (wave < n) log(`meshrelay: wave up to ${Math.min(n, from + wave)} agents in sync`);
    }
    result.bootstrapWave = wave;
    result.discoveredPerAgent = o.discovered;
    const syncLat = latencies(concat(synced, "times"), t0);
    const bootLat = latencies(concat(synced, "bootstrapped"), t0);
    const connected = await metric(mport, "relay_push_clients_connected");
    const issued = await metric(mport, "meshrelay_client_certificates_issued_total");
    const bootSeconds = Math.max(...bootLat.values) / 1000;
    const allSynced = Math.max(...syncLat.values) / 1000;
    log(
      `meshrelay: ${syncLat.values.length}/${n} agents in sync after ${r1(allSynced)} s ` +
        `(certificates issued ${issued}, connected ${connected})`,
    );
    Object.assign(result, {
      agentsSynced: syncLat.values.length,
      certificatesIssued: issued,
      bootstrapStormSeconds: r3(bootSeconds),
      csrsSignedPerSecond: r1(bootLat.values.length / bootSeconds),
      allConnectedSeconds: r3(allSynced),
      bootstrapP50Ms: r1(quantile(bootLat.values, 0.5)),
      syncedP50Ms: r1(quantile(syncLat.values, 0.5)),
      bootstrapTimeline: timeline(concat(synced, "times"), t0),
    });
    await sleep(3000);
    const rssN = rssOf(server.proc!.pid);
    result.connectedHeld = await metric(mport, "relay_push_clients_connected");
    result.rssBytes = rssN;
    result.rssPerAgentBytes = Math.round((rssN - rss0) / n);
    const fullDesiredBytes = await metric(mport, "meshrelay_sync_bytes_sent_total");
    const stats0 = await all(gens, { cmd: "stats" });
    result.connectionsAccepted = await metric(mport, "meshrelay_connections_accepted_total");
    result.bootstrapSessionAttempts = stats0.reduce((s, x) => s + x.sessions, 0);
    result.bootstrapAgentLogs = stats0.map((x) => x.logs);
    log(
      `meshrelay: ${result.connectionsAccepted} connections accepted, ` +
        `${result.bootstrapSessionAttempts} Sync sessions started by ${n} agents`,
    );
    const fullDiscoveryBytes = stats0.reduce((s, x) => s + x.discoveryBytesSent, 0);
    log(`meshrelay: RSS ${Math.round(rssN / 2 ** 20)} MiB with ${result.connectedHeld} agents held`);
    const memHeld = await memorySplit(mport);
    log(`meshrelay: memory with ${n} agents held: ${mibs(memHeld)}`);
    result.memoryIdle = memIdle;
    result.memoryHeld = memHeld;
    let heldHeap: HeapSummary | undefined;
    if (inspect && idleHeap) {
      const held = heldHeap = await snapshot(inspect, `${o.heapSnapshot}-${n}-held.heapsnapshot`);
      const grown = diffHeapSummaries(idleHeap, held);
      log(
        `meshrelay: heap with ${n} agents held vs idle\n` +
          formatHeapSummary(grown, { top: 40, perUnit: { n, unit: "agent" } }),
      );
      result.heapHeldBytes = held.totalBytes;
      result.heapIdleBytes = idleHeap.totalBytes;
    }

    // --- fan-out: a config file change until every agent applied it
    const fan: number[] = [];
    let fanMissing = 0;
    for (let r = 0; r < o.rounds; r++) {
      const stamp = `m${r}`;
      const text = configDocs([], stamp).fanout;
      const tc = now();
      await writeAtomic(`${configDir}/fanout.yaml`, text);
      const got = await all(gens, { cmd: "waitStamp", stamp, timeoutMs: 60_000 });
      const l = latencies(concat(got, "times"), tc);
      fan.push(...l.values);
      fanMissing += l.missing;
      await sleep(500);
    }
    Object.assign(result, {
      fanoutP50Ms: r1(quantile(fan, 0.5)),
      fanoutP99Ms: r1(quantile(fan, 0.99)),
      fanoutMaxMs: r1(Math.max(...fan)),
      fanoutSamples: fan.length,
      fanoutMissing: fanMissing,
    });
    log(`meshrelay: fan-out p50 ${result.fanoutP50Ms} ms, p99 ${result.fanoutP99Ms} ms`);

    // --- discovery ingest: new entities in every agent until the server applied them all
    const objs0 = await metric(mport, "meshrelay_discovery_objects_total");
    const ing = await all(gens, { cmd: "ingest", perAgent: o.ingest, tag: "a", padBytes: 200 });
    const ti = Math.min(...ing.map((x) => x.t0));
    const want = objs0 + n * o.ingest;
    let tDone = NaN;
    for (let i = 0; i < 1200; i++) {
      if ((await metric(mport, "meshrelay_discovery_objects_total")) >= want) {
        tDone = now();
        break;
      }
      await sleep(50);
    }
    // Not every change arrived in time: say so instead of a rate made from NaN.
    result.ingestChangesPerSecond = Number.isFinite(tDone)
      ? Math.round((n * o.ingest) / ((tDone - ti) / 1000))
      : "incomplete";
    // What every agent holds, so pushes again after the kill -9 below, whether or not the server had
    // applied all of it in time: memory after the restart depends on it.
    result.discoveredPerAgentAfterStorm = o.discovered + o.ingest;
    log(`meshrelay: discovery ingest ${result.ingestChangesPerSecond} changes/s`);
    await sleep(1000);

    // --- reconnect by difference (server keeps its state)
    const desiredBefore = await metric(mport, "meshrelay_sync_bytes_sent_total");
    const statsA = await all(gens, { cmd: "stats" });
    const discA = statsA.reduce((s, x) => s + x.discoveryBytesSent, 0);
    await all(gens, { cmd: "mark" });
    await all(gens, { cmd: "reconnect" });
    const rc = await all(gens, { cmd: "waitSynced", timeoutMs: 120_000 + n * 50 });
    const statsB = await all(gens, { cmd: "stats" });
    Object.assign(result, {
      reconnectAgentsResynced: concat(rc, "times").filter((t) => t !== null).length,
      reconnectDesiredBytes: (await metric(mport, "meshrelay_sync_bytes_sent_total")) - desiredBefore,
      reconnectDiscoveryBytes: statsB.reduce((s, x) => s + x.discoveryBytesSent, 0) - discA,
      // Hello + Welcome version lists, exchanged on every (re)connect besides the diffs.
      reconnectVersionListBytes: statsB.reduce((s, x) => s + x.versionListBytes, 0),
      fullSyncDesiredBytes: fullDesiredBytes,
      fullSyncDiscoveryBytes: fullDiscoveryBytes,
    });

    if (o.noStorm) return result;
    // --- reconnect storm after kill -9
    const discC = statsB.reduce((s, x) => s + x.discoveryBytesSent, 0);
    await all(gens, { cmd: "mark" });
    const tKill = now();
    const st = await server.kill("SIGKILL");
    result.killSignal = st.signal;
    const restartMs = await server.start();
    const storm = await all(gens, { cmd: "waitSynced", timeoutMs: 120_000 + n * 100 });
    const stormLat = latencies(concat(storm, "times"), tKill);
    const reconnLat = latencies(concat(storm, "connected"), tKill);
    const statsD = await all(gens, { cmd: "stats" });
    // As for the first RSS figure: a few seconds for the storm's garbage, then the memory split.
    await sleep(3000);
    const memAfterStorm = await memorySplit(mport);
    log(`meshrelay: memory after the restart with ${n} agents back: ${mibs(memAfterStorm)}`);
    if (inspect && heldHeap) {
      // The restarted server (same --inspect address) against the first one with the same agents.
      const back = await snapshot(inspect, `${o.heapSnapshot}-${n}-after-restart.heapsnapshot`);
      log(
        `meshrelay: heap after the restart vs held before it\n` +
          formatHeapSummary(diffHeapSummaries(heldHeap, back), { top: 30, perUnit: { n, unit: "agent" } }),
      );
    }
    Object.assign(result, {
      stormRestartMs: Math.round(restartMs),
      stormAgentsConverged: stormLat.values.length,
      stormConvergedSeconds: r3(Math.max(...stormLat.values) / 1000),
      stormP50Seconds: r3(quantile(stormLat.values, 0.5) / 1000),
      stormConvergedTimeline: timeline(concat(storm, "times"), tKill),
      stormReconnectedSeconds: r3(Math.max(...reconnLat.values) / 1000),
      stormReconnectTimeline: timeline(concat(storm, "connected"), tKill),
      stormSessionAttempts: statsD.reduce((s, x) => s + x.sessions, 0) -
        statsB.reduce((s, x) => s + x.sessions, 0),
      stormDesiredBytes: await metric(mport, "meshrelay_sync_bytes_sent_total"),
      stormDiscoveryBytes: statsD.reduce((s, x) => s + x.discoveryBytesSent, 0) - discC,
      stormConnected: await metric(mport, "relay_push_clients_connected"),
      rssAfterStormBytes: rssOf(server.proc!.pid),
      memoryAfterStorm: memAfterStorm,
      loadgenRssBytes: statsD.reduce((s, x) => s + x.rssBytes, 0),
      loadgenProcesses: gens.length,
      agentLogs: statsD.map((x) => x.logs),
    });
    log(
      `meshrelay: reconnect storm converged ${result.stormAgentsConverged}/${n} in ${result.stormConvergedSeconds} s`,
    );
    return result;
  } finally {
    await stopAll(gens);
    const st = await server.kill("SIGTERM");
    result.serverExit = { code: st.code, signal: st.signal };
  }
}

async function runN(n: number, o: Options): Promise<Json> {
  const tmp = await Deno.makeTempDir({ prefix: `mr-bench-${n}-` });
  log(`N=${n}: work dir ${tmp}`);
  try {
    const pki = await makeTestPki(new Date(), new FileSecretStore(`${tmp}/secrets`));
    const pem = await writeBaselineTls(pki, tmp);
    const token = dec.decode((await pki.store.get("relay-identity-token-secret"))!.data.token).trim();
    log(`N=${n}: baseline phase`);
    const baseline = await runBaseline(n, o, tmp, pem);
    await sleep(2000);
    log(`N=${n}: meshrelay phase`);
    const relay = await runRelay(n, o, tmp, pki.rootPem, token);
    return { agents: n, baseline, meshrelay: relay };
  } finally {
    if (!o.keep) await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

// ------------------------------------------------------------------ report

function machine(): Json {
  const cpu = /model name\s*:\s*(.+)/.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? "unknown";
  const limits = Deno.readTextFileSync("/proc/self/limits");
  const nofile = /Max open files\s+(\d+)\s+(\d+)/.exec(limits);
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    deno: Deno.version.deno,
    os: Deno.build.os,
    openFilesLimit: nofile ? Number(nofile[1]) : undefined,
    loadAverageAtStart: Deno.loadavg(),
  };
}

const mib = (b: number) => `${r1(b / 2 ** 20)} MiB`;
const kib = (b: number) => `${r1(b / 1024)} KiB`;
const ratio = (a: number, b: number) => (b > 0 ? `${r1(a / b)}×` : "–");
const ratio3 = (a: number, b: number) => (b > 0 ? `${r3(a / b)}×` : "–");

/** The table of one run, in Markdown (README's Performance section takes it as is). */
/** The issue's memory target for 5,000 agents: 500 MB, decimal (476.8 MiB). */
function memoryTarget(rss: number): string {
  return `< 500 MB (${mib(500e6)}): ${rss < 500e6 ? "met" : `NOT met (${Math.round(rss / 1e6)} MB)`}`;
}

export function table(results: Json[]): string {
  const rows: string[][] = [["Figure", "N", "meshrelay", "baseline (bare grpc-js)", "ratio", "target"]];
  for (const r of results) {
    const m = r.meshrelay, b = r.baseline, n = String(r.agents);
    // A full resync of the current state: every desired object (as first sent) and every discovered
    // object (as pushed after the kill -9, when the server had forgotten them).
    // The full-sync size is the kill -9 restart's full discovery push of the current state, so without the
    // storm (--no-storm) the rows that need it say so instead of printing NaN.
    const storm = typeof m.stormConvergedSeconds === "number";
    const full = m.fullSyncDesiredBytes + m.stormDiscoveryBytes;
    const skipped = ["skipped (--no-storm)", "", ""];
    rows.push(
      ["connected agents held", n, `${m.connectedHeld}`, `${b.streamsOpen}`, "", ""],
      [
        `server RSS (total; ${m.discoveredPerAgent ?? DISCOVERED_PER_AGENT} discovered objects per agent)`,
        n,
        mib(m.rssBytes),
        mib(b.rssBytes),
        ratio(m.rssBytes, b.rssBytes),
        n === "5000" ? memoryTarget(m.rssBytes) : "",
      ],
      [
        `server RSS after the kill -9 restart, all back (${
          m.discoveredPerAgentAfterStorm ?? "?"
        } objects per agent)`,
        n,
        ...(typeof m.rssAfterStormBytes === "number"
          ? [mib(m.rssAfterStormBytes), "", "", n === "5000" ? memoryTarget(m.rssAfterStormBytes) : ""]
          : [...skipped, ""]),
      ],
      [
        "server RSS per agent",
        n,
        kib(m.rssPerAgentBytes),
        kib(b.rssPerStreamBytes),
        ratio(m.rssPerAgentBytes, b.rssPerStreamBytes),
        "",
      ],
      [
        "fan-out p50 / p99 (ms)",
        n,
        `${m.fanoutP50Ms} / ${m.fanoutP99Ms}`,
        `${b.fanoutP50Ms} / ${b.fanoutP99Ms}`,
        ratio(m.fanoutP99Ms, b.fanoutP99Ms),
        n === "1000" ? `p99 < 1 s: ${m.fanoutP99Ms < 1000 ? "met" : "NOT met"}` : "",
      ],
      [
        "discovery ingest (changes/s)",
        n,
        `${m.ingestChangesPerSecond}`,
        `${b.ingestMessagesPerSecond} msgs/s`,
        typeof m.ingestChangesPerSecond === "number"
          ? ratio(m.ingestChangesPerSecond, b.ingestMessagesPerSecond)
          : "",
        "",
      ],
      [
        m.bootstrapWave && m.bootstrapWave < r.agents
          ? `bootstrap in waves of ${m.bootstrapWave}: all in sync (s)`
          : "bootstrap storm: all in sync (s)",
        n,
        `${m.allConnectedSeconds}`,
        `${b.handshakeStormSeconds} (handshakes only)`,
        ratio(m.allConnectedSeconds, b.handshakeStormSeconds),
        "",
      ],
      [
        "CSRs signed/s vs handshakes/s",
        n,
        `${m.csrsSignedPerSecond}`,
        `${b.handshakesPerSecond}`,
        ratio(m.csrsSignedPerSecond, b.handshakesPerSecond),
        "",
      ],
      [
        "reconnect storm after kill -9: all reconnected / all converged (s)",
        n,
        ...(storm
          ? [
            `${m.stormReconnectedSeconds} / ${m.stormConvergedSeconds} (p50 ${m.stormP50Seconds})`,
            "",
            "",
            n === "1000" ? `< 60 s: ${m.stormConvergedSeconds < 60 ? "met" : "NOT met"}` : "",
          ]
          : [...skipped, ""]),
      ],
      [
        "bytes on reconnect (diffs + version lists) vs full sync",
        n,
        `${kib(m.reconnectDesiredBytes + m.reconnectDiscoveryBytes + m.reconnectVersionListBytes)}`,
        storm ? `${kib(full)} full` : "needs the storm run",
        storm
          ? ratio3(m.reconnectDesiredBytes + m.reconnectDiscoveryBytes + m.reconnectVersionListBytes, full)
          : "",
        "",
      ],
      [
        "bytes after kill -9 (server forgot inventories) vs full sync",
        n,
        ...(storm
          ? [
            `${kib(m.stormDesiredBytes + m.stormDiscoveryBytes + m.reconnectVersionListBytes)}`,
            `${kib(full)} full`,
            ratio3(m.stormDesiredBytes + m.stormDiscoveryBytes + m.reconnectVersionListBytes, full),
            "",
          ]
          : [...skipped, ""]),
      ],
    );
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) => `| ${r.map((c, i) => c.padEnd(w[i])).join(" | ")} |`;
  return [fmt(rows[0]), `|${w.map((x) => "-".repeat(x + 2)).join("|")}|`, ...rows.slice(1).map(fmt)].join(
    "\n",
  );
}

if (import.meta.main) {
  const program = new Command("bench:relay")
    .option("--agents <list>", "comma-separated agent counts", "1000,5000")
    .option("--quick", "one small run (100 agents)")
    .option("--rounds <n>", "fan-out rounds", "5")
    .option("--discovered <n>", "discovered objects per agent at start", String(DISCOVERED_PER_AGENT))
    .option("--ingest <n>", "new discovered entities per agent in the ingest phase", "20")
    .option("--per-loadgen <n>", "agents per load-generator process", "2500")
    .option("--keep", "keep the temp dirs (logs)")
    .option(
      "--server-v8-flags <flags>",
      'V8 flags of the meshrelay server and the baseline server ("": V8\'s defaults)',
      RUNTIME_V8_FLAGS.join(","),
    )
    .option("--server-flags <flags>", "extra deno run flags for the server, space-separated (profiling)")
    .option("--no-storm", "skip the kill -9 reconnect storm")
    .option(
      "--heap-snapshot <prefix>",
      "take heap snapshots of the server and of the baseline (idle and with N agents) into " +
        "PREFIX-N-{idle,held}.heapsnapshot and PREFIX-N-baseline-{idle,held}.heapsnapshot and print what grew " +
        "per agent",
    )
    .option(
      "--wave <n>",
      "bootstrap in waves of n agents, each after the last is in sync (default 0: all at once)",
    )
    .option("--out <file>", "JSON results", "bench/results/latest.json")
    .parse(["deno", "bench", ...Deno.args]);
  const opts = program.opts();
  const ns = opts.quick ? [100] : String(opts.agents).split(",").map(Number);
  const o: Options = {
    rounds: Number(opts.rounds),
    discovered: Number(opts.discovered),
    ingest: Number(opts.ingest),
    perLoadgen: Number(opts.perLoadgen),
    keep: !!opts.keep,
    serverV8Flags: opts.serverV8Flags,
    noStorm: opts.storm === false,
    heapSnapshot: opts.heapSnapshot,
    wave: opts.wave === undefined ? 0 : Number(opts.wave),
    serverFlags: opts.serverFlags ? String(opts.serverFlags).split(" ").filter(Boolean) : undefined,
  };
  for (const [flag, v] of [["--discovered", o.discovered], ["--ingest", o.ingest]] as const) {
    if (!Number.isInteger(v) || v < 0) {
      console.error(`bench:relay: ${flag} must be a whole number, 0 or more`);
      Deno.exit(2);
    }
  }
  const started = new Date();
  const m = machine();
  log(
    `machine: ${m.cores} cores, ${m.memoryGiB} GiB, Deno ${m.deno}, load ${m.loadAverageAtStart.join(" ")}`,
  );
  const results: Json[] = [];
  const out = opts.out.startsWith("/") ? opts.out : `${ROOT}${opts.out}`;
  await Deno.mkdir(out.slice(0, out.lastIndexOf("/")), { recursive: true });
  for (const n of ns) {
    const load0 = Deno.loadavg();
    const r = await runN(n, o);
    // Other work on the machine skews figures: say how busy it was around each run.
    r.loadAverage = { atStart: load0, atEnd: Deno.loadavg() };
    results.push(r);
    // Written after each N, so a later failure keeps what was measured.
    const report = { started: started.toISOString(), machine: m, options: o, results };
    await Deno.writeTextFile(out, JSON.stringify(report, null, 2) + "\n");
  }
  console.log(table(results));
  for (const r of results.filter((x) => x.meshrelay.stormReconnectTimeline)) {
    console.log(
      `N=${r.agents} reconnect storm after kill -9, per second: reconnected ` +
        r.meshrelay.stormReconnectTimeline.join(" ") + ` | converged ` +
        r.meshrelay.stormConvergedTimeline.join(" ") +
        ` | session attempts ${r.meshrelay.stormSessionAttempts} for ${r.agents} agents`,
    );
  }
  log(`results written to ${out}`);
}
