/**
 * The `Identity` service: Bootstrap exchanges a bootstrap token for a client certificate, Renew issues a
 * fresh one to a caller that proves itself with its current certificate. The agent's private key never
 * travels: both take a CSR, whose SAN must be the cluster (pki `signCsr` with `expectDnsNames`).
 *
 * Bootstrap order, and why: cheap refusals first (rate limit, request shape, signing CA present,
 * cluster registered, token valid), then signing, and only then is a per-cluster token consumed (a
 * compare-and-swap): a bad CSR does not burn a single-use token, and of two concurrent uses only the one
 * whose consumption wins gets its certificate back.
 *
 * Signing is the expensive part (3–4 ms of CPU); it runs behind an {@linkcode AdmissionGate}, after the
 * cheap refusals, so bad callers are refused at once and never take a place in its queue. A call refused
 * as busy (RESOURCE_EXHAUSTED) or cancelled by its client does not count against the caller's failure
 * limit: it is load, not a wrong guess. The signing and root CA secrets and the shared token are read
 * through `secrets` (the server's SecretCache), not from the store on every call.
 *
 * Unregistered clusters cannot bootstrap, not even with the shared token: the shared token lets its
 * holder name any cluster (the seeds' known weakness), so the registry (`KubernetesCluster` documents,
 * written by whoever registers the cluster) is what bounds the names it can obtain certificates for.
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import type { Clock } from "../clock.ts";
import {
  AuthenticationError,
  GrpcStatus,
  grpcStatusOf,
  InvalidInputError,
  MeshrelayError,
  PermissionDeniedError,
  PreconditionError,
  UnavailableError,
} from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  certificatesToPem,
  certificateToPem,
  type Issuer,
  signCsr,
  type X509Certificate,
} from "../pki/mod.ts";
import type {
  BootstrapRequest,
  CertificateResponse,
  IdentityServer,
  MeshCaRequest,
  RenewRequest,
} from "../proto/mod.ts";
import type { Secret, SecretStore } from "../store/mod.ts";
import { AdmissionGate } from "./admission.ts";
import type { SessionBindings } from "./session_binding.ts";
import { caFingerprint } from "./ca_fingerprint.ts";
import type { MeshCaAuthority } from "./mesh_ca.ts";
import type { MetricsRegistry } from "./metrics.ts";
import type { IdentifiableCall, Identify } from "./peer_identity.ts";
import { type FailureLimiter, peerAddress } from "./rate_limit.ts";
import type { RevocationList } from "./revocation.ts";
import type { SecretReader } from "./secret_cache.ts";
import { definedOnly, signingIssuerFrom } from "./server_material.ts";
import { ROOT_TLS_SECRET, SIGNING_TLS_SECRET } from "./server_tls.ts";
import { type TokenAuthority, validateClusterName } from "./tokens.ts";

/** The signing CA and the trust anchors agents get, loaded once per version of their secrets. */
interface SigningMaterial {
  issuer: Issuer;
  rootPem: string;
  /** {@linkcode caFingerprint} of `rootPem`, compared with each Bootstrap's `known_ca_sha256`. */
  rootSha256: string;
}
/** Default client certificate lifetime: one year, as in the seeds. */
export const DEFAULT_CLIENT_CERT_TTL_MS = 365 * 86_400_000;
/** Largest CSR accepted (PEM characters); a P-256 or RSA-4096 CSR is far below. */
const MAX_CSR_CHARS = 16 * 1024;
/** What a caller refused by the signing gate reads (clear, no detail worth hiding). */
export const SIGNING_BUSY_MESSAGE = "server busy signing certificates, retry later";

/** Options of {@linkcode IdentityHandlers}. */
export interface IdentityServiceOptions {
  store: SecretStore;
  /** Where the signing and root CA secrets are read (the server passes a SecretCache). Default: `store`. */
  secrets?: SecretReader;
  /** Admission control of signing (Bootstrap, Renew, SignMeshCa). Default: a gate with its default limits. */
  admission?: AdmissionGate;
  tokens: TokenAuthority;
  clock: Clock;
  log: Logger;
  limiter: FailureLimiter;
  isRegistered: (cluster: string) => boolean;
  /** mTLS identity for Renew; absent in simple-TLS and insecure modes (Renew is then refused). */
  identifyCertificate?: Identify;
  /** False in simple-TLS and insecure modes: there are no client certificates to issue. */
  issuesCertificates: boolean;
  revocations?: RevocationList;
  metrics?: MetricsRegistry;
  clientCertTtlMs?: number;
  signingSecret?: string;
  rootSecret?: string;
  /** Istio federated trust (SignMeshCa); absent: SignMeshCa is refused. */
  meshCa?: MeshCaAuthority;
  /**
   * mTLS: a successful Bootstrap also returns a session binding, so the agent's first Sync stream can
   * run on the same connection (session_binding.ts). Absent: no binding is offered.
   */
  sessionBindings?: SessionBindings;
}

