/**
 * `meshrelay agent`: parses flags and environment (commander), builds the real dependencies (clock,
 * randomness, secret store, discovery source, applier, logger) and runs the relay agent until
 * SIGINT/SIGTERM.
 * @module
 */
import { Command, Option } from "commander";
import { type Clock, systemClock } from "./clock.ts";
import { collect, parseDuration, parseRatio } from "./cli_flags.ts";
import { kubeNamespace, loadKubeClient, validateNamespace } from "./cli_kube.ts";
import { InvalidInputError } from "./errors.ts";
import {
  KubeApplier,
  type KubeClient,
  KubeDiscoverySource,
  KubeSecretStore,
  parseDiscoveryKinds,
  restartDeployments,
} from "./kube/mod.ts";
import { jsonLogger, type Logger } from "./log.ts";
import { parseCertificates } from "./pki/mod.ts";
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
  CLIENT_TLS_SECRET,
  DEFAULT_KEEPALIVE_MS,
  DEFAULT_KEEPALIVE_TIMEOUT_MS,
  DEFAULT_ROTATION,
  IDENTITY_TOKEN_KEY,
  IDENTITY_TOKEN_SECRET,
  ISTIO_CACERTS_SECRET,
  RelayAgent,
  ROOT_TLS_SECRET,
  splitAddress,
  validateClusterName,
  validateRotationOptions,
} from "./relay/mod.ts";
import {
  type Applier,
  DirectoryApplier,
  DirectoryDiscoverySource,
  type DiscoverySource,
} from "./state/mod.ts";
import { FileSecretStore, MemorySecretStore, type SecretStore } from "./store/mod.ts";
import { VERSION } from "./version.ts";

const dec = new TextDecoder();

/** The real world the agent runs in; e2e tests run the whole process instead of replacing these. */
interface Deps {
  clock: Clock;
  random: () => number;
  out: (text: string) => void;
  err: (text: string) => void;
  stopSignal: () => Promise<string>;
  readTextFile: (path: string) => Promise<string>;
}

function realDeps(): Deps {
  return {
    clock: systemClock,
    random: Math.random,
    out: (t) => writeAllSync(Deno.stdout, t),
    err: (t) => writeAllSync(Deno.stderr, t),
    stopSignal,
    readTextFile: (p) => Deno.readTextFile(p),
  };
}

/** Labels on the secrets the agent creates in Kubernetes. */
const SECRET_LABELS = { "app.kubernetes.io/part-of": "meshrelay" };

interface BackendOpts {
  kube?: boolean;
  kubeconfig?: string;
  context?: string;
  namespace?: string;
  secretsDir?: string;
  discoveryDir?: string;
  applyDir?: string;
  discoveryKind?: string[];
  serverAddress: string;
}

/** What the agent reads and writes: its secrets, what it discovers, where it applies. */
interface Backends {
  store: SecretStore;
  discovery: DiscoverySource;
  applier: Applier;
  /** Set with --kube. */
  kube?: { client: KubeClient; namespace: string };
  /** Whether the client certificate survives a restart. */
  persistent: boolean;
}

/**
 * The one place the agent's backends are built (and, with `--kube`, kubeconfig is loaded): Secrets,
 * discovery and apply in its own cluster, or folders (`--secrets-dir`: the client certificate secret,
 * and optionally relay-root-tls-secret and relay-identity-token-secret; `--discovery-dir`,
 * `--apply-dir`), or memory for the secrets.
 */
