/**
 * Istio federated trust, server side: signs a cluster's Istio intermediate CA with the root of the
 * `RootTrustPolicy` that serves the cluster (docs/kubernetes.md, the seeds' certificate architectures).
 *
 * - The agent makes the intermediate's key in its own cluster and sends only a CSR (over mTLS; the cluster
 *   is the one of its client certificate). The CSR must ask for exactly `istiod.istio-system.svc`; the
 *   subject is ours: `O=Istio, CN=Intermediate CA, L=<cluster>`; the profile gives CA:true, pathLen 0.
 * - `generated: {}`: the server makes the root at first use and keeps it in its own store as
 *   `root-trust.<policy>` (`root-cert.pem`, `key.pem`, the seeds' names), created with compare-and-swap so
 *   two replicas never make two roots. `secretRef`: the user's root (or an intermediate followed by its
 *   chain up to a self-signed root) in the named secret of the server's store.
 * - The response carries the intermediate, the chain between it and the root, and the root; the agent
 *   writes `cacerts` (`cert-chain.pem` = intermediate + chain + root).
 * @module
 */
import { ConflictError, InvalidInputError, PermissionDeniedError, PreconditionError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  certificatesToPem,
  certificateToPem,
  generateKeyPair,
  issueCertificate,
  type Issuer,
  type KeyAlgorithm,
  loadIssuer,
  privateKeyToPem,
  signCsr,
  type X509Certificate,
} from "../pki/mod.ts";
import type { CertificateResponse } from "../proto/mod.ts";
import { type DeclaredConfig, rootTrustPolicyFor, type RootTrustPolicySpec } from "../state/mod.ts";
import type { SecretStore } from "../store/mod.ts";

/** The DNS SAN of every Istio intermediate CA (Istio's own tooling and the seeds use it). */
export const ISTIOD_SAN = "istiod.istio-system.svc";
/** Name prefix of the secret a generated root lives in: `root-trust.<policy>` (seeds' name). */
export const ROOT_TRUST_SECRET_PREFIX = "root-trust.";
/** Keys of a root secret: certificate (then chain up to the root) and key. Alternatives are accepted on read. */
export const ROOT_CERT_KEYS = ["root-cert.pem", "tls.crt", "ca.crt"] as const;
export const ROOT_KEY_KEYS = ["key.pem", "root-key.pem", "tls.key"] as const;

const DAY_MS = 86_400_000;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Options of {@linkcode MeshCaAuthority}. */
export interface MeshCaOptions {
  /** The server's store: generated roots are kept here, and `secretRef` roots read from here. */
  store: SecretStore;
  /** The current declared config (clusters and RootTrustPolicies). */
  declared: () => DeclaredConfig;
  log: Logger;
  /** Key of a generated root. Default ecdsa-p384 (Istio's plug-in CA takes RSA and P-256/P-384). */
  rootKeyAlgorithm?: KeyAlgorithm;
  /** Lifetime of a generated root. Default 3650 days. */
  rootValidityDays?: number;
}

/** A signed intermediate and what it came from. */
export interface MeshCaIssued {
  certificate: X509Certificate;
  response: CertificateResponse;
  policy: string;
}

interface LoadedRoot {
  secret: string;
  version: string;
  issuer: Issuer;
  root: X509Certificate;
}

/** Signs Istio intermediate CAs for registered clusters (see the module comment). */
export class MeshCaAuthority {
  readonly #o: MeshCaOptions;
  readonly #log: Logger;
  /** Loaded roots by secret name, re-read when the secret's version changes. */
  readonly #roots = new Map<string, LoadedRoot>();

  constructor(opts: MeshCaOptions) {
    this.#o = opts;
    this.#log = opts.log.child({ component: "mesh-ca" });
  }

  /** The policy serving `cluster`; PreconditionError when none does, PermissionDeniedError when unregistered. */
  policyFor(cluster: string): RootTrustPolicySpec {
    const cfg = this.#o.declared();
    const info = cfg.clusters.find((c) => c.name === cluster);
    if (!info) throw new PermissionDeniedError(`cluster "${cluster}" is not registered`);
    const policy = rootTrustPolicyFor(cfg.rootTrustPolicies, info);
    if (!policy) {
      throw new PreconditionError(
        `no RootTrustPolicy serves cluster "${cluster}": declare one to issue Istio intermediate CAs`,
      );
    }
    return policy;
  }

