/**
 * The agent's client certificate: obtained with a bootstrap token, kept in the agent's own secret
 * (`relay-client-tls-secret`: `tls.key`, `tls.crt` leaf + chain, `ca.crt`), renewed over mTLS before it
 * expires, and recovered when it expired while the agent was offline.
 *
 * - The private key is made here and never leaves: Bootstrap and Renew send a CSR.
 * - Crash safety: the old certificate and key stay in the secret until the new pair replaces both in one
 *   atomic put (compare-and-swap on the secret's version); a crash at any point leaves a usable pair.
 * - Renewal time comes from `rotation.ts` (70–90% of the lifetime by default), drawn once per
 *   certificate. The loop waits only through `clock.sleep`, and never longer than `pollMs`, so it also
 *   notices a secret replaced from outside (cert-manager issuing bring-your-own client certificates)
 *   and never relies on a months-long timer (setTimeout wraps above 2^31 ms).
 * - Expired or missing certificate: Bootstrap again if a token is available; otherwise the status says
 *   so, one error line is logged, and the agent retries later (the token may be provided meanwhile).
 * - A server without a signing CA (bring-your-own client certificates) answers Renew with
 *   FAILED_PRECONDITION: from then on the agent only watches its secret for a new certificate.
 * - A busy server (RESOURCE_EXHAUSTED: its signing queue is full) or an unreachable one (UNAVAILABLE) is
 *   transient: the same step is retried after an exponential backoff with full jitter, so a fleet that
 *   bootstrapped at once spreads out; the token is not consumed by a refused call and is kept.
 * @module
 */
import type { Clock } from "../clock.ts";
import { WakeableSleep } from "./wakeable_sleep.ts";
import {
  AuthenticationError,
  InvalidInputError,
  MeshrelayError,
  PermissionDeniedError,
  PreconditionError,
  ResourceExhaustedError,
  UnavailableError,
} from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  BACKDATE_MS,
  createCsr,
  dnsNamesOf,
  generateKeyPair,
  importPrivateKey,
  type KeyAlgorithm,
  keyMatchesCertificate,
  parseCertificates,
  privateKeyToPem,
  type X509Certificate,
} from "../pki/mod.ts";
import type { BootstrapRequest, CertificateResponse, RenewRequest } from "../proto/mod.ts";
import type { SecretStore } from "../store/mod.ts";
import { Backoff, type BackoffOptions } from "./backoff.ts";
import type { ClientKeyPair } from "./client_credentials.ts";
import type { MetricsRegistry } from "./metrics.ts";
import { isExpired, renewAt, type RotationOptions, validateRotationOptions } from "./rotation.ts";

/** Default name of the agent's client certificate secret (the seeds also spell it `relay-tls-client-secret`). */
export const CLIENT_TLS_SECRET = "relay-client-tls-secret";

/** The agent's current client credentials. */
export interface ClientCredentials extends ClientKeyPair {
  /** Trust anchors the server returned (or that came with the secret). */
  caPem: string;
  certificate: X509Certificate;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** Store version of the secret it came from. */
  version: string;
}

/** How the manager reaches the server's Identity service. */
export interface IdentityTransport {
  /** Over server-authenticated TLS, without a client certificate. */
  bootstrap(req: BootstrapRequest, signal?: AbortSignal): Promise<CertificateResponse>;
  /** Over mTLS with `current`. */
  renew(req: RenewRequest, current: ClientKeyPair, signal?: AbortSignal): Promise<CertificateResponse>;
}

/** Where the manager is. */
export type IdentityState =
  | "starting"
  | "ready"
  | "bootstrapping"
  | "renewing"
  | "waiting_for_credentials"
  | "error";

/** Status for logs, health and `meshrelay agent` output. */
export interface IdentityStatus {
  state: IdentityState;
  message?: string;
  serial?: string;
  notAfter?: Date;
  /** True when the server does not renew (bring-your-own client certificates): the secret is watched instead. */
  external?: boolean;
}