async function openBackends(opts: BackendOpts, deps: Deps, log: Logger): Promise<Backends> {
  if (opts.kube) {
    if (opts.secretsDir || opts.discoveryDir || opts.applyDir) {
      throw new InvalidInputError("--kube excludes --secrets-dir, --discovery-dir and --apply-dir");
    }
    const client = loadKubeClient({ kubeconfig: opts.kubeconfig, context: opts.context });
    const namespace = validateNamespace(kubeNamespace(opts.namespace), "--namespace");
    const kinds = opts.discoveryKind
      ? parseDiscoveryKinds(opts.discoveryKind).map((k) => `${k.apiVersion}/${k.kind}`)
      : undefined;
    log.info("using the Kubernetes backends", { server: client.server, namespace });
    return {
      store: new KubeSecretStore({ client, namespace, labels: SECRET_LABELS }),
      discovery: new KubeDiscoverySource({ kubeConfig: client.kubeConfig, clock: deps.clock, log, kinds }),
      applier: new KubeApplier({
        kubeConfig: client.kubeConfig,
        clock: deps.clock,
        log,
        namespace,
        origin: opts.serverAddress,
      }),
      kube: { client, namespace },
      persistent: true,
    };
  }
  if (opts.kubeconfig || opts.context) throw new InvalidInputError("--kubeconfig and --context need --kube");
  if (opts.discoveryKind) throw new InvalidInputError("--discovery-kind needs --kube");
  if (!opts.discoveryDir) throw new InvalidInputError("--discovery-dir (or --kube) is required");
  if (!opts.applyDir) throw new InvalidInputError("--apply-dir (or --kube) is required");
  await checkDir(opts.discoveryDir, "--discovery-dir");
  await checkDirOrAbsent(opts.applyDir, "--apply-dir");
  if (opts.secretsDir) await checkDirOrAbsent(opts.secretsDir, "--secrets-dir");
  return {
    store: opts.secretsDir ? new FileSecretStore(opts.secretsDir) : new MemorySecretStore(),
    discovery: new DirectoryDiscoverySource({ root: opts.discoveryDir, clock: deps.clock, log }),
    applier: new DirectoryApplier({ root: opts.applyDir, log }),
    persistent: opts.secretsDir !== undefined,
  };
}

interface IstioOpts {
  istioCa?: boolean;
  istioNamespace: string;
  istioCacertsDir?: string;
  istioRestartPods?: boolean;
}

/**
 * Where the agent keeps Istio's `cacerts` (`--istio-ca`): the Secret in `--istio-namespace` of its cluster
 * (`--kube`), or the folder `--istio-cacerts-dir` (the four files in it, as Istio mounts them).
 */
function istioCaBackend(opts: IstioOpts, backends: Backends, deps: Deps) {
  if (!opts.istioCa && !opts.istioCacertsDir) {
    if (opts.istioRestartPods) throw new InvalidInputError("--istio-restart-pods needs --istio-ca");
    return undefined;
  }
  if (opts.istioRestartPods && !backends.kube) {
    throw new InvalidInputError("--istio-restart-pods needs --kube");
  }
  if (opts.istioCacertsDir) {
    const dir = opts.istioCacertsDir.replace(/\/+$/, "");
    const slash = dir.lastIndexOf("/");
    const name = dir.slice(slash + 1);
    if (!name || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name)) {
      throw new InvalidInputError(
        "--istio-cacerts-dir: the folder's name must be a lowercase DNS name (e.g. cacerts)",
      );
    }
    return {
      store: new FileSecretStore(slash > 0 ? dir.slice(0, slash) : slash === 0 ? "/" : "."),
      secretName: name,
    };
  }
  if (!backends.kube) throw new InvalidInputError("--istio-ca needs --kube or --istio-cacerts-dir");
  const kube = backends.kube;
  const namespace = validateNamespace(opts.istioNamespace, "--istio-namespace");
  return {
    store: new KubeSecretStore({ client: kube.client, namespace, labels: SECRET_LABELS }),
    secretName: ISTIO_CACERTS_SECRET,
    restart: opts.istioRestartPods
      ? () => restartDeployments({ kubeConfig: kube.client.kubeConfig, namespace, now: deps.clock.now() })
      : undefined,
  };
}

/** `--client-secret` given, or the one of the seeds' two spellings that exists (default the first). */
async function clientSecretName(store: SecretStore, given?: string): Promise<string> {
  if (given) return given;
  if (await store.get(CLIENT_TLS_SECRET)) return CLIENT_TLS_SECRET;
  if (await store.get("relay-tls-client-secret")) return "relay-tls-client-secret";
  return CLIENT_TLS_SECRET;
}

