/**
 * Istio federated trust, agent side: keeps Istio's plug-in CA secret `cacerts` (`ca-cert.pem`,
 * `ca-key.pem`, `root-cert.pem`, `cert-chain.pem` = intermediate + chain + root) valid in the agent's
 * cluster, with an intermediate CA signed by the management server's RootTrustPolicy root.
 *
 * - The intermediate's key is made here and never leaves the cluster: only a CSR travels, over mTLS with
 *   the agent's client certificate (the server takes the cluster from that certificate).
 * - A missing, unusable or expired `cacerts` is replaced at once; a valid one is renewed in the same
 *   window as the client certificate (rotation.ts: 70–90% of its lifetime by default), drawn once per
 *   certificate. Writes are compare-and-swap on the secret, so a crash leaves the old or the new set, whole.
 * - After writing a new `cacerts`, `restart` (optional) bounces Istio's pods so istiod loads it (Istio reads
 *   the plug-in CA at start); workloads pick up certificates from the new intermediate as they renew.
 * - No policy serves the cluster yet, or the server is unreachable: the status says so (one log line per
 *   change) and the manager retries with backoff, never waiting longer than `pollMs`.
 * @module
 */
import type { Clock } from "../clock.ts";
import { WakeableSleep } from "./wakeable_sleep.ts";
import { InvalidInputError, MeshrelayError, PreconditionError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  BACKDATE_MS,
  createCsr,
  generateKeyPair,
  importPrivateKey,
  ISTIO_KEY_ALGORITHMS,
  type KeyAlgorithm,
  keyMatchesCertificate,
  parseCertificates,
  privateKeyToPem,
} from "../pki/mod.ts";
import type { CertificateResponse } from "../proto/mod.ts";
import type { SecretStore } from "../store/mod.ts";
import { Backoff, type BackoffOptions } from "./backoff.ts";
import type { ClientKeyPair } from "./client_credentials.ts";
import { ISTIOD_SAN } from "./mesh_ca.ts";
import type { MetricsRegistry } from "./metrics.ts";
import { isExpired, renewAt, type RotationOptions, validateRotationOptions } from "./rotation.ts";

/** Istio's plug-in CA secret, in `istio-system`. */
export const ISTIO_CACERTS_SECRET = "cacerts";

/** How the manager reaches the server's `Identity.SignMeshCa`. */
export interface MeshCaTransport {
  /** Over mTLS with `current`. */
  signMeshCa(
    req: { csrPem: string },
    current: ClientKeyPair,
    signal?: AbortSignal,
  ): Promise<CertificateResponse>;
}

/** Where the manager is. */
export type MeshCaState = "starting" | "ready" | "issuing" | "waiting" | "error";

/** Status for logs, metrics and tests. */
export interface MeshCaStatus {
  state: MeshCaState;
  message?: string;
  serial?: string;
  notAfter?: Date;
}

/** Options of {@linkcode MeshCaAgent}. */
export interface MeshCaAgentOptions {
  cluster: string;
  /** Where `cacerts` lives (istio-system of the agent's cluster, or a folder). */
  store: SecretStore;
  /** Default `cacerts`. */
  secretName?: string;
  transport: MeshCaTransport;
  /** The agent's current client credentials (undefined until it has some). */
  credentials: () => ClientKeyPair | undefined;
  /** Restarts Istio's pods after a new `cacerts` was written; returns what it restarted. */
  restart?: () => Promise<string[]>;
  clock: Clock;
  random: () => number;
  log: Logger;
  metrics?: MetricsRegistry;
  rotation?: RotationOptions;
  /** Key of the intermediate. Default ecdsa-p256 (Istio's plug-in CA takes RSA and P-256/P-384). */
  keyAlgorithm?: KeyAlgorithm;
  /** Waits between failed attempts. Default 1 s doubling to 5 min, full jitter. */
  retry?: BackoffOptions;
  /** Longest single wait; the secret is re-read at least this often. Default 60,000 ms. */
  pollMs?: number;
}

/** The `cacerts` in the store, checked. */
interface Current {
  serial: string;
  notBefore: Date;
  notAfter: Date;
  version: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Keeps `cacerts` issued and fresh (see the module comment). */
export class MeshCaAgent {
  readonly secretName: string;
  #o: MeshCaAgentOptions;
  #log: Logger;
  #status: MeshCaStatus = { state: "starting" };
  #renewAt?: { serial: string; at: Date };
  #backoff: Backoff;
  #sleep = new WakeableSleep();
  #m?: {
    expiry: ReturnType<MetricsRegistry["gauge"]>;
    issued: ReturnType<MetricsRegistry["counter"]>;
  };

