/**
 * `meshrelay server`: parses flags and environment (commander), builds the real dependencies (clock,
 * secret store, declared-config source, logger) and runs the relay server until SIGINT/SIGTERM.
 * Subcommands manage what the running server reads from the same store: per-cluster bootstrap tokens
 * and certificate revocations.
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { type Clock, systemClock } from "./clock.ts";
import { collect, parseDuration, parsePort, parsePositiveInt } from "./cli_flags.ts";
import { InvalidInputError } from "./errors.ts";
import { jsonLogger, type Logger } from "./log.ts";
import type { KubeClient } from "./kube/mod.ts";
import { runProgram } from "./cli_run.ts";
import {
  addKubeOptions,
  checkDir,
  checkDirOrAbsent,
  logLevelOf,
  logLevelOption,
  maxMessageBytesOption,
  metricsOptions,
  processMetricsRegistry,
  securityModeOf,
  securityModeOptions,
  stopSignal,
  writeAllSync,
} from "./cli_common.ts";
import { narrow, needsFromArgs } from "./permissions.ts";
import {
  DEFAULT_ADMISSION,
  DEFAULT_CLIENT_CERT_TTL_MS,
  DEFAULT_CONNECTION_LIMITS,
  DEFAULT_SECRET_CACHE_MAX_AGE_MS,
  DEFAULT_SERVER_KEEPALIVE_MS,
  DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS,
  DEFAULT_SESSION_BINDING_TTL_MS,
  IDENTITY_CALL_DEADLINE_MS,
  IDENTITY_TOKEN_KEY,
  IDENTITY_TOKEN_SECRET,
  RelayServer,
  RevocationList,
  ROOT_TLS_SECRET,
  SERVER_TLS_SECRET,
  SIGNING_TLS_SECRET,
  TokenAuthority,
  validateClusterName,
} from "./relay/mod.ts";
import { type ConfigSource, DirectoryConfigSource } from "./state/mod.ts";
import { FileSecretStore, MemorySecretStore, type SecretStore } from "./store/mod.ts";

const enc = new TextEncoder();

/** A count flag where 0 means unlimited. */
function parseCount(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) {
    throw new InvalidArgumentError("expected a whole number (0: unlimited)");
  }
  return n;
}

/** A queue length: a whole number, 0 meaning no queue. */
function parseQueueLength(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) {
    throw new InvalidArgumentError("expected a whole number (0: no queue, refuse when every slot is busy)");
  }
  return n;
}

/** A duration, or 0 to turn the thing off. */
function parseDurationOrZero(v: string): number {
  return /^\s*0+\s*$/.test(v) ? 0 : parseDuration(v);
}

/** The agent's deadline for an identity call; a longer queue wait outlives it. */
const AGENT_IDENTITY_DEADLINE_MS = IDENTITY_CALL_DEADLINE_MS;

/** The real world the commands run in; e2e tests run the whole process instead of replacing these. */
interface Deps {
  clock: Clock;
  out: (text: string) => void;
  err: (text: string) => void;
  /** Resolves on SIGINT or SIGTERM. */
  stopSignal: () => Promise<string>;
  hostname: () => string | undefined;
}

function realDeps(): Deps {
  return {
    clock: systemClock,
    out: (t) => writeAllSync(Deno.stdout, t),
    err: (t) => writeAllSync(Deno.stderr, t),
    stopSignal,
    hostname: () => {
      try {
        return Deno.hostname();
      } catch {
        return undefined;
      }
    },
  };
}

/** Labels on the secrets the server creates in Kubernetes (kubectl get secret -l app.kubernetes.io/part-of=meshrelay). */
const SECRET_LABELS = { "app.kubernetes.io/part-of": "meshrelay" };

interface KubeOpts {
  kube?: boolean;
  kubeconfig?: string;
  context?: string;
  namespace?: string;
}

/** The management cluster: its client, namespace, and the Kubernetes module. */
interface KubeTarget {
  client: KubeClient;
  namespace: string;
  kube: typeof import("./kube/mod.ts");
}

/**
 * The management cluster and namespace when `--kube` is given (the one place the server loads kubeconfig).
 * The Kubernetes client is imported here, not at startup: it alone adds ~65 MiB of RSS, which a server
 * on `--secrets-dir` and `--config-dir` never needs.
 */