/** The Bootstrap and Renew logic, independent of grpc-js plumbing. */
export class IdentityHandlers {
  #o: IdentityServiceOptions & { clientCertTtlMs: number; signingSecret: string; rootSecret: string };
  #meshCaIssued?: ReturnType<MetricsRegistry["counter"]>;
  #log: Logger;
  #secrets: SecretReader;
  #gate: AdmissionGate;
  /** The loaded signing CA, keyed by the versions of the secrets it came from; shared while it loads. */
  #signing?: { key: string; loaded: Promise<SigningMaterial> };
  #failures?: ReturnType<MetricsRegistry["counter"]>;
  #issued?: ReturnType<MetricsRegistry["counter"]>;

  constructor(opts: IdentityServiceOptions) {
    this.#o = {
      clientCertTtlMs: DEFAULT_CLIENT_CERT_TTL_MS,
      signingSecret: SIGNING_TLS_SECRET,
      rootSecret: ROOT_TLS_SECRET,
      ...definedOnly(opts),
    };
    if (!(this.#o.clientCertTtlMs > 0)) {
      throw new InvalidInputError("client certificate TTL must be positive");
    }
    this.#log = opts.log.child({ component: "identity-service" });
    this.#secrets = opts.secrets ?? opts.store;
    this.#gate = opts.admission ??
      new AdmissionGate({ clock: opts.clock, metrics: opts.metrics, busyMessage: SIGNING_BUSY_MESSAGE });
    this.#failures = opts.metrics?.counter(
      "meshrelay_bootstrap_failures_total",
      "Refused Bootstrap and Renew calls, by reason.",
    );
    this.#issued = opts.metrics?.counter(
      "meshrelay_client_certificates_issued_total",
      "Client certificates issued, by RPC (bootstrap or renew).",
    );
    this.#meshCaIssued = opts.metrics?.counter(
      "meshrelay_istio_ca_certificates_issued_total",
      "Istio intermediate CAs signed (SignMeshCa), by RootTrustPolicy.",
    );
  }

  /** The signing CA and trust anchors, re-read when their secrets change. */
  async #issuer(now: Date): Promise<SigningMaterial> {
    if (!this.#o.issuesCertificates) {
      throw new PreconditionError(
        "this relay server does not issue client certificates in its security mode",
      );
    }
    const [rootSecret, signingSecret] = await Promise.all([
      this.#secrets.get(this.#o.rootSecret),
      this.#secrets.get(this.#o.signingSecret),
    ]);
    if (!signingSecret) {
      throw new PreconditionError(
        "this relay server has no signing CA (bring-your-own client certificates, --disable-ca): " +
          "give the agent a client certificate instead of a bootstrap token",
      );
    }
    const key = `${signingSecret.version}\n${rootSecret?.version ?? ""}`;
    if (this.#signing?.key !== key) {
      const entry = { key, loaded: this.#load(signingSecret, rootSecret, now) };
      this.#signing = entry;
      // A failed load (bad key in the secret) is not kept: the next call tries again.
      entry.loaded.catch(() => {
        if (this.#signing === entry) this.#signing = undefined;
      });
    }
    return await this.#signing.loaded;
  }

  async #load(
    signingSecret: Secret,
    rootSecret: Secret | undefined,
    now: Date,
  ): Promise<SigningMaterial> {
    const loaded = await signingIssuerFrom(signingSecret, { now, name: this.#o.signingSecret });
    if (!loaded) throw new PreconditionError(`secret ${this.#o.signingSecret} must hold tls.crt and tls.key`);
    const rootBytes = rootSecret?.data["ca.crt"];
    const rootPem = rootBytes?.length
      ? new TextDecoder().decode(rootBytes)
      : certificateToPem(topOf(loaded.issuer));
    return { issuer: loaded.issuer, rootPem, rootSha256: caFingerprint(rootPem) };
  }

  /** Signs behind the admission gate, with the CA this call checked up front. */
  async #issue(
    csrPem: string,
    cluster: string,
    signing: SigningMaterial,
    signal?: AbortSignal,
  ): Promise<{ cert: X509Certificate; response: CertificateResponse }> {
    const { issuer, rootPem } = signing;
    // The lifetime counts from admission, not from arrival: a queued call may have waited.
    const cert = await this.#gate.run(() =>
      signCsr(csrPem, {
        issuer,
        profile: "client",
        expectDnsNames: [cluster],
        now: this.#o.clock.now(),
        validityMs: this.#o.clientCertTtlMs,
      }), signal);
    const chain = [issuer.certificate, ...(issuer.chain ?? [])].filter((c) => c.subject !== c.issuer);
    return {
      cert,
      response: {
        certificatePem: certificateToPem(cert),
        chainPem: certificatesToPem(chain),
        caPem: rootPem,
        notAfterUnixMs: cert.notAfter.getTime(),
        sessionBinding: "",
      },
    };
  }

  #fail(peer: string, now: Date, rpc: string, e: unknown, signal?: AbortSignal): never {
    if (signal?.aborted) {
      // The client went away (or its deadline passed) while it waited: nobody reads the answer, and
      // leaving is not a failed attempt.
      this.#failures?.inc({ rpc, reason: "cancelled" });
      this.#log.debug(`${rpc} cancelled by the client`, { peer });
      throw new UnavailableError(`${rpc} cancelled by the client`, { cause: e });
    }
    const reason = e instanceof MeshrelayError ? e.code : "internal";
    this.#failures?.inc({ rpc, reason });
    // Busy (the signing gate, the limiter itself) and server-side problems are not the caller's guesses.
    if (reason !== "resource_exhausted" && reason !== "failed_precondition" && reason !== "internal") {
      this.#o.limiter.fail(peer, now);
    }
    // Busy answers are load, not faults: a storm would write one warning per agent and retry. The
    // admission metrics count them.
    const level = this.#gate.refused(e) ? "debug" : "warn";
    this.#log[level](`${rpc} refused`, {
      peer,
      reason,
      error: e instanceof MeshrelayError ? e.message : "internal",
    });
    throw e;
  }

  /** Bootstrap: token + cluster + CSR → certificate (see the module comment for the order). */
  async bootstrap(
    req: BootstrapRequest,
    call: Pick<IdentifiableCall, "getPeer">,
    signal?: AbortSignal,
  ): Promise<CertificateResponse> {
    const now = this.#o.clock.now();
    const peer = peerAddress(call.getPeer());
    try {
      this.#o.limiter.check(peer, now);
      const cluster = req.cluster ?? "";
      validateClusterName(cluster);
      checkCsrSize(req.csrPem);
      if (!req.token) throw new AuthenticationError("Bootstrap needs a bootstrap token");
      const signing = await this.#issuer(now);
      if (!this.#o.isRegistered(cluster)) {
        throw new PermissionDeniedError(
          `cluster "${cluster}" is not registered (declare a KubernetesCluster named "${cluster}" first)`,
        );
      }
      const grant = await this.#o.tokens.check(req.token, cluster, { now, consume: false });
      const { cert, response } = await this.#issue(req.csrPem, cluster, signing, signal);
      if (grant.kind === "cluster") await this.#o.tokens.check(req.token, cluster, { now, consume: true });
      await this.#o.revocations?.allowReissued(cluster, cert.serialNumber, cert.notBefore);
      // The agent has these anchors already: a smaller answer is less memory on its connection for good.
      if (req.knownCaSha256 && req.knownCaSha256 === signing.rootSha256) response.caPem = "";
      if (this.#o.sessionBindings) {
        response.sessionBinding = this.#o.sessionBindings.issue({
          cluster,
          serial: cert.serialNumber.toLowerCase(),
          notBefore: cert.notBefore,
          notAfter: cert.notAfter,
        }, call.getPeer());
      }
      this.#issued?.inc({ rpc: "bootstrap" });
      this.#log.info("issued client certificate", {
        rpc: "bootstrap",
        cluster,
        serial: cert.serialNumber.toLowerCase(),
        notAfter: cert.notAfter.toISOString(),
        token: grant.kind,
        ...(grant.tokenId ? { tokenId: grant.tokenId } : {}),
      });
      return response;
    } catch (e) {
      this.#fail(peer, now, "bootstrap", e, signal);
    }
  }

  /**
   * SignMeshCa (Istio federated trust): the caller's verified certificate names the cluster; the CSR is for
   * its Istio intermediate CA, signed with the root of the RootTrustPolicy that serves it (mesh_ca.ts).
   */
  async signMeshCa(
    req: MeshCaRequest,
    call: IdentifiableCall,
    signal?: AbortSignal,
  ): Promise<CertificateResponse> {
    const now = this.#o.clock.now();
    const peer = peerAddress(call.getPeer());
    try {
      this.#o.limiter.check(peer, now);
      if (!this.#o.identifyCertificate) {
        throw new PreconditionError(
          "SignMeshCa needs mTLS; this relay server runs without client certificates",
        );
      }
      checkCsrSize(req.csrPem);
      const id = await this.#o.identifyCertificate(call);
      const meshCa = this.#o.meshCa;
      if (!meshCa) {
        throw new PreconditionError("this relay server does not sign Istio intermediate CAs");
      }
      const issued = await this.#gate.run(() => meshCa.sign(id.cluster, req.csrPem!, now), signal);
      this.#meshCaIssued?.inc({ policy: issued.policy });
      this.#log.info("issued Istio intermediate CA", {
        rpc: "sign_mesh_ca",
        cluster: id.cluster,
        policy: issued.policy,
        serial: issued.certificate.serialNumber.toLowerCase(),
        notAfter: issued.certificate.notAfter.toISOString(),
      });
      return issued.response;
    } catch (e) {
      this.#fail(peer, now, "sign_mesh_ca", e, signal);
    }
  }

  /** Renew: the caller's verified certificate names the cluster; the new CSR must name the same. */
  async renew(req: RenewRequest, call: IdentifiableCall, signal?: AbortSignal): Promise<CertificateResponse> {
    const now = this.#o.clock.now();
    const peer = peerAddress(call.getPeer());
    try {
      this.#o.limiter.check(peer, now);
      if (!this.#o.identifyCertificate) {
        throw new PreconditionError("Renew needs mTLS; this relay server runs without client certificates");
      }
      checkCsrSize(req.csrPem);
      const id = await this.#o.identifyCertificate(call);
      const signing = await this.#issuer(now);
      const { cert, response } = await this.#issue(req.csrPem, id.cluster, signing, signal);
      await this.#o.revocations?.allowReissued(id.cluster, cert.serialNumber, cert.notBefore);
      this.#issued?.inc({ rpc: "renew" });
      this.#log.info("issued client certificate", {
        rpc: "renew",
        cluster: id.cluster,
        serial: cert.serialNumber.toLowerCase(),
        previousSerial: id.serial,
        notAfter: cert.notAfter.toISOString(),
      });
      return response;
    } catch (e) {
      this.#fail(peer, now, "renew", e, signal);
    }
  }
}

