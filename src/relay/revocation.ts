/**
 * Certificates the server refuses although they chain to its CA: explicitly revoked serials, and every
 * certificate of a deregistered cluster that was issued before it was deregistered (so re-registering
 * the name later does not bring the old certificate back to life).
 *
 * Persisted as JSON in one secret (`relay-revoked-certificates`, key `revocations.json`) through the
 * SecretStore with compare-and-swap, so concurrent writers (two server replicas, a CLI) never lose an
 * entry. Checks are in memory against the last loaded copy; `refresh` re-reads it.
 *
 * Why "issued before" uses notBefore: it is the only issuance time a certificate carries. Our own
 * certificates are backdated by a few minutes (clock skew), so a certificate the server issues right
 * after a re-registration may start before the deregistration; the identity service records such
 * serials as `reissued` and they pass.
 * @module
 */
import { ConflictError, PermissionDeniedError } from "../errors.ts";
import type { SecretStore } from "../store/mod.ts";

/** Secret holding the revocation list. */
export const REVOCATION_SECRET = "relay-revoked-certificates";
const KEY = "revocations.json";

/** One revoked serial. */
export interface RevokedSerial {
  cluster?: string;
  reason: string;
  revokedAt: string;
  /** After this, the certificate is expired anyway and the entry can go. */
  notAfter?: string;
}

/** A deregistered cluster. */
export interface RevokedCluster {
  revokedAt: string;
  /** Serials issued after the deregistration whose notBefore is earlier (backdating). */
  reissued: string[];
}

interface State {
  format: 1;
  serials: Record<string, RevokedSerial>;
  clusters: Record<string, RevokedCluster>;
}

/** What is checked of a presented certificate. */
export interface CertificateFacts {
  serial: string;
  cluster: string;
  notBefore: Date;
}

const empty = (): State => ({ format: 1, serials: {}, clusters: {} });

/** Canonical serial form: lowercase hex without leading zeros or separators. */
export function normalizeSerial(serial: string): string {
  const s = serial.toLowerCase().replace(/[^0-9a-f]/g, "").replace(/^0+/, "");
  return s || "0";
}

/** The revocation list (see the module comment). */
export class RevocationList {
  #store: SecretStore;
  #state: State = empty();

  private constructor(store: SecretStore) {
    this.#store = store;
  }

  /** Loads the list from the store (empty when absent). */
  static async load(store: SecretStore): Promise<RevocationList> {
    const r = new RevocationList(store);
    await r.refresh();
    return r;
  }

  /** Re-reads the persisted list. */
  async refresh(): Promise<void> {
    this.#state = (await this.#read()).state;
  }

  /** Why `cert` is refused, or undefined when it is not revoked. */
  reasonRefused(cert: CertificateFacts): string | undefined {
    const serial = normalizeSerial(cert.serial);
    const s = this.#state.serials[serial];
    if (s) return `certificate ${serial} was revoked (${s.reason})`;
    const c = this.#state.clusters[cert.cluster];
    if (c && cert.notBefore.getTime() < Date.parse(c.revokedAt) && !c.reissued.includes(serial)) {
      return `cluster "${cert.cluster}" was deregistered at ${c.revokedAt}; its earlier certificates are refused`;
    }
    return undefined;
  }

  /** Throws PermissionDeniedError when `cert` is revoked. */
  check(cert: CertificateFacts): void {
    const why = this.reasonRefused(cert);
    if (why) throw new PermissionDeniedError(why);
  }

  /** Whether a cluster record exists (a deregistration happened). */
  clusterRevokedAt(cluster: string): Date | undefined {
    const c = this.#state.clusters[cluster];
    return c ? new Date(c.revokedAt) : undefined;
  }

  /** Revokes one serial. */
  async revokeSerial(
    serial: string,
    opts: { now: Date; reason: string; cluster?: string; notAfter?: Date },
  ): Promise<void> {
    await this.#update((s) => {
      s.serials[normalizeSerial(serial)] = {
        reason: opts.reason,
        revokedAt: opts.now.toISOString(),
        ...(opts.cluster ? { cluster: opts.cluster } : {}),
        ...(opts.notAfter ? { notAfter: opts.notAfter.toISOString() } : {}),
      };
    });
  }

  /** Refuses every certificate of `cluster` issued before `now`. Idempotent per deregistration. */
  async revokeCluster(cluster: string, now: Date): Promise<void> {
    await this.#update((s) => {
      s.clusters[cluster] = { revokedAt: now.toISOString(), reissued: [] };
    });
  }

  /** Records a serial issued to `cluster` after its deregistration that would otherwise look older. */
  async allowReissued(cluster: string, serial: string, notBefore: Date): Promise<void> {
    const c = this.#state.clusters[cluster];
    if (!c || notBefore.getTime() >= Date.parse(c.revokedAt)) return;
    await this.#update((s) => {
      const rec = s.clusters[cluster];
      if (rec && !rec.reissued.includes(normalizeSerial(serial))) rec.reissued.push(normalizeSerial(serial));
    });
  }

  /** Drops serial entries of certificates that have expired anyway. */
  async prune(now: Date): Promise<number> {
    let n = 0;
    await this.#update((s) => {
      n = 0;
      for (const [k, v] of Object.entries(s.serials)) {
        if (v.notAfter && Date.parse(v.notAfter) < now.getTime()) {
          delete s.serials[k];
          n++;
        }
      }
    });
    return n;
  }

  /** A copy of the current list (for `meshrelay server revocations` and tests). */
  snapshot(): { serials: Record<string, RevokedSerial>; clusters: Record<string, RevokedCluster> } {
    return structuredClone({ serials: this.#state.serials, clusters: this.#state.clusters });
  }

  async #read(): Promise<{ state: State; version: string | null }> {
    const s = await this.#store.get(REVOCATION_SECRET);
    if (!s?.data[KEY]) return { state: empty(), version: s ? s.version : null };
    const parsed = JSON.parse(new TextDecoder().decode(s.data[KEY])) as Partial<State>;
    return {
      state: { format: 1, serials: parsed.serials ?? {}, clusters: parsed.clusters ?? {} },
      version: s.version,
    };
  }

  async #update(fn: (s: State) => void): Promise<void> {
    for (let attempt = 0;; attempt++) {
      const { state, version } = await this.#read();
      fn(state);
      try {
        await this.#store.put(REVOCATION_SECRET, { [KEY]: new TextEncoder().encode(JSON.stringify(state)) }, {
          expectedVersion: version,
        });
        this.#state = state;
        return;
      } catch (e) {
        if (!(e instanceof ConflictError) || attempt >= 20) throw e;
      }
    }
  }
}