async function kubeTarget(opts: KubeOpts): Promise<KubeTarget | undefined> {
  if (!opts.kube) {
    if (opts.kubeconfig || opts.context) {
      throw new InvalidInputError("--kubeconfig and --context need --kube");
    }
    return undefined;
  }
  const [cli, kube] = await Promise.all([import("./cli_kube.ts"), import("./kube/mod.ts")]);
  const client = cli.loadKubeClient({ kubeconfig: opts.kubeconfig, context: opts.context });
  return { client, namespace: cli.validateNamespace(cli.kubeNamespace(opts.namespace), "--namespace"), kube };
}

/** DNS names of the shipped `meshrelay-server` Service in `ns` (deploy/server/40-service.yaml). */
function serviceDnsNames(ns: string): string[] {
  return ["meshrelay-server", `meshrelay-server.${ns}`, `meshrelay-server.${ns}.svc`];
}

function kubeStore(t: KubeTarget): SecretStore {
  return new t.kube.KubeSecretStore({ client: t.client, namespace: t.namespace, labels: SECRET_LABELS });
}

/**
 * The one place the server's secret store is built: Secrets in `--namespace` of the management cluster
 * (`--kube`), a folder (`--secrets-dir`, the layout `meshrelay certs init --out DIR` writes), or memory.
 */
function openStore(opts: { secretsDir?: string }, log?: Logger): SecretStore {
  if (opts.secretsDir) return new FileSecretStore(opts.secretsDir);
  log?.warn(
    "no --secrets-dir: CA, certificates and token live in memory and are lost at exit " +
      "(agents then need new material)",
  );
  return new MemorySecretStore();
}

/** The store of the `token` and `revoke` subcommands: the running server's (`--kube` or `--secrets-dir`). */
async function requireStore(
  opts: KubeOpts & { secretsDir?: string },
  parent?: Command,
): Promise<SecretStore> {
  const p = (parent?.opts() ?? {}) as KubeOpts & { secretsDir?: string };
  const merged: KubeOpts = {
    kube: opts.kube ?? p.kube,
    kubeconfig: opts.kubeconfig ?? p.kubeconfig,
    context: opts.context ?? p.context,
    namespace: opts.namespace ?? p.namespace,
  };
  const dir: string | undefined = opts.secretsDir ?? p.secretsDir;
  const kube = await kubeTarget(merged);
  if (kube && dir) throw new InvalidInputError("--kube and --secrets-dir exclude each other");
  if (kube) return kubeStore(kube);
  if (!dir) {
    throw new InvalidInputError("--secrets-dir (or MESHRELAY_SECRETS_DIR) or --kube is required here");
  }
  await checkDirOrAbsent(dir, "--secrets-dir");
  return new FileSecretStore(dir);
}

/** `--kube`, `--kubeconfig`, `--context`, `--namespace` (server and its subcommands). */
const addServerKubeOptions = (cmd: Command): Command =>
  addKubeOptions(cmd, {
    kube: "Kubernetes backends: relay secrets in --namespace, declared config from the meshrelay.io CRDs",
    namespace: "with --kube: namespace of the relay secrets (default the pod's, else meshrelay)",
  });

const secretsDirOption = () =>
  new Option(
    "--secrets-dir <dir>",
    "secret store folder: one folder per secret, one file per key (what `meshrelay certs init --out DIR` writes)",
  ).env("MESHRELAY_SECRETS_DIR");

