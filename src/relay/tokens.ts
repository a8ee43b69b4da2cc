/**
 * Bootstrap tokens: the shared relay identity token of the seeds (`relay-identity-token-secret`, key
 * `token`) and per-cluster bootstrap tokens that are bound to one cluster name, expire, and are
 * single-use.
 *
 * A per-cluster token reads `mrbt.<id>.<secret>`. Only the SHA-256 of the secret part is stored, in one
 * secret per token (`relay-bootstrap-token-<id>`, keys `cluster`, `sha256`, `expires-at`, `used-at`),
 * so the id finds the record without a scan, and a store dump does not reveal usable tokens. Use is a
 * compare-and-swap on that secret (`expectedVersion`), so two concurrent uses cannot both win.
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { AuthenticationError, ConflictError, InvalidInputError, PermissionDeniedError } from "../errors.ts";
import type { SecretStore } from "../store/mod.ts";
import type { SecretReader } from "./secret_cache.ts";

/** Secret holding the shared relay identity token (seeds' name). */
export const IDENTITY_TOKEN_SECRET = "relay-identity-token-secret";
/** Key of the shared token in {@link IDENTITY_TOKEN_SECRET}. */
export const IDENTITY_TOKEN_KEY = "token";
/** Name prefix of the per-cluster bootstrap token secrets. */
export const BOOTSTRAP_TOKEN_PREFIX = "relay-bootstrap-token-";

const PER_CLUSTER = /^mrbt\.([a-f0-9]{16})\.([A-Za-z0-9_-]{32,})$/;
const enc = new TextEncoder();
const dec = new TextDecoder();

function sha256(s: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(s, "utf8").digest());
}

/**
 * Compares two secrets in time that does not depend on where they differ or on their lengths: both
 * are hashed to 32 bytes first, then compared with `timingSafeEqual`.
 */
