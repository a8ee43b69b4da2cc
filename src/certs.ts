/**
 * `meshrelay certs`: parses flags (commander), reads the environment, builds the real dependencies
 * (clock, randomness, progress on stderr, passphrase prompt) and runs the commands of `src/certs/`.
 * Everything else is library code taking an options object.
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { InvalidInputError } from "./errors.ts";
import { type Clock, systemClock } from "./clock.ts";
import { collect as collectFlag, parseDuration } from "./cli_flags.ts";
import { DEFAULT_KUBE_NAMESPACE, validateNamespace } from "./cli_namespace.ts";
import { runProgram } from "./cli_run.ts";
import { narrow, needsFromArgs } from "./permissions.ts";
import {
  isKeyAlgorithm,
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  parseCertificates,
  VerificationError,
} from "./pki/mod.ts";
import {
  buildIstioCacerts,
  buildRelayPki,
  check,
  CHECK_EXIT,
  checkClusterNames,
  checkExitCode,
  defaultServerDnsNames,
  findRoot,
  initTargets,
  inspect,
  issueLeafSecret,
  ISTIO_ARCHITECTURES,
  ISTIO_NAMESPACE,
  ISTIO_ROOT_CERT_FILE,
  ISTIO_ROOT_KEY_FILE,
  type IstioArchitecture,
  istioTargets,
  type LoadedIssuer,
  loadIssuerFiles,
  loadRootCaFromDir,
  loadSigningCaFromDir,
  type OutputPlan,
  parseAt,
  type PassphraseSource,
  type PlannedFile,
  type PlannedSecret,
  preflightDir,
  preflightFile,
  type Progress,
  progressReporter,
  readPemFile,
  RELAY_CLIENT_SECRET_NAMES,
  RELAY_NAMESPACE,
  RELAY_ROOT_KEY_FILE,
  RELAY_ROOT_SECRET,
  RELAY_SERVER_SECRET,
  RELAY_TOKEN_SECRET,
  renderCheck,
  renderInspection,
  secretsToJson,
  secretsToYaml,
  verifyFiles,
  writeFileAtomic,
  writeFileUndoable,
  writePlanToDir,
} from "./certs/mod.ts";

const enc = new TextEncoder();

/** The real world the commands run in; tests run the whole process instead of replacing these. */
interface Deps {
  clock: Clock;
  random: (b: Uint8Array) => Uint8Array;
  out: (text: string) => void;
  err: (text: string) => void;
  stderrIsTerminal: boolean;
  passphrases: PassphraseSource;
}

function writeAllSync(f: { writeSync(p: Uint8Array): number }, text: string): void {
  const b = enc.encode(text);
  let off = 0;
  while (off < b.length) off += f.writeSync(b.subarray(off));
}

/** Reads a line from the terminal without echoing it (for passphrases). */
async function promptHidden(question: string): Promise<string | undefined> {
  if (!Deno.stdin.isTerminal()) return undefined;
  writeAllSync(Deno.stderr, question);
  Deno.stdin.setRaw(true);
  const chars: number[] = [];
  const buf = new Uint8Array(64);
  try {
    read: while (true) {
      const n = await Deno.stdin.read(buf);
      if (n === null) break;
      for (const b of buf.subarray(0, n)) {
        if (b === 3) throw new InvalidInputError("passphrase prompt interrupted");
        if (b === 13 || b === 10 || b === 4) break read;
        if (b === 127 || b === 8) chars.pop();
        else chars.push(b);
      }
    }
  } finally {
    Deno.stdin.setRaw(false);
    writeAllSync(Deno.stderr, "\n");
  }
  return new TextDecoder().decode(Uint8Array.from(chars));
}

function realDeps(): Deps {
  return {
    clock: systemClock,
    random: (b) => crypto.getRandomValues(b),
    out: (t) => writeAllSync(Deno.stdout, t),
    err: (t) => writeAllSync(Deno.stderr, t),
    stderrIsTerminal: Deno.stderr.isTerminal(),
    passphrases: { env: (name) => Deno.env.get(name), prompt: promptHidden },
  };
}

// ---- flag parsers (commander reports their errors as one line, exit 2) ----

function positiveInt(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) {
    throw new InvalidArgumentError("expected a positive whole number of days");
  }
  return Number(v);
}

function keyAlgorithm(v: string): KeyAlgorithm {
  if (!isKeyAlgorithm(v)) throw new InvalidArgumentError(`expected one of ${KEY_ALGORITHMS.join(", ")}`);
  return v;
}

