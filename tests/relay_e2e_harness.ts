/**
 * Real-process harness for the relay end-to-end tests: runs `deno run -P=<mode> mod.ts <mode> …` from
 * the repository (the same command users run), reads the JSON log lines, and always kills what it
 * started. Waits are bounded conditions, never timed assertions.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { RelayClient, type ServerMessage } from "../src/proto/mod.ts";
import { collectLines, listFiles, type LogLine } from "../scripts/process_output.ts";

export const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
export const EXAMPLES = `${REPO}/examples`;
const CONFIG = `${REPO}/deno.json`;

export type { LogLine };

/** A running meshrelay process. */
export class Proc {
  readonly name: string;
  readonly lines: LogLine[] = [];
  readonly raw: string[] = [];
  #child: Deno.ChildProcess;
  #done: Promise<Deno.CommandStatus>;
  #readers: Promise<void>[] = [];
  exited?: Deno.CommandStatus;

  constructor(name: string, child: Deno.ChildProcess) {
    this.name = name;
    this.#child = child;
    this.#readers.push(collectLines(child.stderr, this), collectLines(child.stdout, this));
    this.#done = child.status.then((s) => this.exited = s);
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** Waits until a log line matches; returns it. */
  async waitForLine(
    pred: (l: LogLine) => boolean,
    what: string,
    timeoutMs = 30_000,
    from = 0,
  ): Promise<LogLine> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      const hit = this.lines.slice(from).find(pred);
      if (hit) return hit;
      if (this.exited) break;
      await sleep(25);
    }
    throw new Error(
      `${this.name}: no log line "${what}" (${this.exited ? `exited ${this.exited.code}` : "timed out"})\n` +
        this.raw.slice(-25).join("\n"),
    );
  }

  /** Number of lines so far (to wait for lines after a point). */
  get mark(): number {
    return this.lines.length;
  }

  /** Sends `signal` and waits for the exit. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    if (!this.exited) {
      try {
        this.#child.kill(signal);
      } catch { /* already gone */ }
    }
    const s = await this.#done;
    await Promise.allSettled(this.#readers);
    return s;
  }

  /** kill -9. */
  kill9(): Promise<Deno.CommandStatus> {
    return this.stop("SIGKILL");
  }

  /** The exit, if it exits within `timeoutMs`. */
  async exitWithin(timeoutMs: number): Promise<Deno.CommandStatus | undefined> {
    const end = Date.now() + timeoutMs;
    while (!this.exited && Date.now() < end) await sleep(25);
    if (this.exited) await Promise.allSettled(this.#readers);
    return this.exited;
  }
}

/** Starts `meshrelay <mode> <args…>` under the mode's permission set. */
export function spawn(
  mode: "server" | "agent" | "certs",
  args: string[],
  name: string = mode,
  env: Record<string, string> = {},
): Proc {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--config", CONFIG, `-P=${mode}`, `${REPO}/mod.ts`, mode, ...args],
    cwd: REPO,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  return new Proc(name, child);
}

/**
 * Runs a one-shot command (certs, server token create, a start refused) to completion; one that is still
 * running after `timeoutMs` is killed (exit 143), so a command that should have ended fails the test
 * instead of hanging it.
 */
