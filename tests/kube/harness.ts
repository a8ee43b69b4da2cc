/**
 * A real Kubernetes API server for tests, the way controller-runtime's envtest provides one: etcd and
 * kube-apiserver (the `meshrelay-testenv` binary built by `deno task testenv:build`) on loopback, with a
 * fresh CA, serving certificate, admin client certificate (group `system:masters`) and service-account keys.
 *
 * There is no controller-manager: no garbage collection, namespaces stay Terminating after delete, no
 * default ServiceAccounts or tokens are created. RBAC is enforced for every identity but the admin.
 *
 * ```ts
 * Deno.test({ name: "…", ignore: !kubeAvailable(), fn: async () => {
 *   await using cluster = await startTestCluster();
 *   const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
 * } });
 * ```
 * @module
 */
import { KubeConfig } from "@kubernetes/client-node";
import { stringify as toYaml } from "yaml";
import { repoRoot, TESTENV_BINARY } from "../../scripts/build_testenv.ts";
import { createTestPki, issueClientCert, type TestPki } from "./testenv_pki.ts";

/** Printed (once per process) when the binary is missing and the Kubernetes tests are ignored. */
export const KUBE_SKIP_MESSAGE = "Kubernetes tests skipped: run deno task testenv:build (needs Go)";

/** Options of {@linkcode startTestCluster}. */
export interface TestClusterOptions {
  /** Names the kubeconfig cluster/context and the temp dir; default `testenv`. */
  name?: string;
  /** The meshrelay-testenv binary; default `$MESHRELAY_TESTENV_BIN` or tests/kube/apiserver/bin/. */
  binary?: string;
  /** How long etcd plus the API server may take to become ready; default 120 s (two shared cores). */
  startTimeoutMs?: number;
  /** Keep the temp dir (certs, data, logs) after stop, for debugging. */
  keepDir?: boolean;
  /** Extra kube-apiserver flags (`--name=value`), appended after the envtest defaults. */
  apiServerFlags?: string[];
}

/** A kubeconfig for one identity. */
export interface TestUser {
  readonly kubeConfig: KubeConfig;
  readonly kubeconfigPath: string;
  /** PEM, for clients that do not read kubeconfigs. */
  readonly certPem: string;
  readonly keyPem: string;
}