  constructor(opts: MeshCaAgentOptions) {
    if (opts.rotation) validateRotationOptions(opts.rotation);
    const alg = opts.keyAlgorithm ?? "ecdsa-p256";
    if (!ISTIO_KEY_ALGORITHMS.includes(alg)) {
      throw new InvalidInputError(`Istio's plug-in CA cannot use ${alg} keys (use ECDSA P-256/P-384 or RSA)`);
    }
    this.#o = opts;
    this.secretName = opts.secretName ?? ISTIO_CACERTS_SECRET;
    this.#log = opts.log.child({ component: "mesh-ca-agent", secret: this.secretName });
    this.#backoff = new Backoff(opts.random, { initialMs: 1000, maxMs: 300_000, ...opts.retry });
    if (opts.metrics) {
      this.#m = {
        expiry: opts.metrics.gauge(
          "meshrelay_istio_ca_expiry_seconds",
          "Seconds until the Istio intermediate CA in cacerts expires (negative: expired).",
        ),
        issued: opts.metrics.counter(
          "meshrelay_istio_ca_issuances_total",
          "Istio intermediate CAs requested from the server, by result.",
        ),
      };
    }
  }

  /** Where the manager is. */
  status(): MeshCaStatus {
    return { ...this.#status };
  }

  /** Wakes the loop now (new client credentials, tests). */
  poke(): void {
    this.#sleep.wake();
  }

  #setStatus(s: MeshCaStatus): void {
    const changed = s.state !== this.#status.state || s.message !== this.#status.message;
    this.#status = s;
    if (!changed) return;
    if (s.state === "waiting" || s.state === "error") {
      this.#log.warn(s.message ?? s.state, { state: s.state });
    }
  }

  /** The `cacerts` in the store when it is complete, consistent and valid at `now`; else undefined. */
  async read(now: Date): Promise<Current | undefined> {
    const s = await this.#o.store.get(this.secretName);
    if (!s) return undefined;
    try {
      const text = (k: string) => {
        const v = s.data[k];
        if (!v?.length) throw new InvalidInputError(`${this.secretName} has no ${k}`);
        return dec.decode(v);
      };
      const [cert] = parseCertificates(text("ca-cert.pem"), `${this.secretName} ca-cert.pem`);
      parseCertificates(text("root-cert.pem"), `${this.secretName} root-cert.pem`);
      parseCertificates(text("cert-chain.pem"), `${this.secretName} cert-chain.pem`);
      const key = await importPrivateKey(text("ca-key.pem"), { what: `${this.secretName} ca-key.pem` });
      if (!(await keyMatchesCertificate(key, cert))) {
        throw new InvalidInputError(`${this.secretName}: ca-key.pem does not belong to ca-cert.pem`);
      }
      const cur = {
        serial: cert.serialNumber.toLowerCase(),
        notBefore: cert.notBefore,
        notAfter: cert.notAfter,
        version: s.version,
      };
      return isExpired(now, cur) ? undefined : cur;
    } catch (e) {
      this.#log.warn("cacerts is not usable; issuing a new one", {
        error: e instanceof Error ? e.message : String(e),
      });
      return undefined;
    }
  }

  /** The renewal moment of `cur`, drawn once per certificate (window counted from notBefore + backdate). */
  renewalTime(cur: Current): Date {
    if (this.#renewAt?.serial !== cur.serial) {
      const start = Math.min(cur.notBefore.getTime() + BACKDATE_MS, cur.notAfter.getTime() - 1);
      this.#renewAt = {
        serial: cur.serial,
        at: renewAt(
          { notBefore: new Date(start), notAfter: cur.notAfter },
          this.#o.rotation,
          this.#o.random(),
        ),
      };
    }
    return this.#renewAt.at;
  }

  /** Requests a new intermediate and stores the new `cacerts` (compare-and-swap on what was read). */
  async issue(expectedVersion: string | null, signal?: AbortSignal): Promise<Current> {
    const creds = this.#o.credentials();
    if (!creds) throw new PreconditionError("no client certificate yet to reach the server over mTLS");
    this.#setStatus({ ...this.#status, state: "issuing" });
    try {
      const key = await generateKeyPair(this.#o.keyAlgorithm ?? "ecdsa-p256");
      const csrPem = await createCsr(key, { dnsNames: [ISTIOD_SAN], subject: "O=Istio,CN=Intermediate CA" });
      const resp = await this.#o.transport.signMeshCa({ csrPem }, creds, signal);
      const [cert] = parseCertificates(resp.certificatePem, "issued Istio intermediate");
      if (!(await keyMatchesCertificate(key, cert))) {
        throw new InvalidInputError("the server returned an Istio intermediate for another key");
      }
      const root = resp.caPem.trim() + "\n";
      const chain = (resp.chainPem ?? "").trim();
      const certChain = [resp.certificatePem.trim(), ...(chain ? [chain] : []), root.trim()].join("\n") +
        "\n";
      const put = await this.#o.store.put(this.secretName, {
        "ca-cert.pem": enc.encode(resp.certificatePem.trim() + "\n"),
        "ca-key.pem": enc.encode(await privateKeyToPem(key)),
        "root-cert.pem": enc.encode(root),
        "cert-chain.pem": enc.encode(certChain),
      }, { expectedVersion });
      this.#m?.issued.inc({ result: "ok" });
      const cur = {
        serial: cert.serialNumber.toLowerCase(),
        notBefore: cert.notBefore,
        notAfter: cert.notAfter,
        version: put.version,
      };
      this.#log.info("Istio intermediate CA issued; cacerts written", {
        serial: cur.serial,
        notAfter: cur.notAfter.toISOString(),
      });
      return cur;
    } catch (e) {
      this.#m?.issued.inc({ result: "error" });
      throw e;
    }
  }

  async #restart(): Promise<void> {
    if (!this.#o.restart) return;
    try {
      const restarted = await this.#o.restart();
      this.#log.info("restarted Istio's workloads so they load the new cacerts", { restarted });
    } catch (e) {
      // The new cacerts is in place either way; istiod loads it at its next start.
      this.#log.error(
        "restarting Istio's workloads failed; restart istiod yourself to load the new cacerts",
        {
          error: e instanceof Error ? e.message : String(e),
        },
      );
    }
  }

  /** One decision; returns how long to wait before the next. */
  async #step(signal: AbortSignal): Promise<number> {
    const now = this.#o.clock.now();
    const cur = await this.read(now);
    if (cur && now.getTime() < this.renewalTime(cur).getTime()) {
      this.#m?.expiry.set(Math.round((cur.notAfter.getTime() - now.getTime()) / 1000));
      this.#setStatus({ state: "ready", serial: cur.serial, notAfter: cur.notAfter });
      return this.renewalTime(cur).getTime() - now.getTime();
    }
    if (!this.#o.credentials()) {
      // Normal at startup (bootstrap comes first): a status, not a warning; new credentials poke us.
      this.#status = {
        state: "waiting",
        message: "waiting for the client certificate before requesting cacerts",
      };
      return this.#o.pollMs ?? 60_000;
    }
    const existing = await this.#o.store.get(this.secretName);
    const issued = await this.issue(existing?.version ?? null, signal);
    this.#backoff.reset();
    this.#m?.expiry.set(Math.round((issued.notAfter.getTime() - now.getTime()) / 1000));
    this.#setStatus({ state: "ready", serial: issued.serial, notAfter: issued.notAfter });
    await this.#restart();
    // Wait for the new certificate's renewal moment straight away: a zero wait would park the loop on
    // a sleep that ends "now", and a clock that moves during the next step's reads would then have the
    // loop wait from a stale `now` (seen with the fake clock under load).
    return Math.max(0, this.renewalTime(issued).getTime() - this.#o.clock.now().getTime());
  }

  /** Keeps `cacerts` valid until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const pollMs = this.#o.pollMs ?? 60_000;
    while (!signal.aborted) {
      let waitMs: number;
      try {
        waitMs = await this.#step(signal);
      } catch (e) {
        if (signal.aborted) return;
        waitMs = this.#backoff.next();
        const why = e instanceof MeshrelayError ? e.message : "unexpected error";
        this.#setStatus({
          state: e instanceof PreconditionError ? "waiting" : "error",
          message: `Istio intermediate CA: ${why}`,
        });
        if (!(e instanceof MeshrelayError)) {
          this.#log.error("cacerts step failed unexpectedly", {
            error: e instanceof Error ? e.message : String(e),
          });
        }
      }
      if (signal.aborted) return;
      await this.#sleep.sleep(this.#o.clock, Math.max(0, Math.min(waitMs, pollMs)), signal);
    }
  }
}