export async function runCli(
  mode: "server" | "agent" | "certs",
  args: string[],
  timeoutMs = 120_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--config", CONFIG, `-P=${mode}`, `${REPO}/mod.ts`, mode, ...args],
    cwd: REPO,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` until true or the bound passes. */
export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A free TCP port on 127.0.0.1 (for a server that must come back on the same port). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The files an applier wrote (relative paths, sorted; its state file left out). */
export const appliedFiles: (dir: string) => Promise<string[]> = listFiles;

/** A temporary folder with the example declared config copied in (so tests can edit it). */
export async function workspace(
  prefix: string,
): Promise<{ dir: string; config: string; cleanup: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: `meshrelay-${prefix}-` });
  const config = `${dir}/config`;
  await Deno.mkdir(config);
  for await (const e of Deno.readDir(`${EXAMPLES}/config`)) {
    await Deno.copyFile(`${EXAMPLES}/config/${e.name}`, `${config}/${e.name}`);
  }
  return { dir, config, cleanup: () => Deno.remove(dir, { recursive: true }).catch(() => {}) };
}

/** Starts a server and waits until it listens; returns the process and its gRPC port. */
export async function startServer(
  args: string[],
  name = "server",
  env: Record<string, string> = {},
): Promise<{ proc: Proc; port: number; metricsPort?: number }> {
  const proc = spawn("server", ["--host", "127.0.0.1", "--metrics-host", "127.0.0.1", ...args], name, env);
  try {
    const l = await proc.waitForLine((l) => l.msg === "relay server listening", "relay server listening");
    const port = Number(String(l.address).split(":").pop());
    return { proc, port, metricsPort: l.metricsPort as number | undefined };
  } catch (e) {
    await proc.kill9();
    throw e;
  }
}

/** Starts an agent (returns at once; wait on its lines). */
export function startAgent(args: string[], name = "agent", env: Record<string, string> = {}): Proc {
  return spawn("agent", ["--no-metrics", ...args], name, env);
}

/** Kills every process given (SIGKILL), ignoring the already gone. */
export async function killAll(...procs: (Proc | undefined)[]): Promise<void> {
  await Promise.allSettled(procs.filter((p): p is Proc => !!p).map((p) => p.kill9()));
}

/**
 * The first message of a raw Sync stream opened with the given client certificate (or the error), from
 * `host` (default localhost; any other is verified as the server certificate's name "localhost").
 */
export async function rawSyncFirstMessage(opts: {
  port: number;
  rootPem: string;
  client?: { certPem: string; keyPem: string };
  metadata?: Record<string, string>;
  host?: string;
}): Promise<{ welcome?: string; code?: number; details?: string }> {
  const creds = grpc.credentials.createSsl(
    Buffer.from(opts.rootPem),
    opts.client ? Buffer.from(opts.client.keyPem) : null,
    opts.client ? Buffer.from(opts.client.certPem) : null,
  );
  const host = opts.host ?? "localhost";
  const c = new RelayClient(
    host.includes(":") ? `[${host}]:${opts.port}` : `${host}:${opts.port}`,
    creds,
    host === "localhost" ? {} : { "grpc.ssl_target_name_override": "localhost" },
  );
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
  try {
    return await new Promise((resolve) => {
      const stream = c.sync(md, { deadline: Date.now() + 15_000 });
      let done = false;
      const finish = (r: { welcome?: string; code?: number; details?: string }) => {
        if (done) return;
        done = true;
        stream.cancel();
        resolve(r);
      };
      stream.on("data", (m: ServerMessage) => {
        if (m.welcome) finish({ welcome: m.welcome.cluster });
      });
      stream.on("error", (e: grpc.ServiceError) => finish({ code: e.code, details: e.details }));
      stream.on("end", () => finish({ code: 0 }));
      stream.write({ hello: { agentVersion: "e2e", applied: [], more: false } });
    });
  } finally {
    c.close();
  }
}

/** Scrapes a metric's value (sum over series matching `labels`) from /metrics. */
export async function metricValue(
  port: number,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const ls = m[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => ls.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

/** A test's {@linkcode workspace} plus starters whose processes {@linkcode withRelay} always kills. */
export interface RelayRun {
  /** The workspace folder. */
  readonly dir: string;
  /** The editable copy of examples/config in it. */
  readonly config: string;
  /** {@linkcode startServer}, killed when the test ends. */
  server(
    args: string[],
    name?: string,
    env?: Record<string, string>,
  ): Promise<{ proc: Proc; port: number; metricsPort?: number }>;
  /** {@linkcode startAgent}, killed when the test ends. */
  agent(args: string[], name?: string, env?: Record<string, string>): Proc;
}

/**
 * Runs `body` in a fresh workspace; afterwards, pass or fail, kills every process it started through the
 * run and removes the workspace.
 */
export async function withRelay(prefix: string, body: (run: RelayRun) => Promise<void>): Promise<void> {
  const ws = await workspace(prefix);
  const procs: Proc[] = [];
  try {
    await body({
      dir: ws.dir,
      config: ws.config,
      server: async (args, name, env) => {
        const s = await startServer(args, name, env);
        procs.push(s.proc);
        return s;
      },
      agent: (args, name, env) => {
        const a = startAgent(args, name, env);
        procs.push(a);
        return a;
      },
    });
  } finally {
    await killAll(...procs);
    await ws.cleanup();
  }
}

/**
 * The server flags of a local test run: declared config from `config`, any free port, no warm-up, and
 * /metrics on any free port or (default) none.
 */
export function localServerArgs(config: string, opts: { metrics?: boolean } = {}): string[] {
  return [
    "--config-dir",
    config,
    "--port",
    "0",
    ...(opts.metrics ? ["--metrics-port", "0"] : ["--no-metrics"]),
    "--no-warmup",
  ];
}

/**
 * The agent flags of a local test run: `cluster` dialing `serverAddress`, trusting the root CA of the
 * server whose `--secrets-dir` is `serverSecrets`, bootstrapping with its shared token, and keeping its
 * secrets, discovery and applied objects under `agentDir`.
 */
export function localAgentArgs(
  o: { cluster: string; serverAddress: string; serverSecrets: string; agentDir: string },
): string[] {
  return [
    "--cluster",
    o.cluster,
    "--server-address",
    o.serverAddress,
    "--root-ca",
    `${o.serverSecrets}/relay-root-tls-secret/ca.crt`,
    "--token",
    Deno.readTextFileSync(`${o.serverSecrets}/relay-identity-token-secret/token`).trim(),
    "--secrets-dir",
    `${o.agentDir}/secrets`,
    "--discovery-dir",
    `${o.agentDir}/discovery`,
    "--apply-dir",
    `${o.agentDir}/applied`,
  ];
}

/** The shared bootstrap token in a secret store folder (a server's `--secrets-dir`, `certs init --out`). */
export async function readToken(storeDir: string): Promise<string> {
  return (await Deno.readTextFile(`${storeDir}/relay-identity-token-secret/token`)).trim();
}