/** Options of {@linkcode AgentIdentity}. */
export interface AgentIdentityOptions {
  cluster: string;
  store: SecretStore;
  /** Default `relay-client-tls-secret`. */
  secretName?: string;
  transport: IdentityTransport;
  /** The bootstrap token, read when needed (it may appear later); undefined when there is none. */
  token: () => Promise<string | undefined>;
  clock: Clock;
  random: () => number;
  log: Logger;
  metrics?: MetricsRegistry;
  rotation?: RotationOptions;
  keyAlgorithm?: KeyAlgorithm;
  /** Waits between failed attempts. Default 1 s doubling to 5 min, full jitter. */
  retry?: BackoffOptions;
  /** Longest single wait; the secret is re-read at least this often. Default 60,000 ms. */
  pollMs?: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Whether retrying the same call later may succeed: the server was busy or could not be reached. */
export function isTransientIdentityError(e: unknown): boolean {
  return e instanceof ResourceExhaustedError || e instanceof UnavailableError;
}

/** Manages the agent's client certificate (see the module comment). */
export class AgentIdentity {
  readonly cluster: string;
  readonly secretName: string;
  #o: AgentIdentityOptions;
  #log: Logger;
  #current?: ClientCredentials;
  #lastVersion?: string;
  #renewAt?: { serial: string; at: Date };
  #receivedAt = new Map<string, Date>();
  #lastRenewal?: number;
  #external = false;
  #refused?: string;
  #status: IdentityStatus = { state: "starting" };
  #listeners = new Set<(c: ClientCredentials) => void>();
  #backoff: Backoff;
  #sleep = new WakeableSleep();
  #m?: {
    expiry: ReturnType<MetricsRegistry["gauge"]>;
    renewals: ReturnType<MetricsRegistry["counter"]>;
  };

