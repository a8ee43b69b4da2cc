/**
 * CLI pieces the long-running modes (`server`, `agent`) share: the security-mode, log-level and metrics flags and
 * their checks, the Kubernetes flags, stdout/stderr writers and the stop signal. This is the CLI layer,
 * like cli_flags.ts: it touches Deno's process APIs, which the libraries never do.
 * @module
 */
import { type Command, Option } from "commander";
import { parsePort, parsePositiveInt } from "./cli_flags.ts";
import { InvalidInputError } from "./errors.ts";
import { type LogLevel, parseLogLevel } from "./log.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, MetricsRegistry, type SecurityMode } from "./relay/mod.ts";
import { registerProcessMetrics } from "./process_metrics.ts";

const enc = new TextEncoder();

/** Writes all of `text` (a single writeSync may be short). */
export function writeAllSync(f: { writeSync(p: Uint8Array): number }, text: string): void {
  const b = enc.encode(text);
  let off = 0;
  while (off < b.length) off += f.writeSync(b.subarray(off));
}

/** Resolves with the signal's name on the first SIGINT or SIGTERM. */
export function stopSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: Deno.Signal) => () => resolve(sig);
    Deno.addSignalListener("SIGINT", on("SIGINT"));
    Deno.addSignalListener("SIGTERM", on("SIGTERM"));
  });
}

/** Refuses `path` unless it is an existing directory, naming the flag that gave it. */
export async function checkDir(path: string, flag: string): Promise<void> {
  const st = await Deno.stat(path).catch(() => undefined);
  if (!st?.isDirectory) throw new InvalidInputError(`${flag}: ${path} is not a directory`);
}

/**
 * For a folder flag whose folder is created when missing (`--secrets-dir`, `--apply-dir`): refuses `path`
 * only when something that is not a directory is already there, naming the flag.
 */
export async function checkDirOrAbsent(path: string, flag: string): Promise<void> {
  const st = await Deno.stat(path).catch(() => undefined);
  if (st && !st.isDirectory) throw new InvalidInputError(`${flag}: ${path} exists and is not a directory`);
}

/** `--max-message-bytes`, for server and agent alike (the seeds' `maxGrpcMessageSize`). */
export function maxMessageBytesOption(): Option {
  return new Option(
    "--max-message-bytes <n>",
    "largest gRPC message (maxGrpcMessageSize); larger sets are chunked",
  ).argParser(parsePositiveInt).default(DEFAULT_MAX_MESSAGE_BYTES, "4194304 (4 MiB, gRPC's own)");
}

/** `--tls-mode` and `--insecure` (read together with {@linkcode securityModeOf}). */
export function securityModeOptions(): Option[] {
  return [
    new Option("--tls-mode <mode>", "security mode").choices(["mtls", "tls", "insecure"]).env(
      "MESHRELAY_TLS_MODE",
    )
      .default("mtls"),
    new Option("--insecure", "same as --tls-mode insecure (plaintext; demos only)").env(
      "MESHRELAY_INSECURE",
    ),
  ];
}

/** The security mode `--tls-mode` and `--insecure` ask for; refuses the two contradicting each other. */
export function securityModeOf(opts: { insecure?: boolean; tlsMode: SecurityMode }): SecurityMode {
  if (opts.insecure && opts.tlsMode !== "mtls" && opts.tlsMode !== "insecure") {
    throw new InvalidInputError(`--insecure contradicts --tls-mode ${opts.tlsMode}`);
  }
  return opts.insecure ? "insecure" : opts.tlsMode;
}

/** `--metrics-host`, `--metrics-port` and `--no-metrics` (the /metrics, /healthz, /readyz listener). */
export function metricsOptions(): [host: Option, port: Option, off: Option] {
  return [
    new Option("--metrics-host <addr>", "address of /metrics, /healthz, /readyz").env(
      "MESHRELAY_METRICS_HOST",
    )
      .default("0.0.0.0"),
    new Option("--metrics-port <port>", "port of /metrics, /healthz, /readyz (0: any free port)")
      .env("MESHRELAY_METRICS_PORT").argParser(parsePort).default(9091),
    new Option("--no-metrics", "do not serve /metrics, /healthz, /readyz"),
  ];
}

/** `--log-level` (read with {@linkcode logLevelOf}). */
export function logLevelOption(): Option {
  return new Option("--log-level <level>", "debug, info, warn or error").env("MESHRELAY_LOG_LEVEL").default(
    "info",
  );
}

/** The level `--log-level` names, as an InvalidInputError naming the flag when it names none. */
export function logLevelOf(v: string): LogLevel {
  try {
    return parseLogLevel(v);
  } catch (e) {
    throw new InvalidInputError(`--log-level: ${(e as Error).message}`);
  }
}

/**
 * Adds `--kube`, `--kubeconfig`, `--context` and `--namespace` to `cmd`; `help` words `--kube` and
 * `--namespace` for the mode (what lives in the namespace differs).
 */
export function addKubeOptions(cmd: Command, help: { kube: string; namespace: string }): Command {
  return cmd
    .addOption(new Option("--kube", help.kube).env("MESHRELAY_KUBE"))
    .addOption(
      new Option(
        "--kubeconfig <file>",
        "with --kube: kubeconfig (default $KUBECONFIG, ~/.kube/config, else the pod's service account)",
      ),
    )
    .addOption(new Option("--context <name>", "with --kube: kubeconfig context (default its current one)"))
    .addOption(new Option("--namespace <ns>", help.namespace).env("MESHRELAY_NAMESPACE"));
}

/** The registry a long-running mode serves on /metrics, with the process metrics of this process. */
export function processMetricsRegistry(): MetricsRegistry {
  const metrics = new MetricsRegistry();
  registerProcessMetrics(metrics, {
    memoryUsage: () => Deno.memoryUsage(),
    startTime: new Date(performance.timeOrigin),
  });
  return metrics;
}
