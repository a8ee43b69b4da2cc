/**
 * `certs istio`: Istio plug-in CA material (`cacerts` in `istio-system`) for each cluster, in one of the
 * three certificate architectures of the seeds:
 *
 * - `shared` — one root and one intermediate for relay and Istio: every cluster's `cacerts` holds the relay
 *   signing CA itself. Simplest, and the weakest: every istiod holds the key that signs relay client
 *   certificates, so any workload cluster can mint a relay identity for any other cluster.
 * - `separate-intermediates` (default) — one root, separate intermediates: each cluster gets its own Istio
 *   intermediate (`O=Istio, CN=Intermediate CA, L=<cluster>`) issued by the relay root. Meshes and relay share
 *   the root of trust, but no cluster holds a key that can sign relay certificates.
 * - `separate-roots` — an Istio root (`O=Istio, CN=Root CA`) apart from the relay root, and per-cluster
 *   intermediates under it: relay and mesh traffic share no root of trust.
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import {
  certificateToPem,
  generateKeyPair,
  issueCertificate,
  type Issuer,
  type KeyAlgorithm,
  privateKeyToPem,
  type X509Certificate,
} from "../pki/mod.ts";
import { chainBelowRoot, defaultRootAlgorithm } from "./init.ts";
import type { LoadedIssuer } from "./inputs.ts";
import {
  ISTIO_ROOT_CERT_FILE,
  ISTIO_ROOT_KEY_FILE,
  ISTIO_SECRET,
  istioCacertsSecret,
  istioStoreDir,
} from "./layout.ts";
import type { PlannedSecret, PlanTargets } from "./output.ts";
import type { Progress } from "./progress.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

/** The three architectures (see the module doc). */
export const ISTIO_ARCHITECTURES = ["shared", "separate-intermediates", "separate-roots"] as const;
/** One of {@linkcode ISTIO_ARCHITECTURES}. */
export type IstioArchitecture = typeof ISTIO_ARCHITECTURES[number];

/** Key types Istio's plug-in CA accepts. */
export const ISTIO_ALGORITHMS: readonly KeyAlgorithm[] = [
  "ecdsa-p256",
  "ecdsa-p384",
  "rsa-2048",
  "rsa-3072",
  "rsa-4096",
];

/** Throws a clear refusal for a key type Istio cannot use (`what` names where it came from). */
export function checkIstioAlgorithm(algorithm: KeyAlgorithm, what: string): void {
  if (!ISTIO_ALGORITHMS.includes(algorithm)) {
    throw new InvalidInputError(
      `${what}: Istio's plug-in CA supports RSA and ECDSA P-256/P-384 keys only, not ${algorithm}`,
    );
  }
}

/** Options of {@linkcode buildIstioCacerts}. */
export interface IstioOptions {
  clusters: string[];
  architecture: IstioArchitecture;
  namespace: string;
  /** Per-cluster intermediates (and a new Istio root unless `rootKeyAlgorithm`). */
  keyAlgorithm: KeyAlgorithm;
  rootKeyAlgorithm?: KeyAlgorithm;
  days: { root: number; intermediate: number };
  /**
   * `shared`: the relay signing CA. `separate-intermediates`: the relay root CA (or any CA allowed to sign
   * one more CA level). `separate-roots`: an existing Istio root; absent means a new one is made.
   */
  issuer?: LoadedIssuer;
  now: Date;
  progress: Progress;
}

/** What {@linkcode buildIstioCacerts} made. */
export interface IstioResult {
  secrets: PlannedSecret[];
  /** A new Istio root (`separate-roots` without an existing one): its certificate and key PEM. */
  newRoot?: { certPem: string; keyPem: string; certificate: X509Certificate };
}

/** Checks the cluster names are distinct DNS labels (they become folder names and `L=`). */
export function checkClusterNames(clusters: readonly string[]): void {
  if (clusters.length === 0) throw new InvalidInputError("--cluster is required");
  const seen = new Set<string>();
  for (const c of clusters) {
    if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(c)) {
      throw new InvalidInputError(`--cluster "${c}" must be a DNS label (lowercase letters, digits, '-')`);
    }
    if (seen.has(c)) throw new InvalidInputError(`--cluster ${c} is given twice`);
    seen.add(c);
  }
}