function checkCsrSize(csrPem: string | undefined): asserts csrPem is string {
  if (!csrPem) throw new InvalidInputError("a certificate signing request (csr_pem) is required");
  if (csrPem.length > MAX_CSR_CHARS) {
    throw new InvalidInputError("the certificate signing request is too large");
  }
}

function topOf(issuer: Issuer): X509Certificate {
  const all = [issuer.certificate, ...(issuer.chain ?? [])];
  return all[all.length - 1];
}

/** A grpc-js status for `e`: our errors carry their message, anything else is a bare INTERNAL. */
export function toServiceError(e: unknown): Partial<grpc.ServiceError> {
  if (e instanceof MeshrelayError) return { code: grpcStatusOf(e), details: e.message, message: e.message };
  return { code: GrpcStatus.INTERNAL, details: "internal error", message: "internal error" };
}

/** The grpc-js implementation of `Identity` over {@linkcode IdentityHandlers}. */
export function identityServiceImpl(h: IdentityHandlers, log: Logger): IdentityServer {
  /** Aborts when the client cancels the call or its deadline passes, so a queued call leaves the queue. */
  const cancelled = (call: grpc.ServerUnaryCall<unknown, unknown>): AbortSignal => {
    const ac = new AbortController();
    if (call.cancelled) ac.abort(new UnavailableError("call cancelled"));
    else call.once("cancelled", () => ac.abort(new UnavailableError("call cancelled")));
    return ac.signal;
  };
  const done = <T>(p: Promise<T>, cb: grpc.sendUnaryData<T>) => {
    p.then((r) => cb(null, r), (e) => {
      if (!(e instanceof MeshrelayError)) {
        log.error("identity call failed unexpectedly", { error: e instanceof Error ? e.message : String(e) });
      }
      cb(toServiceError(e));
    });
  };
  return {
    bootstrap: (call, cb) => done(h.bootstrap(call.request, call, cancelled(call)), cb),
    renew: (call, cb) => done(h.renew(call.request, call, cancelled(call)), cb),
    signMeshCa: (call, cb) => done(h.signMeshCa(call.request, call, cancelled(call)), cb),
  };
}