async function readFileFlag(deps: Deps, path: string, flag: string): Promise<string> {
  try {
    return await deps.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new InvalidInputError(`${flag}: ${path} does not exist`);
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new InvalidInputError(`${flag}: ${path} cannot be read`);
    }
    throw e;
  }
}

const HELP_AFTER = `
Security modes (--tls-mode, must match the server's):
  mtls (default)  bootstraps once with the token over server TLS (the private key never leaves: only a CSR
                  is sent), stores the certificate in the client secret, and uses it from then on; renews
                  it over mTLS at 70-90% of its lifetime (knobs below); re-bootstraps if it expired while
                  offline and a token is available. With a client certificate already in the secret
                  (bring-your-own, e.g. \`meshrelay certs agent --out DIR\`), no token is needed.
  tls             verifies the server only; every call carries the token and names the cluster.
  insecure        plaintext (demos only).

Where things come from:
  root CA   --root-ca FILE, else relay-root-tls-secret ca.crt in --secrets-dir, else ca.crt of the client secret
  token     --token / MESHRELAY_TOKEN, --token-file, else relay-identity-token-secret token in --secrets-dir
  client    --client-secret in --secrets-dir (default relay-client-tls-secret; relay-tls-client-secret is
            used when only that one exists): tls.key, tls.crt (leaf + chain), ca.crt
Without --secrets-dir the client certificate lives in memory and a restart bootstraps again.
With --kube, "--secrets-dir" is the agent's namespace (--namespace) in its own cluster: the Secrets above,
discovery watches the cluster, desired state is server-side applied (field manager meshrelay) and pruned.
Reference: docs/kubernetes.md.

Istio federated trust (--istio-ca, mTLS): the agent makes the key of its cluster's Istio intermediate CA,
sends a CSR (SAN istiod.istio-system.svc) over mTLS, and writes what the server's RootTrustPolicy root signed
as Istio's cacerts (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem) in --istio-namespace (--kube) or in
--istio-cacerts-dir; renewed in the same window as the client certificate. --istio-restart-pods rolls the
Deployments of --istio-namespace afterwards so istiod loads it.

--authority NAME is the TLS server name (SNI and :authority) for SNI-passthrough ingress; the server
certificate must carry it. Reference: docs/relay.md.`;