function fraction(v: string): number {
  const n = Number(v);
  if (!(v.trim() !== "" && n > 0 && n <= 1)) {
    throw new InvalidArgumentError("expected a number above 0 and at most 1");
  }
  return n;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

const ALGORITHMS_HELP = `${KEY_ALGORITHMS.join(", ")}`;

const EXIT_CODES_HELP = `
Exit codes:
  0  done
  1  failed, or refused to replace existing material (use --force)
  2  bad input: unknown flag, unreadable or invalid PEM, key not matching its certificate,
     issuer that is not a CA, unwritable --out`;

const formatHelp = (rootKeyOut: boolean) =>
  "dir: one folder per secret under --out; yaml: Kubernetes Secret manifests " +
  "(kubectl create secret generic's data, documents separated by ---); json: a v1 List of them. " +
  "yaml and json go to stdout or to the file --out and write no key files" +
  (rootKeyOut ? " (other than --root-key-out)" : "");

interface CommonOpts {
  out?: string;
  format: "dir" | "yaml" | "json";
  force?: boolean;
  verbose?: boolean;
}

function addOutputOptions(cmd: Command, rootKeyOut = false): Command {
  return cmd
    .addOption(
      new Option("--format <format>", formatHelp(rootKeyOut)).choices(["dir", "yaml", "json"]).default("dir"),
    )
    .option("--force", "replace existing secrets and files")
    .option("-v, --verbose", "a progress line per step on stderr even when it is not a terminal");
}

function progressFor(deps: Deps, opts: { verbose?: boolean }): Progress {
  return progressReporter({
    write: deps.err,
    steps: deps.stderrIsTerminal || opts.verbose === true,
    ticks: deps.stderrIsTerminal,
    clock: deps.clock,
  });
}

/** Checks `--out` before slow work starts. */
async function preflight(opts: CommonOpts, targets: Parameters<typeof preflightDir>[1]): Promise<void> {
  if (opts.format === "dir") {
    if (!opts.out) throw new InvalidInputError("--out DIR is required with --format dir");
    await preflightDir(opts.out, targets, opts.force === true);
  } else if (opts.out) {
    await preflightFile(opts.out, opts.force === true, "--out");
  }
}

/** Writes the result: secret folders (dir) or manifests (yaml/json, stdout or --out file). */
async function emit(
  deps: Deps,
  progress: Progress,
  opts: CommonOpts,
  secrets: PlannedSecret[],
  files: PlannedFile[] = [],
): Promise<void> {
  if (opts.format === "dir") {
    const plan: OutputPlan = { secrets, files };
    const written = await writePlanToDir(opts.out!, plan, { force: opts.force === true });
    progress.note(`wrote ${written.join(", ")}`);
    return;
  }
  const text = opts.format === "yaml" ? secretsToYaml(secrets) : secretsToJson(secrets);
  if (opts.out) {
    await writeFileAtomic(opts.out, enc.encode(text), { overwrite: opts.force === true });
    progress.note(`wrote ${opts.out}`);
  } else {
    deps.out(text);
  }
}

/** `--pki DIR`: where `init` wrote; defaults to `--out` in dir format. */
function pkiDir(opts: CommonOpts & { pki?: string }, needFor: string): string {
  const dir = opts.pki ?? (opts.format === "dir" ? opts.out : undefined);
  if (!dir) {
    throw new InvalidInputError(
      `${needFor}: pass --pki DIR (where certs init wrote) with --format ${opts.format}`,
    );
  }
  return dir;
}

interface SignerFlags {
  signingCert?: string;
  signingKey?: string;
  rootCert?: string;
}

/** The signing CA from --signing-cert/--signing-key (+ --root-cert), or from the pki folder. */
async function signerFrom(
  deps: Deps,
  opts: CommonOpts & SignerFlags & { pki?: string },
  now: Date,
  needFor: string,
): Promise<LoadedIssuer> {
  if ((opts.signingCert === undefined) !== (opts.signingKey === undefined)) {
    throw new InvalidInputError("--signing-cert and --signing-key go together");
  }
  let signer: LoadedIssuer;
  if (opts.signingCert && opts.signingKey) {
    signer = await loadIssuerFiles({
      certPath: opts.signingCert,
      keyPath: opts.signingKey,
      certFlag: "--signing-cert",
      keyFlag: "--signing-key",
      passphraseEnv: "MESHRELAY_SIGNING_KEY_PASSPHRASE",
      passphrases: deps.passphrases,
      now,
    });
  } else {
    signer = await loadSigningCaFromDir(pkiDir(opts, needFor), now);
  }
  if (opts.rootCert) {
    const root = await findRoot(
      parseCertificates(await readPemFile(opts.rootCert, "--root-cert"), "--root-cert"),
    );
    if (!root) throw new InvalidInputError("--root-cert holds no self-signed root certificate");
    signer = { ...signer, root };
  }
  return signer;
}

async function caFrom(
  deps: Deps,
  opts: { caCert?: string; caKey?: string },
  now: Date,
): Promise<LoadedIssuer | undefined> {
  if ((opts.caCert === undefined) !== (opts.caKey === undefined)) {
    throw new InvalidInputError("--ca-cert and --ca-key go together");
  }
  if (!opts.caCert || !opts.caKey) return undefined;
  return await loadIssuerFiles({
    certPath: opts.caCert,
    keyPath: opts.caKey,
    certFlag: "--ca-cert",
    keyFlag: "--ca-key",
    passphraseEnv: "MESHRELAY_CA_KEY_PASSPHRASE",
    passphrases: deps.passphrases,
    now,
  });
}

function buildProgram(deps: Deps, setCode: (c: number) => void): Command {
  const program = new Command("meshrelay certs")
    .description("Build, inspect, verify and check the relay and Istio PKI.")
    .exitOverride()
    .configureOutput({
      writeOut: deps.out,
      writeErr: deps.err,
      outputError: (s, write) => write(`meshrelay certs: ${s.replace(/^error: /, "")}`),
    })
    .addHelpText(
      "after",
      `
Secrets come from the environment or a terminal prompt, never from flags:
  MESHRELAY_CA_KEY_PASSPHRASE       passphrase of an encrypted --ca-key
  MESHRELAY_SIGNING_KEY_PASSPHRASE  passphrase of an encrypted --signing-key

Shell completion: not available (commander has no completion support).
Reference: docs/certs.md.`,
    );

  // ---- init ----
  addOutputOptions(
    program.command("init")
      .description(
        "The whole relay PKI: root CA, intermediate signing CA, relay server certificate and identity token, " +
          "as the secrets relay-root-tls-secret, relay-tls-signing-secret, relay-server-tls-secret and " +
          `relay-identity-token-secret. In dir format the new root's key is kept as DIR/${RELAY_ROOT_KEY_FILE} ` +
          "(in no secret: move it offline).",
      )
      .option(
        "--out <path>",
        "dir format: output DIR (created if missing); yaml/json: manifest file (default stdout)",
      )
      .option(
        "--namespace <ns>",
        "namespace of the manifests and of the default server names",
        RELAY_NAMESPACE,
      )
      .option(
        "--server-dns <name>",
        "server certificate DNS name (repeat; default meshrelay-server[.NS[.svc]], *.NS)",
        collect,
      )
      .option("--server-ip <ip>", "server certificate IP address (repeat)", collect)
      .option("--days-root <days>", "root CA validity", positiveInt, 3650)
      .option("--days-signing <days>", "signing CA validity", positiveInt, 1825)
      .option("--days-server <days>", "server certificate validity", positiveInt, 365)
      .option(
        "--key-algorithm <alg>",
        `signing CA and server key: ${ALGORITHMS_HELP}`,
        keyAlgorithm,
        "ecdsa-p256",
      )
      .option(
        "--root-key-algorithm <alg>",
        "root key (default ecdsa-p384, or --key-algorithm when not ECDSA)",
        keyAlgorithm,
      )
      .option(
        "--ca-cert <file>",
        "bring your own CA to sign under (root, or intermediate followed by its chain)",
      )
      .option(
        "--ca-key <file>",
        "its key: PKCS#8, PKCS#1, SEC1 or encrypted PEM (MESHRELAY_CA_KEY_PASSPHRASE)",
      )
      .option(
        "--root-key-out <file>",
        "where to keep the new root CA's key (default DIR/relay-root-ca.key in dir format)",
      )
      .option("--discard-root-key", "do not keep the new root CA's key anywhere")
      .addHelpText("after", EXIT_CODES_HELP),
    true,
  ).action(async (opts) => {
    const now = deps.clock.now();
    const progress = progressFor(deps, opts);
    // Output checks first: a refusal must come before any passphrase prompt or key generation.
    const byo = opts.caCert !== undefined || opts.caKey !== undefined;
    const keepInDir = !byo && !opts.discardRootKey && !opts.rootKeyOut && opts.format === "dir";
    const rootKeyOut: string | undefined = !byo && !opts.discardRootKey ? opts.rootKeyOut : undefined;
    await preflight(opts, initTargets(keepInDir));
    if (rootKeyOut) await preflightFile(rootKeyOut, opts.force === true, "--root-key-out");
    const ca = await caFrom(deps, opts, now);
    const result = await buildRelayPki({
      namespace: opts.namespace,
      serverDnsNames: opts.serverDns ?? (opts.serverIp ? [] : defaultServerDnsNames(opts.namespace)),
      serverIpAddresses: opts.serverIp ?? [],
      days: { root: opts.daysRoot, signing: opts.daysSigning, server: opts.daysServer },
      keyAlgorithm: opts.keyAlgorithm,
      rootKeyAlgorithm: opts.rootKeyAlgorithm,
      ca,
      now,
      random: deps.random,
      progress,
    });
    const files: PlannedFile[] = [];
    if (result.rootKeyPem && keepInDir) {
      files.push({ path: RELAY_ROOT_KEY_FILE, data: enc.encode(result.rootKeyPem) });
    }
    // The key goes first (without it the new root is useless); a failure after it puts back what was
    // there before (with --force, possibly the key of the PKI this run was replacing).
    const undoRootKey = result.rootKeyPem && rootKeyOut
      ? await writeFileUndoable(rootKeyOut, enc.encode(result.rootKeyPem), { overwrite: opts.force === true })
      : undefined;
    try {
      await emit(deps, progress, opts, result.secrets, files);
    } catch (e) {
      await undoRootKey?.().catch(() => {});
      throw e;
    }
    if (result.rootKeyPem && !keepInDir && !rootKeyOut) {
      progress.note("the root CA key was not kept (pass --root-key-out FILE to keep it)");
    }
    setCode(0);
  });

  // ---- agent / server ----
  const leafCommand = (kind: "client" | "server") => {
    const cmd = kind === "client"
      ? program.command("agent").description(
        "A relay agent client certificate (SAN DNS = the cluster name, EKU clientAuth) from the signing CA " +
          "that init left in --pki/--out, or from --signing-cert/--signing-key; for the bring-your-own-client-certs mode.",
      )
        .requiredOption("--cluster <name>", "the workload cluster's name (as registered)")
        .addOption(
          new Option("--secret-name <name>", "secret name (the seeds use both)").choices([
            ...RELAY_CLIENT_SECRET_NAMES,
          ])
            .default(RELAY_CLIENT_SECRET_NAMES[0]),
        )
      : program.command("server").description(
        "A relay server certificate (EKU serverAuth) from the signing CA in --pki/--out or from " +
          "--signing-cert/--signing-key: for a bring-your-own server certificate or to re-issue it.",
      )
        .option("--dns <name>", "DNS name (repeat; default meshrelay-server[.NS[.svc]], *.NS)", collect)
        .option("--ip <ip>", "IP address (repeat)", collect)
        .option("--secret-name <name>", "secret name", RELAY_SERVER_SECRET);
    addOutputOptions(
      cmd
        .option("--out <path>", "dir format: output DIR; yaml/json: manifest file (default stdout)")
        .option("--pki <dir>", "where certs init wrote (default: --out in dir format)")
        .option("--signing-cert <file>", "bring-your-own signing CA certificate (then its chain)")
        .option(
          "--signing-key <file>",
          "its key: PKCS#8, PKCS#1, SEC1 or encrypted PEM (MESHRELAY_SIGNING_KEY_PASSPHRASE)",
        )
        .option("--root-cert <file>", "the root CA, when --signing-cert does not end with it")
        .option("--namespace <ns>", "namespace of the manifest", RELAY_NAMESPACE)
        .option("--days <days>", "validity", positiveInt, 365)
        .option("--key-algorithm <alg>", ALGORITHMS_HELP, keyAlgorithm, "ecdsa-p256")
        .addHelpText("after", EXIT_CODES_HELP),
    ).action(async (opts) => {
      const now = deps.clock.now();
      const progress = progressFor(deps, opts);
      const dnsNames: string[] = kind === "client"
        ? [opts.cluster]
        : opts.dns ?? (opts.ip ? [] : defaultServerDnsNames(opts.namespace));
      if (kind === "client") checkClusterNames([opts.cluster]);
      await preflight(opts, { secrets: [{ name: opts.secretName }] });
      const signer = await signerFrom(deps, opts, now, `certs ${kind === "client" ? "agent" : "server"}`);
      const secret = await issueLeafSecret({
        kind,
        secretName: opts.secretName,
        namespace: opts.namespace,
        dnsNames,
        ipAddresses: kind === "server" ? opts.ip ?? [] : [],
        days: opts.days,
        keyAlgorithm: opts.keyAlgorithm,
        signer,
        now,
        progress,
      });
      await emit(deps, progress, opts, [secret]);
      setCode(0);
    });
  };
  leafCommand("client");
  leafCommand("server");

  // ---- istio ----
  addOutputOptions(
    program.command("istio")
      .description(
        "Istio plug-in CA material: the cacerts secret (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem) " +
          "per cluster, in DIR/istio/<cluster>/cacerts. Architectures: shared (every cluster uses the relay signing " +
          "CA itself), separate-intermediates (a per-cluster Istio intermediate under the relay root, whose key " +
          `init kept as DIR/${RELAY_ROOT_KEY_FILE}), separate-roots (a separate Istio root, kept as ` +
          `DIR/${ISTIO_ROOT_CERT_FILE} and DIR/${ISTIO_ROOT_KEY_FILE}, reused on later runs). See docs/certs.md.`,
      )
      .requiredOption("--cluster <name>", "workload cluster (repeat for several)", collect)
      .addOption(
        new Option("--architecture <arch>", "certificate architecture").choices([...ISTIO_ARCHITECTURES])
          .default(
            "separate-intermediates",
          ),
      )
      .option(
        "--out <path>",
        "dir format: output DIR; yaml/json: manifest file (default stdout; one cluster only)",
      )
      .option("--pki <dir>", "where certs init wrote (default: --out in dir format)")
      .option(
        "--ca-cert <file>",
        "the CA that signs the Istio intermediates (relay root, or your Istio root)",
      )
      .option(
        "--ca-key <file>",
        "its key: PKCS#8, PKCS#1, SEC1 or encrypted PEM (MESHRELAY_CA_KEY_PASSPHRASE)",
      )
      .option("--signing-cert <file>", "shared: the relay signing CA certificate (default from --pki)")
      .option("--signing-key <file>", "shared: its key (MESHRELAY_SIGNING_KEY_PASSPHRASE)")
      .option("--root-cert <file>", "shared: the root CA, when --signing-cert does not end with it")
      .option("--namespace <ns>", "namespace of the manifests", ISTIO_NAMESPACE)
      .option("--days-root <days>", "validity of a new Istio root (separate-roots)", positiveInt, 3650)
      .option("--days <days>", "validity of each intermediate", positiveInt, 730)
      .option(
        "--key-algorithm <alg>",
        "intermediate key: RSA or ECDSA P-256/P-384 (Istio has no Ed25519)",
        keyAlgorithm,
        "ecdsa-p256",
      )
      .option("--root-key-algorithm <alg>", "key of a new Istio root (default ecdsa-p384)", keyAlgorithm)
      .option("--root-key-out <file>", "yaml/json and a new Istio root: where to keep its key")
      .addHelpText("after", EXIT_CODES_HELP),
    true,
  ).action(async (opts) => {
    const now = deps.clock.now();
    const progress = progressFor(deps, opts);
    const clusters: string[] = opts.cluster;
    const arch: IstioArchitecture = opts.architecture;
    checkClusterNames(clusters);
    if (opts.format !== "dir" && clusters.length > 1) {
      throw new InvalidInputError(
        `--format ${opts.format} takes one --cluster (every cluster's secret is named cacerts; apply each to its own cluster)`,
      );
    }
    let issuer: LoadedIssuer | undefined;
    if (arch === "shared") {
      if (opts.caCert || opts.caKey) {
        throw new InvalidInputError("shared uses --signing-cert/--signing-key, not --ca-cert");
      }
      issuer = await signerFrom(deps, opts, now, "certs istio --architecture shared");
    } else {
      if (opts.signingCert || opts.signingKey) {
        throw new InvalidInputError(`${arch} uses --ca-cert/--ca-key, not --signing-cert/--signing-key`);
      }
      issuer = await caFrom(deps, opts, now);
      if (!issuer && arch === "separate-intermediates") {
        issuer = await loadRootCaFromDir(
          pkiDir(opts, "certs istio --architecture separate-intermediates"),
          now,
        );
      }
      if (!issuer && arch === "separate-roots") issuer = await existingIstioRoot(opts, now);
    }
    const newRoot = arch === "separate-roots" && !issuer;
    const keepRootInDir = newRoot && opts.format === "dir";
    await preflight(opts, istioTargets(clusters, keepRootInDir));
    if (newRoot && opts.rootKeyOut) {
      await preflightFile(opts.rootKeyOut, opts.force === true, "--root-key-out");
    }
    const result = await buildIstioCacerts({
      clusters,
      architecture: arch,
      namespace: opts.namespace,
      keyAlgorithm: opts.keyAlgorithm,
      rootKeyAlgorithm: opts.rootKeyAlgorithm,
      days: { root: opts.daysRoot, intermediate: opts.days },
      issuer,
      now,
      progress,
    });
    if (arch === "shared") {
      progress.note(
        "shared architecture: every cluster's istiod holds the relay signing CA key (see docs/certs.md)",
      );
    }
    const files: PlannedFile[] = [];
    if (result.newRoot && keepRootInDir) {
      files.push({ path: ISTIO_ROOT_CERT_FILE, data: enc.encode(result.newRoot.certPem), mode: 0o644 });
      files.push({ path: ISTIO_ROOT_KEY_FILE, data: enc.encode(result.newRoot.keyPem) });
    }
    let undoRootKey: (() => Promise<void>) | undefined;
    if (result.newRoot && !keepRootInDir) {
      if (opts.rootKeyOut) {
        undoRootKey = await writeFileUndoable(opts.rootKeyOut, enc.encode(result.newRoot.keyPem), {
          overwrite: opts.force === true,
        });
      } else progress.note("the new Istio root CA key was not kept (pass --root-key-out FILE to keep it)");
    }
    try {
      await emit(deps, progress, opts, result.secrets, files);
    } catch (e) {
      await undoRootKey?.().catch(() => {});
      throw e;
    }
    setCode(0);
  });

  // ---- inspect ----
  program.command("inspect")
    .description("Show every certificate in a PEM file or under a folder (secret folder or init's DIR).")
    .argument("<path>", "PEM file or directory")
    .option("--json", "JSON instead of text")
    .option("--at <time>", "compute days left at this ISO 8601 time instead of now", parseAtArg)
    .addHelpText(
      "after",
      "\nExit codes:\n  0  shown\n  2  bad input (missing file, no certificate, garbage PEM)",
    )
    .action(async (path: string, opts) => {
      const items = await inspect(path, opts.at ?? deps.clock.now());
      deps.out(opts.json ? JSON.stringify(items, null, 2) + "\n" : renderInspection(items));
      setCode(0);
    });

  // ---- verify ----
  program.command("verify")
    .description(
      "Validate a certificate chain: signatures, validity at a time, CA and pathLen, key usage, EKU for " +
        "--purpose, and the DNS name. CERT's first certificate is the leaf; the rest are intermediates.",
    )
    .argument("<cert>", "PEM file: leaf, then optionally intermediates")
    .requiredOption("--ca <file>", "trusted root(s) (repeat)", collect)
    .option("--untrusted <file>", "more intermediates (repeat)", collect)
    .addOption(
      new Option("--purpose <purpose>", "server (serverAuth) or client (clientAuth)").choices([
        "server",
        "client",
      ]),
    )
    .option("--dns <name>", "the name the certificate must be valid for")
    .option("--at <time>", "validate at this ISO 8601 time instead of now", parseAtArg)
    .addHelpText(
      "after",
      "\nExit codes:\n  0  valid\n  1  invalid: one line on stderr naming the reason\n  2  bad input (missing file, garbage PEM)",
    )
    .action(async (cert: string, opts) => {
      try {
        const v = await verifyFiles({
          cert,
          ca: opts.ca,
          untrusted: opts.untrusted,
          purpose: opts.purpose,
          dnsName: opts.dns,
          now: opts.at ?? deps.clock.now(),
        });
        deps.out(`${cert}: OK (${v.chain.map((c) => c.subject).join(" <- ")})\n`);
        setCode(0);
      } catch (e) {
        if (!(e instanceof VerificationError)) throw e;
        deps.err(`meshrelay certs: ${cert}: INVALID (${e.reason}): ${e.message}\n`);
        setCode(1);
      }
    });

  // ---- check ----
  program.command("check")
    .description(
      "Days left for every certificate under DIR; a certificate past --warn-fraction of its lifetime " +
        "(default 2/3, as cert-manager renews) is due for renewal.",
    )
    .argument("<dir>", "directory (or one PEM file)")
    .addOption(
      new Option("--warn-fraction <f>", "share of the lifetime after which to renew")
        .argParser(fraction)
        .default(2 / 3, "2/3"),
    )
    .option("--at <time>", "check at this ISO 8601 time instead of now", parseAtArg)
    .option("--json", "JSON instead of a table")
    .addHelpText(
      "after",
      `
Exit codes:
  ${CHECK_EXIT.ok}  every certificate is ok
  ${CHECK_EXIT.renew}  something is due for renewal (or not valid yet)
  ${CHECK_EXIT.badInput}  bad input (missing directory, no certificate, garbage PEM)
  ${CHECK_EXIT.expired}  something has expired`,
    )
    .action(async (dir: string, opts) => {
      const items = await check(dir, opts.at ?? deps.clock.now(), opts.warnFraction);
      deps.out(opts.json ? JSON.stringify(items, null, 2) + "\n" : renderCheck(items));
      setCode(checkExitCode(items));
    });

  // ---- register / deregister ----
  const addClusterFlags = (cmd: Command): Command =>
    cmd
      .requiredOption(
        "--cluster <name>",
        "the workload cluster's name (= its KubernetesCluster and the agent's --cluster)",
      )
      .option(
        "--mgmt-kubeconfig <file>",
        "kubeconfig of the management cluster (default $KUBECONFIG or ~/.kube/config)",
      )
      .option("--mgmt-context <name>", "its context (default the current one)")
      .option("--mgmt-namespace <ns>", "the server's namespace (its relay secrets)", DEFAULT_KUBE_NAMESPACE)
      .option(
        "--remote-kubeconfig <file>",
        "kubeconfig of the workload cluster (default $KUBECONFIG or ~/.kube/config)",
      )
      .option("--remote-context <name>", "its context (default the current one)")
      .option(
        "--remote-namespace <ns>",
        "the agent's namespace in the workload cluster",
        DEFAULT_KUBE_NAMESPACE,
      )
      .option("--root-secret <name>", "relay root CA secret (ca.crt), in both clusters", RELAY_ROOT_SECRET)
      .option("--token-secret <name>", "bootstrap token secret in the workload cluster", RELAY_TOKEN_SECRET)
      .option(
        "--client-secret <name>",
        "the agent's client certificate secret",
        RELAY_CLIENT_SECRET_NAMES[0],
      );
  // register/deregister load the Kubernetes client and the relay's token code only when they run, so
  // the rest of `certs` starts without them (and without their network needs).
  const clustersOf = async (opts: Record<string, string | undefined>, remote: boolean) => {
    const { loadKubeClient } = await import("./cli_kube.ts");
    checkClusterNames([opts.cluster!]);
    validateNamespace(opts.mgmtNamespace!, "--mgmt-namespace");
    validateNamespace(opts.remoteNamespace!, "--remote-namespace");
    const mgmt = loadKubeClient(
      { kubeconfig: opts.mgmtKubeconfig, context: opts.mgmtContext },
      "--mgmt-kubeconfig",
    );
    const other = remote
      ? loadKubeClient(
        { kubeconfig: opts.remoteKubeconfig, context: opts.remoteContext },
        "--remote-kubeconfig",
      )
      : undefined;
    return { mgmt, remote: other };
  };

  addClusterFlags(
    program.command("register")
      .description(
        "Register a workload cluster: KubernetesCluster in the management cluster; in the workload cluster the " +
          "agent's namespace, relay-root-tls-secret and a fresh per-cluster bootstrap token " +
          "(relay-identity-token-secret), and with --server-address the ConfigMap meshrelay-agent the agent " +
          "Deployment reads. --wait: wait for the agent's client certificate, then delete the bootstrap token.",
      ),
  )
    .option(
      "--server-address <host:port>",
      "the relay server as the agent dials it (ConfigMap meshrelay-agent)",
    )
    .option("--authority <name>", "TLS server name for SNI passthrough (ConfigMap meshrelay-agent)")
    .option("--cluster-domain <domain>", "DNS suffix of the cluster's Services", "cluster.local")
    .option("--label <key=value>", "label of the KubernetesCluster (repeat)", collectFlag)
    .option("--token-key <key>", "key of the token in the token secret", "token")
    .addOption(
      new Option("--token-ttl <duration>", "lifetime of the bootstrap token").argParser(parseDuration)
        .default(3_600_000, "1h"),
    )
    .option("--wait", "wait for the agent's client certificate, then delete the bootstrap token secret")
    .addOption(
      new Option("--wait-timeout <duration>", "how long --wait waits").argParser(parseDuration)
        .default(300_000, "5m"),
    )
    .option("-v, --verbose", "a progress line per step on stderr even when it is not a terminal")
    .addHelpText(
      "after",
      "\nExit codes:\n  0  registered (with --wait: the agent has its certificate)\n  1  failed (API errors, --wait timed out)\n" +
        "  2  bad input (flags, kubeconfig, context)\nReference: docs/kubernetes.md.",
    )
    .action(async (opts) => {
      const labels: Record<string, string> = {};
      for (const l of (opts.label ?? []) as string[]) {
        const i = l.indexOf("=");
        if (i <= 0) throw new InvalidInputError(`--label ${JSON.stringify(l)}: expected key=value`);
        labels[l.slice(0, i)] = l.slice(i + 1);
      }
      if (opts.serverAddress && !/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(opts.serverAddress)) {
        throw new InvalidInputError("--server-address must be host:port");
      }
      const { mgmt, remote } = await clustersOf(opts, true);
      const { registerCluster } = await import("./certs/register.ts");
      const progress = progressFor(deps, opts);
      const r = await registerCluster({
        cluster: opts.cluster,
        mgmt,
        mgmtNamespace: opts.mgmtNamespace,
        remote: remote!,
        remoteNamespace: opts.remoteNamespace,
        clusterDomain: opts.clusterDomain,
        labels,
        serverAddress: opts.serverAddress,
        authority: opts.authority,
        rootSecret: opts.rootSecret,
        tokenSecret: opts.tokenSecret,
        tokenKey: opts.tokenKey,
        clientSecret: opts.clientSecret,
        tokenTtlMs: opts.tokenTtl,
        waitMs: opts.wait ? opts.waitTimeout : undefined,
        clock: deps.clock,
        progress,
      });
      if (r.clientSerial) {
        deps.out(
          `${opts.cluster}: registered; the agent holds client certificate ${r.clientSerial}` +
            (r.tokenSecretDeleted ? `; bootstrap token secret ${opts.tokenSecret} deleted` : "") + "\n",
        );
      } else {
        deps.out(
          `${opts.cluster}: registered; bootstrap token ${r.tokenId} waits in ${opts.remoteNamespace}/${opts.tokenSecret} ` +
            "for the agent (run with --wait to delete it once the agent has its certificate)\n",
        );
      }
      setCode(0);
    });

  addClusterFlags(
    program.command("deregister")
      .description(
        "Deregister a workload cluster: delete its KubernetesCluster (the server revokes its certificates and " +
          "closes its stream), revoke its unused bootstrap tokens, and remove the relay secrets and the " +
          "ConfigMap meshrelay-agent from the workload cluster (not the namespace, not Istio's cacerts).",
      ),
  )
    .option(
      "--skip-remote",
      "the workload cluster is gone or unreachable: clean up the management cluster only",
    )
    .option("-v, --verbose", "a progress line per step on stderr even when it is not a terminal")
    .action(async (opts) => {
      const { mgmt, remote } = await clustersOf(opts, !opts.skipRemote);
      const { deregisterCluster } = await import("./certs/register.ts");
      const r = await deregisterCluster({
        cluster: opts.cluster,
        mgmt,
        mgmtNamespace: opts.mgmtNamespace,
        remote,
        remoteNamespace: opts.remoteNamespace,
        rootSecret: opts.rootSecret,
        tokenSecret: opts.tokenSecret,
        clientSecret: opts.clientSecret,
        progress: progressFor(deps, opts),
      });
      deps.out(
        `${opts.cluster}: ${r.wasRegistered ? "deregistered" : "was not registered"}` +
          (r.revokedTokens.length ? `; revoked unused tokens ${r.revokedTokens.join(", ")}` : "") +
          (r.removed.length ? `; removed ${r.removed.join(", ")} from the workload cluster` : "") + "\n",
      );
      setCode(0);
    });

  return program;
}

function parseAtArg(v: string): Date {
  try {
    return parseAt(v);
  } catch {
    throw new InvalidArgumentError("expected an ISO 8601 time such as 2030-01-01T00:00:00Z");
  }
}

/** separate-roots: the Istio root a previous run kept under --pki/--out, if any. */
async function existingIstioRoot(
  opts: CommonOpts & { pki?: string },
  now: Date,
): Promise<LoadedIssuer | undefined> {
  const dir = opts.pki ?? (opts.format === "dir" ? opts.out : undefined);
  if (!dir) return undefined;
  const cert = `${dir}/${ISTIO_ROOT_CERT_FILE}`;
  const key = `${dir}/${ISTIO_ROOT_KEY_FILE}`;
  const exists = async (p: string) => await Deno.stat(p).then(() => true, () => false);
  if (!(await exists(cert)) && !(await exists(key))) return undefined;
  return await loadIssuerFiles({
    certPath: cert,
    keyPath: key,
    certFlag: cert,
    keyFlag: key,
    passphraseEnv: "MESHRELAY_CA_KEY_PASSPHRASE",
    passphrases: { env: () => undefined },
    now,
  });
}

/** Runs `meshrelay certs …` with `deps`; returns the exit code. Never throws. */
export async function run(args: string[], deps: Deps): Promise<number> {
  let code = 0;
  const program = buildProgram(deps, (c) => code = c);
  return await runProgram("certs", program, args, () => code, deps.err);
}

/** Entry point of the mode; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  // Before anything else: without --kube this mode never needs the network or subprocesses.
  narrow("certs", needsFromArgs(args), Deno.permissions);
  return await run(args, realDeps());
}
