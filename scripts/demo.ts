/**
 * `deno task demo`: a relay server and two agents on localhost, as real processes started the way users
 * start them, with their secret stores in temporary folders. It narrates what happens:
 * bootstrap → mTLS → discovery push → desired state applied in both clusters → a client certificate
 * rotation, then stops everything and exits 0 (1 with the processes' last log lines if a step does not
 * happen within its bound).
 *
 * Uses the shipped examples: examples/config (declared config: two clusters, baseline config, service
 * federation) and examples/clusters/cluster-{1,2} (what each cluster "discovers").
 *
 * Flags: --keep keeps the temporary folder (secrets, applied files, logs) and prints where it is.
 * @module
 */
import { collectLines, listFiles, type LogLine } from "./process_output.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const CONFIG = `${REPO}/deno.json`;
const EXAMPLES = `${REPO}/examples`;
/** Short on purpose, so a rotation happens during the demo (default is one year). */
const CLIENT_CERT_TTL = "12s";
const STEP_TIMEOUT_MS = 45_000;

class Proc {
  readonly lines: LogLine[] = [];
  readonly raw: string[] = [];
  #child: Deno.ChildProcess;
  exited?: Deno.CommandStatus;
  #done: Promise<unknown>;
  #log: Deno.FsFile;

  constructor(readonly name: string, args: string[], logPath: string) {
    this.#log = Deno.openSync(logPath, { write: true, create: true, truncate: true });
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--config", CONFIG, ...args],
      cwd: REPO,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const tee = (chunk: Uint8Array) => this.#log.writeSync(chunk);
    const readers = [
      collectLines(this.#child.stdout, this, tee),
      collectLines(this.#child.stderr, this, tee),
    ];
    this.#done = Promise.all([this.#child.status.then((s) => this.exited = s), ...readers]);
  }

  get mark(): number {
    return this.lines.length;
  }

  async waitFor(pred: (l: LogLine) => boolean, what: string, from = 0): Promise<LogLine> {
    const end = Date.now() + STEP_TIMEOUT_MS;
    while (Date.now() < end && !this.exited) {
      const hit = this.lines.slice(from).find(pred);
      if (hit) return hit;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new DemoError(`${this.name}: ${what} did not happen`, this);
  }

  async stop(): Promise<void> {
    if (!this.exited) {
      try {
        this.#child.kill("SIGTERM");
      } catch { /* gone */ }
    }
    const t = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await this.#done;
    clearTimeout(t);
    this.#log.close();
  }
}

class DemoError extends Error {
  constructor(message: string, readonly proc?: Proc) {
    super(message);
  }
}

const out = (s = "") => console.log(s);
const step = (n: number, title: string) => out(`\n== ${n}. ${title}`);

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return text.split("\n").filter((l) => l.startsWith(name)).reduce(
    (n, l) => n + Number(l.split(" ").pop()),
    0,
  );
}

async function waitUntil(what: string, cond: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + STEP_TIMEOUT_MS;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new DemoError(`${what} did not happen`);
}

async function demo(tmp: string, procs: Proc[]): Promise<void> {
  const server = `${tmp}/server-secrets`;
  step(1, "relay server: mTLS on one port, CA/server certificate/token generated at startup");
  const s = new Proc("server", [
    "-P=server",
    "mod.ts",
    "server",
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--metrics-host",
    "127.0.0.1",
    "--metrics-port",
    "0",
    "--secrets-dir",
    server,
    "--config-dir",
    `${EXAMPLES}/config`,
    "--client-cert-ttl",
    CLIENT_CERT_TTL,
  ], `${tmp}/server.log`);
  procs.push(s);
  const listening = await s.waitFor((l) => l.msg === "relay server listening", "listening");
  const port = Number(String(listening.address).split(":").pop());
  const metricsPort = Number(listening.metricsPort);
  out(`   gRPC 127.0.0.1:${port} (Identity + Relay), metrics http://127.0.0.1:${metricsPort}/metrics`);
  out(`   created: ${(listening.createdSecrets as string[]).join(", ")}`);
  out(
    `   registered clusters: ${(listening.clusters as string[]).join(", ")} (examples/config/clusters.yaml)`,
  );
  out(`   client certificates live ${CLIENT_CERT_TTL} here so that a rotation shows (default: one year)`);

  step(2, "two agents: bootstrap with the identity token; the private key never leaves the agent");
  const agents = ["cluster-1", "cluster-2"].map((c) => {
    const p = new Proc(c, [
      "-P=agent",
      "mod.ts",
      "agent",
      "--cluster",
      c,
      "--server-address",
      `127.0.0.1:${port}`,
      "--secrets-dir",
      `${tmp}/${c}-secrets`,
      "--root-ca",
      `${server}/relay-root-tls-secret/ca.crt`,
      "--token-file",
      `${server}/relay-identity-token-secret/token`,
      "--discovery-dir",
      `${EXAMPLES}/clusters/${c}`,
      "--apply-dir",
      `${tmp}/${c}-applied`,
      "--no-metrics",
    ], `${tmp}/${c}.log`);
    procs.push(p);
    return p;
  });
  for (const a of agents) {
    const b = await a.waitFor((l) => l.msg === "bootstrapped: client certificate issued", "bootstrap");
    out(
      `   ${a.name}: CSR sent with the token → client certificate ${b.serial} (SAN ${a.name}), stored in ` +
        `${a.name}-secrets/relay-client-tls-secret`,
    );
  }

  step(3, "mTLS: every session now proves the cluster with its certificate");
  for (const a of agents) {
    const c = await a.waitFor((l) => l.msg === "connected", "mTLS session");
    out(`   ${a.name}: Sync stream open; the server named us "${c.cluster}" from the certificate's SAN`);
  }

  step(4, "discovery: each agent pushes what it finds in its cluster (examples/clusters/<name>)");
  await waitUntil(
    "discovery pushes",
    async () => (await metric(metricsPort, "meshrelay_discovery_pushes_total")) >= 2,
  );
  out(
    `   server inventory updates: ${await metric(metricsPort, "meshrelay_discovery_pushes_total")} pushes, ` +
      `${await metric(metricsPort, "meshrelay_discovery_objects_total")} objects`,
  );

  step(5, "config pulled and applied in both clusters, including a service federated across them");
  for (const a of agents) {
    await a.waitFor((l) => l.msg === "in sync with the server", "in sync");
  }
  // cluster-1 discovered Service apps/reviews labelled meshrelay.io/export=true: cluster-2 gets a ServiceEntry.
  await waitUntil(
    "the ServiceEntry federated from cluster-1 in cluster-2",
    async () => (await listFiles(`${tmp}/cluster-2-applied`)).some((f) => f.includes("ServiceEntry")),
  );
  for (const a of agents) {
    out(`   ${a.name}-applied/:`);
    for (const f of await listFiles(`${tmp}/${a.name}-applied`)) out(`     ${f}`);
  }
  out("   (the ServiceEntry in cluster-2 comes from the Service cluster-1 discovered and exported)");

  step(6, "client certificate rotation over mTLS, before expiry, then reconnect with the new one");
  const marks = agents.map((a) => a.mark);
  const rotated = await Promise.any(
    agents.map((a, i) =>
      a.waitFor((l) => l.msg === "client certificate renewed", "renewal", marks[i]).then((l) => ({ a, l, i }))
    ),
  ).catch(() => {
    throw new DemoError("no client certificate was renewed", agents[0]);
  });
  out(
    `   ${rotated.a.name}: ${rotated.l.previousSerial} → ${rotated.l.serial} (valid until ${rotated.l.notAfter})`,
  );
  await rotated.a.waitFor(
    (l) => l.msg === "in sync with the server",
    "in sync after the rotation",
    marks[rotated.i],
  );
  out(`   ${rotated.a.name}: back in sync with the new certificate; no token was needed`);
}

async function main(): Promise<number> {
  const keep = Deno.args.includes("--keep");
  const tmp = await Deno.makeTempDir({ prefix: "meshrelay-demo-" });
  const procs: Proc[] = [];
  out("meshrelay demo: a relay server and two agents on localhost (real processes, stores in a temp folder)");
  let code = 0;
  try {
    await demo(tmp, procs);
    out(
      "\nDone: bootstrap → mTLS → discovery → config applied in both clusters → client certificate rotation.",
    );
  } catch (e) {
    code = 1;
    out(`\ndemo failed: ${e instanceof Error ? e.message : String(e)}`);
    const p = e instanceof DemoError ? e.proc : undefined;
    for (const q of p ? [p] : procs) {
      out(`--- last lines of ${q.name}:`);
      for (const l of q.raw.slice(-15)) out(l);
    }
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    if (keep) out(`kept ${tmp} (secrets, applied files, *.log)`);
    else await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return code;
}

if (import.meta.main) Deno.exit(await main());
