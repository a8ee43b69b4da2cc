/**
 * `certs init`: the whole relay PKI in memory — root CA (or a bring-your-own CA to sign under), the
 * intermediate signing CA, the relay server certificate and the identity token — as the secrets the
 * seeds name. Nothing is written here; the caller writes the result all at once.
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import {
  describeCertificate,
  generateKeyPair,
  isCa,
  issueCertificate,
  type Issuer,
  type KeyAlgorithm,
  type KeyPair,
  privateKeyToPem,
  type X509Certificate,
} from "../pki/mod.ts";
import {
  newToken,
  RELAY_ROOT_KEY_FILE,
  RELAY_ROOT_SECRET,
  RELAY_SERVER_SECRET,
  RELAY_SIGNING_SECRET,
  RELAY_TOKEN_SECRET,
  rootSecret,
  tlsSecret,
  tokenSecret,
} from "./layout.ts";
import type { LoadedIssuer } from "./inputs.ts";
import type { PlannedSecret, PlanTargets } from "./output.ts";
import type { Progress } from "./progress.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

/** Default server SANs: the relay Service in `namespace` under the names agents and SNI routers use. */
export function defaultServerDnsNames(namespace: string): string[] {
  return [
    "meshrelay-server",
    `meshrelay-server.${namespace}`,
    `meshrelay-server.${namespace}.svc`,
    `*.${namespace}`,
  ];
}

/** Root key algorithm when none is asked for: P-384 beside ECDSA leaves, otherwise the leaves' algorithm. */
export function defaultRootAlgorithm(leaf: KeyAlgorithm): KeyAlgorithm {
  return leaf.startsWith("ecdsa-") ? "ecdsa-p384" : leaf;
}

/** Options of {@linkcode buildRelayPki}. */
export interface InitOptions {
  namespace: string;
  serverDnsNames: string[];
  serverIpAddresses?: string[];
  days: { root: number; signing: number; server: number };
  /** Signing CA and server key (default ecdsa-p256). */
  keyAlgorithm: KeyAlgorithm;
  /** Root key (default {@linkcode defaultRootAlgorithm}). Ignored with `ca`. */
  rootKeyAlgorithm?: KeyAlgorithm;
  /** Bring your own: sign the signing CA and the server certificate under this CA instead of a new root. */
  ca?: LoadedIssuer;
  now: Date;
  random: (bytes: Uint8Array) => Uint8Array;
  progress: Progress;
}

/** What {@linkcode buildRelayPki} made. */
export interface InitResult {
  secrets: PlannedSecret[];
  /** The new root's key (PKCS#8 PEM); absent with a bring-your-own CA. */
  rootKeyPem?: string;
  root: X509Certificate;
}

/** What `init` will write, for the preflight check before generating anything. */
export function initTargets(keepRootKey: boolean): PlanTargets {
  return {
    secrets: [RELAY_ROOT_SECRET, RELAY_SIGNING_SECRET, RELAY_SERVER_SECRET, RELAY_TOKEN_SECRET].map((
      name,
    ) => ({
      name,
    })),
    files: keepRootKey ? [RELAY_ROOT_KEY_FILE] : [],
  };
}

/** Certificates between `issuer` (included) and `root` (excluded), nearest first. */
export function chainBelowRoot(issuer: Issuer, root: X509Certificate | undefined): X509Certificate[] {
  return [issuer.certificate, ...(issuer.chain ?? [])].filter((c) => !root || !c.equal(root));
}

async function keyPair(progress: Progress, what: string, algorithm: KeyAlgorithm): Promise<KeyPair> {
  return await progress.step(`${what} key (${algorithm})`, () => generateKeyPair(algorithm));
}

/** Builds the relay PKI (see the module doc). */
export async function buildRelayPki(opts: InitOptions): Promise<InitResult> {
  const { now, progress } = opts;
  for (const [k, v] of Object.entries(opts.days)) {
    if (!(Number.isInteger(v) && v > 0)) {
      throw new InvalidInputError(`--days-${k} must be a positive whole number`);
    }
  }
  if (opts.serverDnsNames.length === 0 && (opts.serverIpAddresses ?? []).length === 0) {
    throw new InvalidInputError("--server-dns: the server certificate needs at least one name");
  }
  let root: X509Certificate;
  let parent: Issuer;
  let rootKeyPem: string | undefined;
  if (opts.ca) {
    if (!opts.ca.root) {
      throw new InvalidInputError(
        "--ca-cert: cannot find the self-signed root of this CA; append the chain up to the root to the file",
      );
    }
    root = opts.ca.root;
    parent = opts.ca.issuer;
  } else {
    const rootAlg = opts.rootKeyAlgorithm ?? defaultRootAlgorithm(opts.keyAlgorithm);
    const rootKey = await keyPair(progress, "root CA", rootAlg);
    root = await progress.step("root CA certificate", () =>
      issueCertificate({
        profile: "root-ca",
        subject: "CN=meshrelay relay root CA,O=meshrelay",
        publicKey: rootKey.publicKey,
        selfSignKey: rootKey,
        now,
        validityMs: opts.days.root * DAY_MS,
      }));
    rootKeyPem = await privateKeyToPem(rootKey);
    parent = { certificate: root, keyPair: rootKey, chain: [] };
  }
  if (!isCa(parent.certificate)) throw new InvalidInputError("--ca-cert is not a CA certificate");
  if (opts.ca && (await describeCertificate(parent.certificate)).pathLength === 0) {
    throw new InvalidInputError(
      "--ca-cert has pathLen 0: it cannot sign the relay signing CA (use it as --signing-cert of certs agent/server)",
    );
  }
  const signingKey = await keyPair(progress, "signing CA", opts.keyAlgorithm);
  const signingCert = await progress.step("signing CA certificate", () =>
    issueCertificate({
      profile: "intermediate-ca",
      subject: "CN=meshrelay relay signing CA,O=meshrelay",
      publicKey: signingKey.publicKey,
      issuer: parent,
      now,
      validityMs: opts.days.signing * DAY_MS,
    }));
  const signing: Issuer = {
    certificate: signingCert,
    keyPair: signingKey,
    chain: chainBelowRoot(parent, root),
  };
  const serverKey = await keyPair(progress, "server", opts.keyAlgorithm);
  const serverCert = await progress.step("server certificate", () =>
    issueCertificate({
      profile: "server",
      subject: `CN=${opts.serverDnsNames[0] ?? opts.serverIpAddresses![0]},O=meshrelay`,
      dnsNames: opts.serverDnsNames,
      ipAddresses: opts.serverIpAddresses,
      publicKey: serverKey.publicKey,
      issuer: signing,
      now,
      validityMs: opts.days.server * DAY_MS,
    }));
  const ns = opts.namespace;
  const secrets = [
    rootSecret(ns, root),
    tlsSecret(RELAY_SIGNING_SECRET, ns, {
      certificate: signingCert,
      chain: signing.chain ?? [],
      keyPem: await privateKeyToPem(signingKey),
      root,
    }),
    tlsSecret(RELAY_SERVER_SECRET, ns, {
      certificate: serverCert,
      chain: chainBelowRoot(signing, root),
      keyPem: await privateKeyToPem(serverKey),
      root,
    }),
    tokenSecret(ns, newToken(opts.random)),
  ];
  return { secrets, rootKeyPem, root };
}