function buildProgram(deps: Deps, setCode: (c: number) => void): Command {
  const cmd = new Command("meshrelay agent")
    .description(
      "Run the workload-cluster relay agent: dials out to the relay server, pushes what it discovers, " +
        "applies its cluster's desired state.",
    )
    .exitOverride()
    .configureOutput({
      writeOut: deps.out,
      writeErr: deps.err,
      outputError: (s, write) => write(`meshrelay agent: ${s.replace(/^error: /, "")}`),
    })
    .addOption(
      new Option("--cluster <name>", "this cluster's name (its KubernetesCluster name and certificate SAN)")
        .env(
          "MESHRELAY_CLUSTER",
        ),
    )
    .addOption(
      new Option("--server-address <host:port>", "the relay server (relay.serverAddress)").env(
        "MESHRELAY_SERVER_ADDRESS",
      ),
    )
    .addOption(
      new Option("--authority <name>", "TLS server name for SNI passthrough (relay.authority)").env(
        "MESHRELAY_AUTHORITY",
      ),
    )
    .addOption(securityModeOptions()[0])
    .addOption(securityModeOptions()[1])
    .addOption(
      new Option(
        "--secrets-dir <dir>",
        "the agent's secret store folder (one folder per secret, one file per key)",
      )
        .env("MESHRELAY_SECRETS_DIR"),
    )
    .addOption(
      new Option("--client-secret <name>", "client certificate secret (relay.clientTlsSecret)").env(
        "MESHRELAY_CLIENT_SECRET",
      ),
    )
    .addOption(
      new Option("--root-secret <name>", "secret with the relay root CA (relay.rootTlsSecret)").env(
        "MESHRELAY_ROOT_SECRET",
      ).default(ROOT_TLS_SECRET),
    )
    .addOption(new Option("--root-ca <file>", "relay root CA certificate (PEM)").env("MESHRELAY_ROOT_CA"))
    .addOption(
      new Option("--token <token>", "bootstrap token (shared or per-cluster)").env("MESHRELAY_TOKEN"),
    )
    .addOption(
      new Option("--token-file <file>", "file holding the bootstrap token").env("MESHRELAY_TOKEN_FILE"),
    )
    .addOption(
      new Option("--token-secret <name>", "secret with the bootstrap token (key `token`)").env(
        "MESHRELAY_TOKEN_SECRET",
      ).default(IDENTITY_TOKEN_SECRET),
    )
    .addOption(
      new Option(
        "--discovery-kind <kind>",
        "with --kube: a kind to discover, apiVersion/Kind (repeat; default namespaces, Services, workloads, IstioOperator)",
      ).argParser(collect),
    )
    .addOption(
      new Option("--discovery-dir <dir>", "folder of YAML manifests standing for this cluster (discovery)")
        .env(
          "MESHRELAY_DISCOVERY_DIR",
        ),
    )
    .addOption(
      new Option("--apply-dir <dir>", "folder the desired state is applied to (created if missing)").env(
        "MESHRELAY_APPLY_DIR",
      ),
    )
    .addOption(
      new Option(
        "--istio-ca",
        "Istio federated trust: keep Istio's cacerts signed by the server's RootTrustPolicy root (mTLS only)",
      ).env("MESHRELAY_ISTIO_CA"),
    )
    .addOption(
      new Option("--istio-namespace <ns>", "with --kube: where cacerts lives").env(
        "MESHRELAY_ISTIO_NAMESPACE",
      )
        .default("istio-system"),
    )
    .addOption(
      new Option(
        "--istio-cacerts-dir <dir>",
        "keep cacerts as files in this folder instead (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)",
      ).env("MESHRELAY_ISTIO_CACERTS_DIR"),
    )
    .addOption(
      new Option(
        "--istio-restart-pods",
        "with --kube: after a new cacerts, roll the Deployments of --istio-namespace (kubectl rollout restart)",
      ).env("MESHRELAY_ISTIO_RESTART_PODS"),
    )
    .addOption(
      new Option(
        "--rotation-grace-ratio <r>",
        "renew at the latest when this fraction of the lifetime is left (clientTlsSecretRotationGracePeriodRatio)",
      ).argParser(parseRatio).default(DEFAULT_ROTATION.graceRatio),
    )
    .addOption(
      new Option(
        "--rotation-jitter-ratio <r>",
        "spread renewals over this fraction of the lifetime before that",
      )
        .argParser(parseRatio).default(DEFAULT_ROTATION.jitterRatio),
    )
    .addOption(
      new Option("--identity-poll-interval <duration>", "how often the client certificate secret is re-read")
        .argParser(parseDuration).default(60_000, "60s"),
    )
    .addOption(
      new Option(
        "--keepalive-interval <duration>",
        "ping the server after this much quiet on the connection (finds a hung server or link)",
      ).argParser(parseDuration).default(DEFAULT_KEEPALIVE_MS, "30s"),
    )
    .addOption(
      new Option(
        "--keepalive-timeout <duration>",
        "give the connection up when a ping is not answered in time",
      )
        .argParser(parseDuration).default(DEFAULT_KEEPALIVE_TIMEOUT_MS, "10s"),
    )
    .addOption(maxMessageBytesOption())
    .addOption(metricsOptions()[0])
    .addOption(metricsOptions()[1])
    .addOption(metricsOptions()[2])
    .addOption(logLevelOption())
    .addHelpText("after", HELP_AFTER)
    .action(async (opts) => {
      const mode = securityModeOf(opts);
      const level = logLevelOf(opts.logLevel);
      if (!opts.cluster) throw new InvalidInputError("--cluster (or MESHRELAY_CLUSTER) is required");
      validateClusterName(opts.cluster);
      if (!opts.serverAddress) {
        throw new InvalidInputError("--server-address (or MESHRELAY_SERVER_ADDRESS) is required");
      }
      splitAddress(opts.serverAddress);
      if (opts.token && opts.tokenFile) {
        throw new InvalidInputError("--token and --token-file exclude each other");
      }
      const rotation = { graceRatio: opts.rotationGraceRatio, jitterRatio: opts.rotationJitterRatio };
      validateRotationOptions(rotation);

      const log = jsonLogger({ level, fields: { mode: "agent", cluster: opts.cluster } });
      const backends = await openBackends(opts, deps, log);
      const store = backends.store;
      const istioCa = istioCaBackend(opts, backends, deps);
      if (istioCa && mode !== "mtls") throw new InvalidInputError("--istio-ca needs --tls-mode mtls");
      if (!backends.persistent && mode === "mtls") {
        log.warn("no --secrets-dir: the client certificate lives in memory; a restart bootstraps again");
      }
      const rootFile = opts.rootCa ? await readFileFlag(deps, opts.rootCa, "--root-ca") : undefined;
      // A wrong file (garbage, a key, a CSR) is refused at start, not met later as a TLS failure on every dial.
      if (rootFile !== undefined) parseCertificates(rootFile, `--root-ca ${opts.rootCa}`);
      const tokenFile = opts.tokenFile;
      const secretValue = async (name: string, key: string) => {
        const v = (await store.get(name))?.data[key];
        const t = v && dec.decode(v).trim();
        return t ? t : undefined;
      };
      const rootCaPem = async () => rootFile ?? await secretValue(opts.rootSecret, "ca.crt");
      // Read on demand: a token provided (or rotated) later is picked up without a restart.
      const token = async () =>
        opts.token ??
          (tokenFile
            ? (await readFileFlag(deps, tokenFile, "--token-file")).trim() || undefined
            : undefined) ??
          await secretValue(opts.tokenSecret, IDENTITY_TOKEN_KEY);
      if (mode === "tls" && !(await token())) {
        throw new InvalidInputError(
          "--tls-mode tls needs a token (--token, --token-file or the token secret)",
        );
      }
      if (mode !== "insecure" && !(await rootCaPem())) {
        log.warn(
          "no relay root CA configured yet (--root-ca or the root secret); using the client secret's ca.crt",
        );
      }
      // Listen before starting: a SIGTERM during start-up (a rollout, a test) must still stop cleanly.
      const stopping = deps.stopSignal();
      const agent = await RelayAgent.start({
        mode,
        metrics: processMetricsRegistry(),
        cluster: opts.cluster,
        serverAddress: opts.serverAddress,
        authority: opts.authority,
        store,
        clientSecretName: await clientSecretName(store, opts.clientSecret),
        rootCaPem,
        token,
        discovery: backends.discovery,
        applier: backends.applier,
        clock: deps.clock,
        random: deps.random,
        log,
        agentVersion: VERSION,
        rotation,
        identityPollMs: opts.identityPollInterval,
        keepaliveMs: opts.keepaliveInterval,
        keepaliveTimeoutMs: opts.keepaliveTimeout,
        maxMessageBytes: opts.maxMessageBytes,
        metricsHost: opts.metricsHost,
        metricsPort: opts.metrics === false ? null : opts.metricsPort,
        istioCa,
      });
      const sig = await stopping;
      log.info("stopping", { signal: sig });
      await agent.stop();
      setCode(0);
    });
  return addKubeOptions(cmd, {
    kube: "Kubernetes backends: secrets in --namespace, discovery and server-side apply in this cluster",
    namespace:
      "with --kube: the agent's namespace (its secrets, the applied record; default the pod's, else meshrelay)",
  });
}

/** Runs `meshrelay agent …` with `deps`; returns the exit code. Never throws. */
export async function run(args: string[], deps: Deps): Promise<number> {
  let code = 0;
  const program = buildProgram(deps, (c) => code = c);
  return await runProgram("agent", program, args, () => code, deps.err);
}

/** Entry point of the mode; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  narrow("agent", needsFromArgs(args), Deno.permissions);
  return await run(args, realDeps());
}