const HELP_AFTER = `
Security modes (--tls-mode):
  mtls (default)  one port; a connection without a client certificate may only call Identity.Bootstrap
                  (token + CSR -> client certificate signed by relay-tls-signing-secret); every other call
                  needs a verified client certificate, whose DNS SAN is the cluster identity.
                  --disable-ca: bring-your-own client certificates (no signing CA, Bootstrap refused).
  tls             server certificate only; every call carries the bootstrap token and names its cluster.
  insecure        plaintext (demos only); the cluster is named in call metadata, a token is required if any
                  is configured.

Secrets (in --secrets-dir, names of the seeds): relay-root-tls-secret (ca.crt), relay-tls-signing-secret
(tls.crt, tls.key, ca.crt), relay-server-tls-secret (tls.crt, tls.key, ca.crt), relay-identity-token-secret
(token). Missing ones are generated at startup unless --disable-ca-generation / --disable-token-generation;
a generated root CA keeps its key in relay-root-ca-key-secret. Server certificate files are re-read every
--tls-reload-interval and served to new connections without a restart.

Kubernetes (--kube): the same secrets as Secrets in --namespace of the management cluster, and the declared
config from the meshrelay.io custom resources (kubectl apply -f deploy/crds/). Reference: docs/kubernetes.md.

Environment: every flag with a secret or a path can come from the environment (shown as "env:" in the list above);
MESHRELAY_TOKEN keeps the shared token out of process listings.

Per-cluster bootstrap tokens (bound to one cluster, expiring, single-use):
  meshrelay server token create --cluster cluster-1 --ttl 1h --secrets-dir DIR
Reference: docs/relay.md.`;