  constructor(opts: AgentIdentityOptions) {
    if (opts.rotation) validateRotationOptions(opts.rotation);
    this.#o = opts;
    this.cluster = opts.cluster;
    this.secretName = opts.secretName ?? CLIENT_TLS_SECRET;
    this.#log = opts.log.child({ component: "agent-identity", cluster: opts.cluster });
    this.#backoff = new Backoff(opts.random, { initialMs: 1000, maxMs: 300_000, ...opts.retry });
    if (opts.metrics) {
      this.#m = {
        expiry: opts.metrics.gauge(
          "meshrelay_client_cert_expiry_seconds",
          "Seconds until the agent's client certificate expires (negative: expired).",
        ),
        renewals: opts.metrics.counter(
          "meshrelay_client_cert_renewals_total",
          "Client certificate bootstraps and renewals by the agent, by kind and result.",
        ),
      };
    }
  }

  /** The current valid credentials, if any. */
  current(): ClientCredentials | undefined {
    return this.#current;
  }

  /** Where the manager is. */
  status(): IdentityStatus {
    return { ...this.#status };
  }

  /** Called whenever the credentials change (bootstrap, renewal, replaced from outside). */
  onChange(fn: (c: ClientCredentials) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Wakes the loop now (e.g. to re-check the secret). */
  poke(): void {
    this.#sleep.wake();
  }

  /**
   * The server refused our certificate on a session (revoked, CA changed): the loop tries one Bootstrap
   * with the token, if there is one. One-shot, so a refusal for another reason (cluster not registered
   * yet) does not keep burning tokens while the current certificate may still work later.
   */
  markRefused(reason: string): void {
    if (!this.#current) return;
    this.#refused = reason;
    this.#sleep.wake();
  }

  #setStatus(s: IdentityStatus): void {
    const changed = s.state !== this.#status.state || s.message !== this.#status.message;
    this.#status = { ...s, external: this.#external || undefined };
    if (!changed) return;
    if (s.state === "waiting_for_credentials" || s.state === "error") {
      this.#log.error(s.message ?? s.state, { state: s.state });
    }
  }

  /** Reads and validates the secret; updates `current` and notifies on change. */
  async reload(): Promise<ClientCredentials | undefined> {
    const s = await this.#o.store.get(this.secretName);
    if (s?.version === this.#lastVersion && s !== undefined) return this.#current;
    this.#lastVersion = s?.version;
    let next: ClientCredentials | undefined;
    if (s) {
      try {
        next = await this.#validate(s.data, s.version);
      } catch (e) {
        this.#log.error("client certificate secret is not usable; ignoring it", {
          secret: this.secretName,
          error: e instanceof Error ? e.message : String(e),
        });
      }
    }
    const prev = this.#current;
    this.#current = next;
    if (next && next.serial !== prev?.serial) {
      this.#publish(next);
      if (prev) this.#log.info("client certificate replaced in the secret", { serial: next.serial });
    }
    return next;
  }

  async #validate(data: Readonly<Record<string, Uint8Array>>, version: string): Promise<ClientCredentials> {
    const crt = data["tls.crt"] && dec.decode(data["tls.crt"]);
    const key = data["tls.key"] && dec.decode(data["tls.key"]);
    if (!crt || !key) throw new InvalidInputError(`${this.secretName} needs tls.crt and tls.key`);
    const [certificate] = parseCertificates(crt, `${this.secretName} tls.crt`);
    const kp = await importPrivateKey(key, { what: `${this.secretName} tls.key` });
    if (!(await keyMatchesCertificate(kp, certificate))) {
      throw new InvalidInputError(`${this.secretName}: tls.key does not belong to tls.crt`);
    }
    const names = dnsNamesOf(certificate);
    if (names.length !== 1 || names[0] !== this.cluster) {
      throw new InvalidInputError(
        `${this.secretName}: the certificate is for ${
          JSON.stringify(names)
        }, not for cluster "${this.cluster}"`,
      );
    }
    return {
      certChainPem: crt,
      keyPem: await privateKeyToPem(kp),
      caPem: data["ca.crt"] ? dec.decode(data["ca.crt"]) : "",
      certificate,
      serial: certificate.serialNumber.toLowerCase(),
      notBefore: certificate.notBefore,
      notAfter: certificate.notAfter,
      version,
    };
  }

  #publish(c: ClientCredentials): void {
    this.#m?.expiry.set(Math.round((c.notAfter.getTime() - this.#o.clock.now().getTime()) / 1000), {
      cluster: this.cluster,
    });
    for (const fn of this.#listeners) {
      try {
        fn(c);
      } catch (e) {
        this.#log.error("credentials listener failed", { error: e instanceof Error ? e.message : String(e) });
      }
    }
  }

  /** Stores a new pair in one atomic put, replacing the old pair only if nobody changed it meanwhile. */
  async #store(keyPem: string, resp: CertificateResponse): Promise<ClientCredentials> {
    const data = {
      "tls.key": enc.encode(keyPem),
      "tls.crt": enc.encode(resp.certificatePem + (resp.chainPem ?? "")),
      "ca.crt": enc.encode(resp.caPem ?? ""),
    };
    const expected = this.#current ? this.#current.version : (this.#lastVersion ?? null);
    const put = await this.#o.store.put(this.secretName, data, { expectedVersion: expected });
    const creds = await this.#validate(put.data, put.version);
    this.#receivedAt.clear();
    this.#receivedAt.set(creds.serial, this.#o.clock.now());
    this.#lastVersion = put.version;
    this.#current = creds;
    this.#publish(creds);
    return creds;
  }

  async #newKeyAndCsr(): Promise<{ keyPem: string; csrPem: string }> {
    const kp = await generateKeyPair(this.#o.keyAlgorithm ?? "ecdsa-p256");
    return { keyPem: await privateKeyToPem(kp), csrPem: await createCsr(kp, { dnsNames: [this.cluster] }) };
  }

  /** Bootstrap with the token; throws PreconditionError when there is no token. */
  async bootstrap(signal?: AbortSignal): Promise<ClientCredentials> {
    const token = await this.#o.token();
    if (!token) {
      throw new PreconditionError(
        `no valid client certificate in ${this.secretName} and no bootstrap token to get one ` +
          "(provide --token / MESHRELAY_TOKEN / relay-identity-token-secret, or a client certificate)",
      );
    }
    this.#setStatus({ state: "bootstrapping" });
    try {
      const { keyPem, csrPem } = await this.#newKeyAndCsr();
      const resp = await this.#o.transport.bootstrap({ token, cluster: this.cluster, csrPem }, signal);
      const creds = await this.#store(keyPem, resp);
      this.#m?.renewals.inc({ kind: "bootstrap", result: "ok" });
      this.#log.info("bootstrapped: client certificate issued", {
        serial: creds.serial,
        notAfter: creds.notAfter.toISOString(),
      });
      return creds;
    } catch (e) {
      this.#m?.renewals.inc({ kind: "bootstrap", result: "error" });
      throw e;
    }
  }

  /** Renew over mTLS with the current certificate. */
  async renew(signal?: AbortSignal): Promise<ClientCredentials> {
    const cur = this.#current;
    if (!cur) throw new PreconditionError("no client certificate to renew");
    this.#setStatus({ state: "renewing", serial: cur.serial, notAfter: cur.notAfter });
    try {
      const { keyPem, csrPem } = await this.#newKeyAndCsr();
      // Renewals are rare (once per lifetime × (1 - grace)), and this is where a crash loses a new key.
      this.#log.info("sending a renewal request", {
        serial: cur.serial,
        notAfter: cur.notAfter.toISOString(),
      });
      const resp = await this.#o.transport.renew({ csrPem }, cur, signal);
      const creds = await this.#store(keyPem, resp);
      this.#m?.renewals.inc({ kind: "renew", result: "ok" });
      this.#log.info("client certificate renewed", {
        serial: creds.serial,
        previousSerial: cur.serial,
        notAfter: creds.notAfter.toISOString(),
      });
      return creds;
    } catch (e) {
      this.#m?.renewals.inc({ kind: "renew", result: "error" });
      throw e;
    }
  }

  /**
   * Resolves with valid credentials: those in the secret, or new ones from Bootstrap. Throws
   * PreconditionError when there are none and no token.
   */
  async ensure(signal?: AbortSignal): Promise<ClientCredentials> {
    const cur = await this.reload();
    if (cur && !isExpired(this.#o.clock.now(), cur)) {
      this.#setStatus({ state: "ready", serial: cur.serial, notAfter: cur.notAfter });
      return cur;
    }
    const creds = await this.bootstrap(signal);
    this.#setStatus({ state: "ready", serial: creds.serial, notAfter: creds.notAfter });
    return creds;
  }

  /**
   * The lifetime the rotation window is computed on. Our CA backdates notBefore by BACKDATE_MS (clock
   * skew), which for a short-lived certificate would put the whole window in the past and make the agent
   * renew in a loop; so the window starts when we received the certificate (known for those this process
   * stored), else at notBefore + BACKDATE_MS (exact for certificates of our CA; a few minutes late for
   * others, which nobody renews through us anyway).
   */
  effectiveValidity(cur: ClientCredentials): { notBefore: Date; notAfter: Date } {
    const received = this.#receivedAt.get(cur.serial);
    const start = received?.getTime() ??
      Math.min(cur.notBefore.getTime() + BACKDATE_MS, cur.notAfter.getTime() - 1);
    return { notBefore: new Date(Math.max(start, cur.notBefore.getTime())), notAfter: cur.notAfter };
  }

  /** The renewal moment of `cur`, drawn once per certificate. */
  renewalTime(cur: ClientCredentials): Date {
    if (this.#renewAt?.serial !== cur.serial) {
      this.#renewAt = {
        serial: cur.serial,
        at: renewAt(this.effectiveValidity(cur), this.#o.rotation, this.#o.random()),
      };
    }
    return this.#renewAt.at;
  }

  /** Keeps the certificate valid until `signal` aborts (see the module comment). */
  async run(signal: AbortSignal): Promise<void> {
    const pollMs = this.#o.pollMs ?? 60_000;
    while (!signal.aborted) {
      let waitMs = pollMs;
      try {
        waitMs = await this.#step(signal);
      } catch (e) {
        if (signal.aborted) return;
        waitMs = this.#backoff.next();
        this.#setStatus({
          state: "error",
          message: `client certificate: ${e instanceof Error ? e.message : String(e)}`,
          serial: this.#current?.serial,
          notAfter: this.#current?.notAfter,
        });
      }
      if (signal.aborted) return;
      await this.#sleep.sleep(this.#o.clock, Math.max(0, Math.min(waitMs, pollMs)), signal);
    }
  }

  /** One decision; returns how long to wait before the next. */
  async #step(signal: AbortSignal): Promise<number> {
    const cur = await this.reload();
    const now = this.#o.clock.now();
    if (!cur || isExpired(now, cur)) {
      if (!(await this.#o.token())) {
        this.#setStatus({
          state: "waiting_for_credentials",
          message: cur
            ? `client certificate expired at ${cur.notAfter.toISOString()} and there is no bootstrap token to get a ` +
              "new one; provide a token or a new client certificate"
            : `no client certificate in ${this.secretName} and no bootstrap token; provide one of them`,
          serial: cur?.serial,
          notAfter: cur?.notAfter,
        });
        return this.#o.pollMs ?? 60_000;
      }
      if (cur) this.#log.warn("client certificate expired; bootstrapping again", { serial: cur.serial });
      const creds = await this.bootstrap(signal);
      this.#backoff.reset();
      this.#setStatus({ state: "ready", serial: creds.serial, notAfter: creds.notAfter });
      return 0;
    }
    const refused = this.#refused;
    this.#refused = undefined;
    if (refused) {
      if (await this.#o.token()) {
        this.#log.warn("the server refused our client certificate; bootstrapping again", { reason: refused });
        let creds: ClientCredentials;
        try {
          creds = await this.bootstrap(signal);
        } catch (e) {
          // Busy or unreachable: the refusal still stands, so the retry (after backoff) bootstraps again.
          if (isTransientIdentityError(e)) this.#refused ??= refused;
          throw e;
        }
        this.#backoff.reset();
        this.#setStatus({ state: "ready", serial: creds.serial, notAfter: creds.notAfter });
        return 0;
      }
      this.#setStatus({
        state: "waiting_for_credentials",
        message: `the server refused our client certificate (${refused}) and there is no bootstrap token; ` +
          "provide a token or a new client certificate",
        serial: cur.serial,
        notAfter: cur.notAfter,
      });
      return this.#o.pollMs ?? 60_000;
    }
    const at = this.renewalTime(cur);
    if (this.#external || now.getTime() < at.getTime()) {
      this.#setStatus({ state: "ready", serial: cur.serial, notAfter: cur.notAfter });
      this.#m?.expiry.set(Math.round((cur.notAfter.getTime() - now.getTime()) / 1000), {
        cluster: this.cluster,
      });
      return this.#external ? Number.POSITIVE_INFINITY : at.getTime() - now.getTime();
    }
    // Never renew in a loop: a server whose signing CA expires soon issues certificates that are due at
    // once (a child never outlives its issuer); space renewals by 5% of the lifetime (1 s to 1 h).
    const life = cur.notAfter.getTime() - this.effectiveValidity(cur).notBefore.getTime();
    const gap = Math.min(3600_000, Math.max(1000, life * 0.05));
    if (this.#lastRenewal !== undefined && now.getTime() - this.#lastRenewal < gap) {
      return gap - (now.getTime() - this.#lastRenewal);
    }
    try {
      const creds = await this.renew(signal);
      this.#lastRenewal = this.#o.clock.now().getTime();
      this.#backoff.reset();
      this.#setStatus({ state: "ready", serial: creds.serial, notAfter: creds.notAfter });
      return 0;
    } catch (e) {
      if (e instanceof PreconditionError) {
        this.#external = true;
        this.#log.warn(
          "the relay server does not renew client certificates (bring-your-own client certificates); " +
            "watching the secret for a new one instead",
          { secret: this.secretName, reason: e.message },
        );
        this.#setStatus({ state: "ready", serial: cur.serial, notAfter: cur.notAfter });
        return 0;
      }
      if (
        (e instanceof AuthenticationError || e instanceof PermissionDeniedError) && (await this.#o.token())
      ) {
        // Our certificate is refused (revoked, CA changed): start over with the token.
        this.#log.warn("the server refused our certificate for renewal; bootstrapping again", {
          reason: e.message,
        });
        const creds = await this.bootstrap(signal);
        this.#backoff.reset();
        this.#setStatus({ state: "ready", serial: creds.serial, notAfter: creds.notAfter });
        return 0;
      }
      // Keep the current pair; retry well before it expires.
      const wait = Math.min(this.#backoff.next(), Math.max(0, cur.notAfter.getTime() - now.getTime()));
      this.#setStatus({
        state: "error",
        message: `renewing the client certificate failed (${
          e instanceof MeshrelayError ? e.message : "unexpected error"
        }); keeping the current one`,
        serial: cur.serial,
        notAfter: cur.notAfter,
      });
      return wait;
    }
  }
}