/** A running etcd + kube-apiserver. */
export interface TestCluster {
  readonly name: string;
  /** `https://127.0.0.1:<port>` */
  readonly url: string;
  /** Admin kubeconfig file (embedded certificates; `system:masters`). */
  readonly kubeconfigPath: string;
  /** The same admin identity as a loaded KubeConfig. */
  readonly kubeConfig: KubeConfig;
  /** The CA that signed the serving certificate and every client certificate (PEM). */
  readonly caPem: string;
  /** Issuer the API server puts in service-account tokens. */
  readonly serviceAccountIssuer: string;
  /** Temp dir holding certs, etcd data and the `etcd.log` / `apiserver.log` files. */
  readonly dir: string;
  /** A kubeconfig for another identity (subject to RBAC), e.g. to test least-privilege roles. */
  user(name: string, groups?: string[]): Promise<TestUser>;
  /** Stops the API server and etcd, then deletes the temp dir. Idempotent. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Where the binary is expected. */
export function testenvBinaryPath(): string {
  return Deno.env.get("MESHRELAY_TESTENV_BIN") || `${repoRoot()}/${TESTENV_BINARY}`;
}

let skipNoticePrinted = false;

/**
 * True when the test API server binary exists. When it does not, prints {@linkcode KUBE_SKIP_MESSAGE}
 * (once) so an ignored Kubernetes test is never a silent pass. Use as `ignore: !kubeAvailable()`.
 */
export function kubeAvailable(): boolean {
  try {
    const st = Deno.statSync(testenvBinaryPath());
    if (st.isFile && st.mode !== null && (st.mode & 0o111) !== 0) return true;
  } catch {
    // Missing: fall through to the notice.
  }
  if (!skipNoticePrinted) {
    skipNoticePrinted = true;
    console.warn(`${KUBE_SKIP_MESSAGE} (no ${testenvBinaryPath()})`);
  }
  return false;
}

/** Free loopback TCP ports (the listeners are closed before use; startup retries on a lost race). */
function freePorts(n: number): number[] {
  const listeners = Array.from({ length: n }, () => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const ports = listeners.map((l) => (l.addr as Deno.NetAddr).port);
  listeners.forEach((l) => l.close());
  return ports;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Proc {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  readonly logPath: string;
  /** Resolves when the child exited and its output is flushed to the log. */
  readonly done: Promise<Deno.CommandStatus>;
  readonly exited: boolean;
}

async function spawn(name: string, binary: string, args: string[], logPath: string): Promise<Proc> {
  const log = await Deno.open(logPath, { write: true, create: true, truncate: true });
  const child = new Deno.Command(binary, { args, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
  // Both streams go to one file; the writer is shared, so it is closed once both are drained.
  const writer = log.writable.getWriter();
  const drain = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s) await writer.write(chunk);
  };
  const state = { exited: false };
  const done = (async () => {
    const [status] = await Promise.all([child.status, drain(child.stdout), drain(child.stderr)]);
    await writer.close();
    state.exited = true;
    return status;
  })();
  const proc: Proc = {
    name,
    child,
    logPath,
    done,
    get exited() {
      return state.exited;
    },
  };
  return proc;
}

async function tail(path: string, lines = 25): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function terminate(p: Proc, graceMs: number): Promise<void> {
  if (p.exited) return;
  try {
    p.child.kill("SIGTERM");
  } catch {
    // Already gone.
  }
  const timer = setTimeout(() => {
    try {
      p.child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, graceMs);
  try {
    await p.done;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Polls `probe` until it returns true, `proc` exits, or the deadline passes; failures say which and
 * include the tail of the process log.
 */
async function waitUntil(
  proc: Proc,
  what: string,
  deadline: number,
  probe: () => Promise<boolean>,
): Promise<void> {
  let last = "";
  while (Date.now() < deadline) {
    if (proc.exited) {
      const st = await proc.done;
      throw new Error(`${proc.name} exited (code ${st.code}) before ${what}:\n${await tail(proc.logPath)}`);
    }
    try {
      if (await probe()) return;
    } catch (e) {
      last = e instanceof Error ? e.message : String(e);
    }
    await sleep(200);
  }
  throw new Error(
    `${proc.name}: ${what} did not happen in time${last ? ` (last error: ${last})` : ""}:\n${await tail(
      proc.logPath,
    )}`,
  );
}

function kubeConfigFor(
  clusterName: string,
  url: string,
  caPem: string,
  user: string,
  cert: string,
  key: string,
) {
  const b64 = (s: string) => btoa(s);
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: clusterName, server: url, caData: b64(caPem), skipTLSVerify: false }],
    users: [{ name: user, certData: b64(cert), keyData: b64(key) }],
    contexts: [{ name: clusterName, cluster: clusterName, user }],
    currentContext: clusterName,
  });
  return kc;
}

async function writeKubeconfig(path: string, kc: KubeConfig): Promise<void> {
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, toYaml(JSON.parse(kc.exportConfig())), { mode: 0o600 });
  await Deno.rename(tmp, path);
}

/** Starts etcd and kube-apiserver; the returned cluster is ready (`/readyz` answered ok). */
export async function startTestCluster(opts: TestClusterOptions = {}): Promise<TestCluster> {
  const name = opts.name ?? "testenv";
  const binary = opts.binary ?? testenvBinaryPath();
  if (!kubeAvailable() && !opts.binary) throw new Error(KUBE_SKIP_MESSAGE);
  const dir = await Deno.makeTempDir({ prefix: `meshrelay-${name}-` });
  const procs: Proc[] = [];
  const stopAll = async () => {
    for (const p of procs.toReversed()) await terminate(p, 10_000);
  };
  try {
    const pkiDir = `${dir}/pki`;
    await Deno.mkdir(pkiDir, { mode: 0o700 });
    const pki = await createTestPki(pkiDir);
    const caPem = await Deno.readTextFile(pki.caCert);
    const admin = await issueClientCert(pki, "meshrelay-testenv-admin", ["system:masters"]);

    // A port taken between freePorts() and bind makes a process exit; one retry with new ports covers it.
    for (let attempt = 1;; attempt++) {
      try {
        const started = await startProcesses(binary, dir, pki, opts, procs);
        const kubeConfig = kubeConfigFor(name, started.url, caPem, "admin", admin.certPem, admin.keyPem);
        const kubeconfigPath = `${dir}/kubeconfig`;
        await writeKubeconfig(kubeconfigPath, kubeConfig);
        return makeCluster(name, dir, started.url, caPem, pki, kubeConfig, kubeconfigPath, stopAll, opts);
      } catch (e) {
        await stopAll();
        procs.length = 0;
        const portRace = e instanceof Error && /address already in use/.test(e.message);
        if (!portRace || attempt >= 3) throw e;
      }
    }
  } catch (e) {
    await stopAll();
    if (!opts.keepDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}

async function startProcesses(
  binary: string,
  dir: string,
  pki: TestPki,
  opts: TestClusterOptions,
  procs: Proc[],
): Promise<{ url: string }> {
  const deadline = Date.now() + (opts.startTimeoutMs ?? 120_000);
  const [etcdClient, etcdPeer, securePort] = freePorts(3);
  const etcdUrl = `http://127.0.0.1:${etcdClient}`;
  const peerUrl = `http://127.0.0.1:${etcdPeer}`;
  const dataDir = `${dir}/etcd-${etcdClient}`;

  const etcd = await spawn("etcd", binary, [
    "etcd",
    "--name=testenv",
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${etcdUrl}`,
    `--advertise-client-urls=${etcdUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=testenv=${peerUrl}`,
    // Data is thrown away after the test; fsync would only slow every write on a shared disk.
    "--unsafe-no-fsync=true",
    "--log-level=warn",
  ], `${dir}/etcd.log`);
  procs.push(etcd);
  await waitUntil(etcd, "etcd /health", deadline, async () => {
    const res = await fetch(`${etcdUrl}/health`);
    const body = await res.json() as { health?: string };
    return res.ok && body.health === "true";
  });

  const url = `https://127.0.0.1:${securePort}`;
  // envtest's flags (controller-runtime pkg/internal/testing/controlplane), with our own serving cert.
  const apiserver = await spawn("kube-apiserver", binary, [
    "apiserver",
    `--etcd-servers=${etcdUrl}`,
    `--cert-dir=${dir}/apiserver-certs`,
    `--tls-cert-file=${pki.servingCert}`,
    `--tls-private-key-file=${pki.servingKey}`,
    `--client-ca-file=${pki.caCert}`,
    `--secure-port=${securePort}`,
    "--bind-address=127.0.0.1",
    "--advertise-address=127.0.0.1",
    "--service-cluster-ip-range=10.0.0.0/24",
    "--allow-privileged=true",
    "--disable-admission-plugins=ServiceAccount",
    "--authorization-mode=RBAC",
    `--service-account-issuer=${url}/`,
    `--service-account-key-file=${pki.serviceAccountPub}`,
    `--service-account-signing-key-file=${pki.serviceAccountKey}`,
    ...(opts.apiServerFlags ?? []),
  ], `${dir}/apiserver.log`);
  procs.push(apiserver);

  const caPem = await Deno.readTextFile(pki.caCert);
  const client = Deno.createHttpClient({ caCerts: [caPem] });
  try {
    // /readyz is readable anonymously (system:public-info-viewer), so the probe needs no client cert.
    await waitUntil(apiserver, "/readyz", deadline, async () => {
      const res = await fetch(`${url}/readyz`, { client });
      await res.body?.cancel();
      return res.status === 200;
    });
  } finally {
    client.close();
  }
  return { url };
}

function makeCluster(
  name: string,
  dir: string,
  url: string,
  caPem: string,
  pki: TestPki,
  kubeConfig: KubeConfig,
  kubeconfigPath: string,
  stopAll: () => Promise<void>,
  opts: TestClusterOptions,
): TestCluster {
  let stopping: Promise<void> | undefined;
  const stop = () =>
    stopping ??= (async () => {
      await stopAll();
      if (!opts.keepDir) await Deno.remove(dir, { recursive: true });
    })();
  return {
    name,
    url,
    kubeconfigPath,
    kubeConfig,
    caPem,
    serviceAccountIssuer: `${url}/`,
    dir,
    async user(user: string, groups: string[] = []): Promise<TestUser> {
      const cert = await issueClientCert(pki, user, groups);
      const kc = kubeConfigFor(name, url, caPem, user, cert.certPem, cert.keyPem);
      const path = `${dir}/kubeconfig-${user.replace(/[^-.a-zA-Z0-9]/g, "_")}`;
      await writeKubeconfig(path, kc);
      return { kubeConfig: kc, kubeconfigPath: path, certPem: cert.certPem, keyPem: cert.keyPem };
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