/** What `istio` will write under `--out`, for the preflight check. */
export function istioTargets(clusters: readonly string[], newRoot: boolean): PlanTargets {
  return {
    secrets: clusters.map((c) => ({ storeDir: istioStoreDir(c), name: ISTIO_SECRET })),
    files: newRoot ? [ISTIO_ROOT_CERT_FILE, ISTIO_ROOT_KEY_FILE] : [],
  };
}

/** Builds `cacerts` for every cluster (see the module doc). */
export async function buildIstioCacerts(opts: IstioOptions): Promise<IstioResult> {
  checkClusterNames(opts.clusters);
  const { now, progress } = opts;
  if (opts.architecture === "shared") {
    const signer = opts.issuer;
    if (!signer?.root) throw new InvalidInputError("shared: the relay signing CA and its root are required");
    checkIstioAlgorithm(signer.issuer.keyPair.algorithm, "the relay signing CA (shared architecture)");
    const keyPem = await privateKeyToPem(signer.issuer.keyPair);
    const chain = chainBelowRoot(signer.issuer, signer.root).slice(1);
    return {
      secrets: opts.clusters.map((c) =>
        istioCacertsSecret(c, opts.namespace, {
          certificate: signer.issuer.certificate,
          chain,
          keyPem,
          root: signer.root!,
        })
      ),
    };
  }
  checkIstioAlgorithm(opts.keyAlgorithm, "--key-algorithm");
  let parent: Issuer;
  let root: X509Certificate;
  let newRoot: IstioResult["newRoot"];
  if (opts.issuer) {
    if (!opts.issuer.root) {
      throw new InvalidInputError("--ca-cert: cannot find the self-signed root of this CA; append its chain");
    }
    checkIstioAlgorithm(opts.issuer.issuer.keyPair.algorithm, "the CA that signs the Istio intermediates");
    parent = opts.issuer.issuer;
    root = opts.issuer.root;
  } else if (opts.architecture === "separate-roots") {
    const alg = opts.rootKeyAlgorithm ?? defaultRootAlgorithm(opts.keyAlgorithm);
    checkIstioAlgorithm(alg, "--root-key-algorithm");
    const key = await progress.step(`Istio root CA key (${alg})`, () => generateKeyPair(alg));
    root = await progress.step("Istio root CA certificate", () =>
      issueCertificate({
        profile: "root-ca",
        subject: "O=Istio,CN=Root CA",
        publicKey: key.publicKey,
        selfSignKey: key,
        now,
        validityMs: opts.days.root * DAY_MS,
      }));
    parent = { certificate: root, keyPair: key, chain: [] };
    newRoot = {
      certPem: certificateToPem(root),
      keyPem: await privateKeyToPem(key),
      certificate: root,
    };
  } else {
    throw new InvalidInputError("separate-intermediates: the relay root CA and its key are required");
  }
  const secrets: PlannedSecret[] = [];
  for (const cluster of opts.clusters) {
    const key = await progress.step(
      `${cluster}: Istio intermediate key (${opts.keyAlgorithm})`,
      () => generateKeyPair(opts.keyAlgorithm),
    );
    const cert = await progress.step(`${cluster}: Istio intermediate certificate`, () =>
      issueCertificate({
        profile: "istio-intermediate-ca",
        subject: `O=Istio,CN=Intermediate CA,L=${cluster}`,
        dnsNames: ["istiod.istio-system.svc"],
        publicKey: key.publicKey,
        issuer: parent,
        now,
        validityMs: opts.days.intermediate * DAY_MS,
      }));
    secrets.push(istioCacertsSecret(cluster, opts.namespace, {
      certificate: cert,
      chain: chainBelowRoot(parent, root),
      keyPem: await privateKeyToPem(key),
      root,
    }));
  }
  return { secrets, newRoot };
}