function buildProgram(deps: Deps, setCode: (c: number) => void): Command {
  const program = new Command("meshrelay server")
    .description(
      "Run the management relay server: gRPC on --port (Identity + Relay), metrics on --metrics-port.",
    )
    .exitOverride()
    // Options after a subcommand belong to it (`token create --secrets-dir DIR`).
    .enablePositionalOptions()
    .configureOutput({
      writeOut: deps.out,
      writeErr: deps.err,
      outputError: (s, write) => write(`meshrelay server: ${s.replace(/^error: /, "")}`),
    })
    .addOption(new Option("--host <addr>", "gRPC listen address").env("MESHRELAY_HOST").default("0.0.0.0"))
    .addOption(
      new Option("--port <port>", "gRPC port (0: any free port)").env("MESHRELAY_PORT").argParser(parsePort)
        .default(9900),
    )
    .addOption(metricsOptions()[0])
    .addOption(metricsOptions()[1])
    .addOption(metricsOptions()[2])
    .addOption(secretsDirOption())
    .addOption(
      new Option(
        "--config-dir <dir>",
        "declared config: folder of YAML documents (KubernetesCluster, ClusterConfig, …)",
      )
        .env("MESHRELAY_CONFIG_DIR"),
    )
    .addOption(securityModeOptions()[0])
    .addOption(securityModeOptions()[1])
    .option("--disable-ca", "mTLS without a signing CA: agents bring their own client certificates")
    .option("--disable-ca-generation", "never create CA or server certificates; they must exist")
    .option("--disable-token-generation", "never create the shared identity token")
    .addOption(
      new Option("--token <token>", "shared identity token to use (stored in relay-identity-token-secret)")
        .env(
          "MESHRELAY_TOKEN",
        ),
    )
    .option(
      "--server-dns <name>",
      "DNS name of a generated server certificate (repeat; default localhost, host name, and with --kube " +
        "meshrelay-server[.NS[.svc]])",
      collect,
    )
    .option(
      "--server-ip <ip>",
      "IP address of a generated server certificate (repeat; default 127.0.0.1, ::1)",
      collect,
    )
    .addOption(
      new Option("--server-secret <name>", "secret with the server certificate (tlsSecret.name)").env(
        "MESHRELAY_SERVER_SECRET",
      ).default(SERVER_TLS_SECRET),
    )
    .addOption(
      new Option("--signing-secret <name>", "secret with the signing CA (signingTlsSecret.name)").env(
        "MESHRELAY_SIGNING_SECRET",
      ).default(SIGNING_TLS_SECRET),
    )
    .addOption(
      new Option("--root-secret <name>", "secret with the relay root CA").env("MESHRELAY_ROOT_SECRET")
        .default(
          ROOT_TLS_SECRET,
        ),
    )
    .addOption(
      new Option("--client-cert-ttl <duration>", "lifetime of issued client certificates").env(
        "MESHRELAY_CLIENT_CERT_TTL",
      ).argParser(parseDuration).default(DEFAULT_CLIENT_CERT_TTL_MS, "8760h (one year)"),
    )
    .addOption(
      new Option("--tls-reload-interval <duration>", "how often TLS secrets and revocations are re-read")
        .argParser(parseDuration).default(10_000, "10s"),
    )
    .addOption(
      new Option(
        "--bootstrap-failure-burst <n>",
        "failed identity attempts allowed per peer address in a burst",
      )
        .argParser(parsePositiveInt).default(10),
    )
    .addOption(
      new Option("--bootstrap-failures-per-minute <n>", "failed attempts regained per minute and peer")
        .argParser(parsePositiveInt).default(6),
    )
    .addOption(
      new Option(
        "--max-concurrent-signing <n>",
        "certificate signings (Bootstrap, Renew, SignMeshCa) running at once; more wait in the signing queue",
      ).argParser(parsePositiveInt).default(DEFAULT_ADMISSION.maxConcurrent),
    )
    .addOption(
      new Option(
        "--signing-queue <n>",
        "calls waiting for a signing slot; beyond it callers get RESOURCE_EXHAUSTED and retry later (0: no queue)",
      ).argParser(parseQueueLength).default(DEFAULT_ADMISSION.maxQueued),
    )
    .addOption(
      new Option(
        "--signing-queue-wait <duration>",
        "longest wait in the signing queue before RESOURCE_EXHAUSTED (keep it below the agents' 60s deadline)",
      ).argParser(parseDuration).default(DEFAULT_ADMISSION.maxWaitMs, "20s"),
    )
    .addOption(
      new Option(
        "--secret-cache-max-age <duration>",
        "the signing CA, root CA and shared token are re-read at most this often on the identity path; a " +
          "change (e.g. deleting the shared token) applies within it (0: read on every call)",
      ).argParser(parseDurationOrZero).default(DEFAULT_SECRET_CACHE_MAX_AGE_MS, "5s"),
    )
    .addOption(
      new Option(
        "--session-binding-ttl <duration>",
        "mTLS: how long a new agent may take to open its first Sync stream on the connection it bootstrapped " +
          "on (one connection per new agent instead of two; docs/relay.md 'Session binding'); 0: agents dial " +
          "a second, mTLS connection",
      ).argParser(parseDurationOrZero).default(DEFAULT_SESSION_BINDING_TTL_MS, "60s"),
    )
    .addOption(
      new Option("--max-connections <n>", "TCP connections on the gRPC port in all (0: unlimited)")
        .argParser(parseCount).default(DEFAULT_CONNECTION_LIMITS.maxConnections),
    )
    .addOption(
      new Option(
        "--max-connections-per-peer <n>",
        "TCP connections one peer address may hold (0: unlimited; agents behind one NAT share an address)",
      ).argParser(parseCount).default(DEFAULT_CONNECTION_LIMITS.maxConnectionsPerPeer),
    )
    .addOption(
      new Option("--handshake-timeout <duration>", "abandon a TLS handshake not finished in this time")
        .argParser(parseDuration).default(DEFAULT_CONNECTION_LIMITS.handshakeTimeoutMs, "30s"),
    )
    .addOption(
      new Option("--max-streams-per-connection <n>", "concurrent calls per connection (HTTP/2 streams)")
        .argParser(parsePositiveInt).default(DEFAULT_CONNECTION_LIMITS.maxStreamsPerConnection),
    )
    .addOption(
      new Option("--connection-idle-timeout <duration>", "close a connection with no call for this long")
        .argParser(parseDuration).default(DEFAULT_CONNECTION_LIMITS.idleTimeoutMs, "5m"),
    )
    .option("--no-connection-idle-timeout", "never close idle connections")
    .addOption(
      new Option(
        "--keepalive-interval <duration>",
        "ping an agent's connection after this much quiet (frees agents that vanished without closing)",
      ).argParser(parseDuration).default(DEFAULT_SERVER_KEEPALIVE_MS, "60s"),
    )
    .addOption(
      new Option("--keepalive-timeout <duration>", "close the connection when a ping is not answered in time")
        .argParser(parseDuration).default(DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS, "20s"),
    )
    .addOption(maxMessageBytesOption())
    .addOption(
      new Option(
        "--warmup <duration>",
        "after a start, hold desired state back until every cluster pushed or this passed",
      )
        .argParser(parseDuration).default(30_000, "30s"),
    )
    .option("--no-warmup", "serve desired state at once after a start")
    .addOption(logLevelOption())
    .addHelpText("after", HELP_AFTER)
    .action(async (opts) => {
      const mode = securityModeOf(opts);
      const level = logLevelOf(opts.logLevel);
      const kube = await kubeTarget(opts);
      if (kube && (opts.secretsDir || opts.configDir)) {
        throw new InvalidInputError("--kube excludes --secrets-dir and --config-dir");
      }
      if (!kube && !opts.configDir) {
        throw new InvalidInputError("--config-dir (or MESHRELAY_CONFIG_DIR) or --kube is required");
      }
      if (opts.configDir) await checkDir(opts.configDir, "--config-dir");
      if (opts.secretsDir) await checkDirOrAbsent(opts.secretsDir, "--secrets-dir");
      const log = jsonLogger({ level, fields: { mode: "server" } });
      const store = kube ? kubeStore(kube) : openStore(opts, log);
      const config: ConfigSource = kube
        ? new kube.kube.KubeConfigSource({ kubeConfig: kube.client.kubeConfig, clock: deps.clock, log })
        : new DirectoryConfigSource({ root: opts.configDir, clock: deps.clock, log });
      if (kube) {
        log.info("using the Kubernetes backends", { server: kube.client.server, namespace: kube.namespace });
      }
      if (opts.token) await useSharedToken(store, opts.token, log);
      if (opts.signingQueueWait >= AGENT_IDENTITY_DEADLINE_MS) {
        log.warn(
          "--signing-queue-wait is not below the agents' identity call deadline: agents give up first",
          {
            signingQueueWaitMs: opts.signingQueueWait,
            agentDeadlineMs: AGENT_IDENTITY_DEADLINE_MS,
          },
        );
      }
      const host = deps.hostname();
      // Listen before starting: a SIGTERM during start-up (a rollout, a test) must still stop cleanly.
      const stopping = deps.stopSignal();
      const server = await RelayServer.start({
        mode,
        metrics: processMetricsRegistry(),
        store,
        config,
        clock: deps.clock,
        log,
        host: opts.host,
        port: opts.port,
        metricsHost: opts.metricsHost,
        metricsPort: opts.metrics === false ? null : opts.metricsPort,
        generateCerts: !opts.disableCaGeneration,
        generateToken: !opts.disableTokenGeneration,
        disableCa: opts.disableCa === true,
        serverDnsNames: opts.serverDns ?? [
          "localhost",
          ...(host && host !== "localhost" ? [host] : []),
          // In a cluster: the names of the shipped Service, so agents can use one as --authority.
          ...(kube ? serviceDnsNames(kube.namespace) : []),
        ],
        serverIpAddresses: opts.serverIp ?? ["127.0.0.1", "::1"],
        serverSecret: opts.serverSecret,
        signingSecret: opts.signingSecret,
        rootSecret: opts.rootSecret,
        clientCertTtlMs: opts.clientCertTtl,
        reloadIntervalMs: opts.tlsReloadInterval,
        rateLimit: { burst: opts.bootstrapFailureBurst, perMinute: opts.bootstrapFailuresPerMinute },
        signing: {
          maxConcurrent: opts.maxConcurrentSigning,
          maxQueued: opts.signingQueue,
          maxWaitMs: opts.signingQueueWait,
        },
        secretCacheMaxAgeMs: opts.secretCacheMaxAge,
        sessionBindingTtlMs: opts.sessionBindingTtl,
        maxMessageBytes: opts.maxMessageBytes,
        keepaliveMs: opts.keepaliveInterval,
        keepaliveTimeoutMs: opts.keepaliveTimeout,
        limits: {
          maxConnections: opts.maxConnections,
          maxConnectionsPerPeer: opts.maxConnectionsPerPeer,
          handshakeTimeoutMs: opts.handshakeTimeout,
          maxStreamsPerConnection: opts.maxStreamsPerConnection,
          idleTimeoutMs: opts.connectionIdleTimeout === false ? 0 : opts.connectionIdleTimeout,
        },
        warmupMs: opts.warmup === false ? 0 : opts.warmup,
      });
      const sig = await stopping;
      log.info("stopping", { signal: sig });
      await server.stop();
      setCode(0);
    });

  addServerKubeOptions(program);

  const token = program.command("token").description(
    "Per-cluster bootstrap tokens (bound to one cluster, expiring, single-use) in the server's store " +
      "(--secrets-dir, or --kube --namespace NS).",
  );
  addServerKubeOptions(token.command("create"))
    .description("Create a token for one cluster and print it (once) on stdout; only its hash is stored.")
    .requiredOption("--cluster <name>", "the cluster the token is bound to (its KubernetesCluster name)")
    .addOption(
      new Option("--ttl <duration>", "how long the token is valid").argParser(parseDuration).default(
        3_600_000,
        "1h",
      ),
    )
    .addOption(secretsDirOption())
    .action(async (opts) => {
      validateClusterName(opts.cluster);
      // One reading of the clock: the expiry printed is the one stored (and shown by `token list`).
      const now = deps.clock.now();
      const created = await new TokenAuthority({ store: await requireStore(opts, program) }).create(
        opts.cluster,
        { now, ttlMs: opts.ttl },
      );
      deps.out(created.token + "\n");
      deps.err(
        `meshrelay server: token ${created.id} for cluster ${opts.cluster}, valid until ${
          new Date(now.getTime() + opts.ttl).toISOString()
        }, single use\n`,
      );
      setCode(0);
    });
  addServerKubeOptions(token.command("list"))
    .description("List per-cluster tokens (ids, clusters, expiry, use; never the tokens).")
    .addOption(secretsDirOption())
    .action(async (opts) => {
      const now = deps.clock.now().getTime();
      for (const t of await new TokenAuthority({ store: await requireStore(opts, program) }).list()) {
        const state = t.usedAt
          ? `used ${t.usedAt.toISOString()}`
          : t.expiresAt.getTime() <= now
          ? "expired"
          : "valid";
        deps.out(`${t.id}  ${t.cluster}  expires ${t.expiresAt.toISOString()}  ${state}\n`);
      }
      setCode(0);
    });
  addServerKubeOptions(token.command("revoke <id>"))
    .description("Delete a per-cluster token before it is used.")
    .addOption(secretsDirOption())
    .action(async (id: string, opts) => {
      const gone = await new TokenAuthority({ store: await requireStore(opts, program) }).revoke(id);
      if (!gone) throw new InvalidInputError(`no token with id ${id}`);
      setCode(0);
    });

  addServerKubeOptions(program.command("revoke"))
    .description(
      "Revoke a client certificate by serial: the server refuses it from its next revocation re-read " +
        "(--tls-reload-interval). Deregistering a cluster (removing its KubernetesCluster) revokes all of its " +
        "certificates by itself.",
    )
    .requiredOption("--serial <hex>", "certificate serial number (hex; colons allowed)")
    .option("--cluster <name>", "the cluster it belongs to (for the record)")
    .option("--reason <text>", "why", "revoked by operator")
    .addOption(secretsDirOption())
    .action(async (opts) => {
      if (!/^[0-9a-fA-F:]+$/.test(opts.serial)) throw new InvalidInputError("--serial must be hexadecimal");
      const list = await RevocationList.load(await requireStore(opts, program));
      await list.revokeSerial(opts.serial, {
        now: deps.clock.now(),
        reason: opts.reason,
        cluster: opts.cluster,
      });
      deps.err(`meshrelay server: certificate ${opts.serial} revoked\n`);
      setCode(0);
    });
  return program;
}

/** Stores `--token` as the shared identity token (replacing a different one). */
async function useSharedToken(store: SecretStore, token: string, log: Logger): Promise<void> {
  const cur = await store.get(IDENTITY_TOKEN_SECRET);
  const value = cur?.data[IDENTITY_TOKEN_KEY];
  if (value && new TextDecoder().decode(value).trim() === token) return;
  await store.put(IDENTITY_TOKEN_SECRET, { [IDENTITY_TOKEN_KEY]: enc.encode(token) });
  log.info(cur ? "shared identity token replaced by --token" : "shared identity token set from --token", {
    secret: IDENTITY_TOKEN_SECRET,
  });
}

/** Runs `meshrelay server …` with `deps`; returns the exit code. Never throws. */
export async function run(args: string[], deps: Deps): Promise<number> {
  let code = 0;
  const program = buildProgram(deps, (c) => code = c);
  return await runProgram("server", program, args, () => code, deps.err);
}

/** Entry point of the mode; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  narrow("server", needsFromArgs(args), Deno.permissions);
  return await run(args, realDeps());
}