export function constantTimeEqual(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

/** Hex SHA-256 of a token, what the store keeps. */
export function tokenHash(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** Random bytes source (injectable for tests). */
export type RandomBytes = (n: number) => Uint8Array;

/** Default source: WebCrypto. */
export const cryptoRandomBytes: RandomBytes = (n) => crypto.getRandomValues(new Uint8Array(n));

function base64url(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** A fresh shared token (256 bits, base64url), as the server generates when none exists. */
export function generateSharedToken(randomBytes: RandomBytes = cryptoRandomBytes): string {
  return base64url(randomBytes(32));
}

/** What a successful token check proves. */
export interface TokenGrant {
  /** The cluster the caller may act as. */
  cluster: string;
  /** "shared": the seeds' token, which lets its holder name any cluster; "cluster": a per-cluster token. */
  kind: "shared" | "cluster";
  /** Per-cluster token id (safe to log). */
  tokenId?: string;
}

/** A per-cluster bootstrap token as listed (never the token itself). */
export interface BootstrapTokenInfo {
  id: string;
  cluster: string;
  expiresAt: Date;
  usedAt?: Date;
}

/** Options of {@linkcode TokenAuthority}. */
export interface TokenAuthorityOptions {
  store: SecretStore;
  /**
   * Where the shared token is read (a SecretCache on the server, so a Bootstrap storm does not read the
   * store per call; a change then applies within the cache's staleness bound). Default: the store.
   * Per-cluster token records are always read from and consumed on the store.
   */
  sharedTokenReader?: SecretReader;
  randomBytes?: RandomBytes;
  /**
   * @internal How secrets are compared; the server never sets it ({@linkcode constantTimeEqual}). It
   * exists so the timing test can run its statistic on a deliberately leaky comparison through the same
   * `check` path, which proves the statistic would see a leak there.
   */
  compareSecrets?: (a: string, b: string) => boolean;
}

/** Options of {@linkcode TokenAuthority.check}. */
export interface CheckOptions {
  now: Date;
  /** Mark a per-cluster token used (Bootstrap). Simple TLS sessions check without consuming. */
  consume: boolean;
}

/**
 * Checks tokens against the store. The shared token is read on every check (through
 * `sharedTokenReader` when given), so replacing the secret takes effect without a restart. A per-cluster
 * token is read from the store and consumed by a compare-and-swap there, never from a cache, so no
 * staleness can let it be used twice.
 */
export class TokenAuthority {
  #store: SecretStore;
  #shared: SecretReader;
  #randomBytes: RandomBytes;
  #equal: (a: string, b: string) => boolean;

  constructor(opts: TokenAuthorityOptions) {
    this.#store = opts.store;
    this.#shared = opts.sharedTokenReader ?? opts.store;
    this.#randomBytes = opts.randomBytes ?? cryptoRandomBytes;
    this.#equal = opts.compareSecrets ?? constantTimeEqual;
  }

  /** The shared token, or undefined when the server has none (then only per-cluster tokens work). */
  async sharedToken(): Promise<string | undefined> {
    const s = await this.#shared.get(IDENTITY_TOKEN_SECRET);
    const v = s?.data[IDENTITY_TOKEN_KEY];
    const t = v && dec.decode(v).trim();
    return t ? t : undefined;
  }

  /** Whether any token (shared or per-cluster) is configured, i.e. whether callers must present one. */
  async anyConfigured(): Promise<boolean> {
    if (await this.sharedToken()) return true;
    return (await this.#store.list()).some((n) => n.startsWith(BOOTSTRAP_TOKEN_PREFIX));
  }

  /**
   * Creates a per-cluster bootstrap token valid for `ttlMs` from `now`. Returns the token (shown once)
   * and its id.
   */
  async create(cluster: string, opts: { now: Date; ttlMs: number }): Promise<{ token: string; id: string }> {
    validateClusterName(cluster);
    if (!(opts.ttlMs > 0)) throw new InvalidInputError("token lifetime must be positive");
    const id = hex(this.#randomBytes(8));
    const secret = base64url(this.#randomBytes(32));
    await this.#store.put(BOOTSTRAP_TOKEN_PREFIX + id, {
      cluster: enc.encode(cluster),
      sha256: enc.encode(tokenHash(secret)),
      "expires-at": enc.encode(new Date(opts.now.getTime() + opts.ttlMs).toISOString()),
    }, { expectedVersion: null });
    return { token: `mrbt.${id}.${secret}`, id };
  }

  /** Lists per-cluster tokens (ids, clusters, expiry, use), oldest expiry first. */
  async list(): Promise<BootstrapTokenInfo[]> {
    const out: BootstrapTokenInfo[] = [];
    for (const name of await this.#store.list()) {
      if (!name.startsWith(BOOTSTRAP_TOKEN_PREFIX)) continue;
      const s = await this.#store.get(name);
      if (!s) continue;
      const info = parseRecord(name.slice(BOOTSTRAP_TOKEN_PREFIX.length), s.data);
      if (info) out.push(info);
    }
    return out.sort((a, b) => a.expiresAt.getTime() - b.expiresAt.getTime());
  }

  /** Deletes per-cluster tokens that expired or were used before `now - keepMs`; returns how many. */
  async prune(now: Date, keepMs = 24 * 3600_000): Promise<number> {
    let n = 0;
    for (const t of await this.list()) {
      const end = Math.min(t.expiresAt.getTime(), t.usedAt?.getTime() ?? Infinity);
      if (end < now.getTime() - keepMs && await this.#store.delete(BOOTSTRAP_TOKEN_PREFIX + t.id)) n++;
    }
    return n;
  }

  /** Revokes a per-cluster token by id. */
  async revoke(id: string): Promise<boolean> {
    if (!/^[a-f0-9]{16}$/.test(id)) throw new InvalidInputError("token id must be 16 hex digits");
    return await this.#store.delete(BOOTSTRAP_TOKEN_PREFIX + id);
  }

  /**
   * Checks `token` for a caller claiming `cluster`. Throws AuthenticationError for an unknown, wrong,
   * expired or used token, PermissionDeniedError for a per-cluster token of another cluster. Messages
   * never contain the token.
   */
  async check(token: string, cluster: string, opts: CheckOptions): Promise<TokenGrant> {
    if (!token) throw new AuthenticationError("no bootstrap token presented");
    const shared = await this.sharedToken();
    // Always do the shared comparison, even for per-cluster-shaped tokens, so timing does not tell
    // the two paths apart before the store lookup.
    const sharedOk = this.#equal(token, shared ?? "\u0000no shared token");
    if (shared && sharedOk) return { cluster, kind: "shared" };
    const m = PER_CLUSTER.exec(token);
    if (!m) throw new AuthenticationError("invalid bootstrap token");
    const [, id, secret] = m;
    const name = BOOTSTRAP_TOKEN_PREFIX + id;
    const rec = await this.#store.get(name);
    const info = rec && parseRecord(id, rec.data);
    const stored = rec?.data.sha256 ? dec.decode(rec.data.sha256) : "";
    if (!rec || !info || !this.#equal(tokenHash(secret), stored)) {
      throw new AuthenticationError("invalid bootstrap token");
    }
    if (info.expiresAt.getTime() <= opts.now.getTime()) {
      throw new AuthenticationError(`bootstrap token ${id} expired at ${info.expiresAt.toISOString()}`);
    }
    if (info.cluster !== cluster) {
      throw new PermissionDeniedError(`bootstrap token ${id} is bound to another cluster than "${cluster}"`);
    }
    if (opts.consume) {
      if (info.usedAt) throw new AuthenticationError(`bootstrap token ${id} was already used`);
      try {
        await this.#store.put(name, { ...rec.data, "used-at": enc.encode(opts.now.toISOString()) }, {
          expectedVersion: rec.version,
        });
      } catch (e) {
        if (e instanceof ConflictError) {
          throw new AuthenticationError(`bootstrap token ${id} was already used`, { cause: e });
        }
        throw e;
      }
    }
    return { cluster, kind: "cluster", tokenId: id };
  }
}

function parseRecord(id: string, data: Readonly<Record<string, Uint8Array>>): BootstrapTokenInfo | undefined {
  const cluster = data.cluster && dec.decode(data.cluster);
  const exp = data["expires-at"] && new Date(dec.decode(data["expires-at"]));
  if (!cluster || !exp || isNaN(exp.getTime())) return undefined;
  const used = data["used-at"] && new Date(dec.decode(data["used-at"]));
  return { id, cluster, expiresAt: exp, ...(used && !isNaN(used.getTime()) ? { usedAt: used } : {}) };
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/**
 * A cluster name is the DNS SAN of the agent's certificate, so it must be a DNS name (lowercase labels
 * separated by dots, at most 253 characters).
 */
export function validateClusterName(name: string): void {
  if (!name || name.length > 253 || !name.split(".").every((l) => DNS_LABEL.test(l))) {
    throw new InvalidInputError(`invalid cluster name ${quoteName(name)}: must be a lowercase DNS name`);
  }
}

/**
 * The name as it may appear in an error and a log line. The name comes off the wire: bytes shifted in
 * from a neighbouring field can carry the caller's token or PEM, and control characters can forge log
 * lines, so only a short name of plain name characters is echoed; anything else is described.
 */
function quoteName(name: string): string {
  if (/^[A-Za-z0-9._-]{1,64}$/.test(name)) return JSON.stringify(name);
  return name ? `(${name.length} characters, not shown: not plain name characters or too long)` : "(empty)";
}