  /** Signs `csrPem` as the Istio intermediate CA of `cluster`. */
  async sign(cluster: string, csrPem: string, now: Date): Promise<MeshCaIssued> {
    const policy = this.policyFor(cluster);
    const root = await this.#root(policy, now);
    let certificate: X509Certificate;
    try {
      certificate = await signCsr(csrPem, {
        issuer: root.issuer,
        profile: "istio-intermediate-ca",
        expectDnsNames: [ISTIOD_SAN],
        subject: `O=Istio,CN=Intermediate CA,L=${cluster}`,
        now,
        validityMs: policy.ttlDays * DAY_MS,
      });
    } catch (e) {
      // The root's own limits (path length, expiry, key type) are the operator's to fix, not the agent's.
      if (e instanceof InvalidInputError && /^issuer/.test(e.message)) {
        throw new PreconditionError(`RootTrustPolicy ${policy.name}: ${root.secret}: ${e.message}`, {
          cause: e,
        });
      }
      throw e;
    }
    const between = [root.issuer.certificate, ...(root.issuer.chain ?? [])].filter((c) =>
      c.subject !== c.issuer
    );
    return {
      certificate,
      policy: policy.name,
      response: {
        certificatePem: certificateToPem(certificate),
        chainPem: certificatesToPem(between),
        caPem: certificateToPem(root.root),
        notAfterUnixMs: certificate.notAfter.getTime(),
        sessionBinding: "",
      },
    };
  }

  async #root(policy: RootTrustPolicySpec, now: Date): Promise<LoadedRoot> {
    const name = "secretRef" in policy.ca ? policy.ca.secretRef : ROOT_TRUST_SECRET_PREFIX + policy.name;
    let s = await this.#o.store.get(name);
    if (!s && "generated" in policy.ca) {
      try {
        s = await this.#generate(name, now);
        this.#log.info("generated the Istio root CA of a RootTrustPolicy", {
          policy: policy.name,
          secret: name,
        });
      } catch (e) {
        // Another replica generated it first: use theirs.
        if (!(e instanceof ConflictError)) throw e;
        s = await this.#o.store.get(name);
      }
    }
    if (!s) {
      throw new PreconditionError(
        `RootTrustPolicy ${policy.name}: secret ${name} does not exist in the server's namespace ` +
          `(it needs ${ROOT_CERT_KEYS[0]} and ${ROOT_KEY_KEYS[0]})`,
      );
    }
    const cached = this.#roots.get(name);
    if (cached?.version === s.version) return cached;
    const certPem = firstOf(s.data, ROOT_CERT_KEYS);
    const keyPem = firstOf(s.data, ROOT_KEY_KEYS);
    if (!certPem || !keyPem) {
      throw new PreconditionError(
        `RootTrustPolicy ${policy.name}: secret ${name} needs a certificate (${ROOT_CERT_KEYS.join(", ")}) ` +
          `and its key (${ROOT_KEY_KEYS.join(", ")})`,
      );
    }
    let issuer: Issuer;
    try {
      issuer = await loadIssuer(certPem, keyPem, { now, what: `secret ${name}` });
    } catch (e) {
      if (e instanceof InvalidInputError) {
        throw new PreconditionError(`RootTrustPolicy ${policy.name}: ${e.message}`, { cause: e });
      }
      throw e;
    }
    const top = [issuer.certificate, ...(issuer.chain ?? [])].at(-1)!;
    if (top.subject !== top.issuer) {
      throw new PreconditionError(
        `RootTrustPolicy ${policy.name}: secret ${name}: the certificate must end with its self-signed root ` +
          "(Istio needs the root as root-cert.pem)",
      );
    }
    const loaded = { secret: name, version: s.version, issuer, root: top };
    this.#roots.set(name, loaded);
    return loaded;
  }

  async #generate(name: string, now: Date) {
    const key = await generateKeyPair(this.#o.rootKeyAlgorithm ?? "ecdsa-p384");
    const cert = await issueCertificate({
      profile: "root-ca",
      subject: "O=Istio,CN=Root CA",
      publicKey: key.publicKey,
      selfSignKey: key,
      now,
      validityMs: (this.#o.rootValidityDays ?? 3650) * DAY_MS,
    });
    return await this.#o.store.put(name, {
      "root-cert.pem": enc.encode(certificateToPem(cert)),
      "key.pem": enc.encode(await privateKeyToPem(key)),
    }, { expectedVersion: null });
  }
}

function firstOf(data: Readonly<Record<string, Uint8Array>>, keys: readonly string[]): string | undefined {
  for (const k of keys) {
    const v = data[k];
    if (v?.length) return dec.decode(v);
  }
  return undefined;
}
