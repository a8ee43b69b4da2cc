/**
 * Session bindings: the first Sync stream of a freshly bootstrapped agent runs on the connection it
 * bootstrapped on, instead of on a second, mTLS connection.
 *
 * Why: on the pinned Deno a closed HTTP/2 connection is never freed (docs/relay.md "Known limits"), so
 * an agent's Bootstrap connection used to cost the server memory for as long as it ran: about 40–55 KiB
 * per agent, a third of the server's memory at 5,000 agents. With a binding, the agent keeps that
 * connection open for its Sync stream and dials mTLS only when it reconnects.
 *
 * Why it is safe: a successful Bootstrap returns a binding, 256 random bits, over the server-authenticated
 * TLS connection that carried the token and the CSR. A Sync call is taken to be the certificate just
 * issued only if it presents that binding and comes from the same connection (the peer's address and
 * port, unique among open connections), within `ttlMs`, and only once. So it proves what a client
 * certificate would: that the caller is the party that bootstrapped and holds the new certificate's key
 * (the key never left it, the certificate went to it alone). Revocation and registration are checked as
 * for a certificate. Only the hash of a binding is kept, so the table leaks nothing usable.
 * @module
 */
import type { Clock } from "../clock.ts";
import { AuthenticationError } from "../errors.ts";
import type { Counter, MetricsRegistry } from "./metrics.ts";
import {
  type CertificateIdentityDeps,
  checkStanding,
  hasVerifiedCertificate,
  type Identify,
  type PeerIdentity,
} from "./peer_identity.ts";
import { cryptoRandomBytes, generateSharedToken, type RandomBytes, tokenHash } from "./tokens.ts";

/** Metadata key that carries a session binding on a Sync call. */
export const SESSION_BINDING_METADATA = "x-meshrelay-session-binding";

/** Default time from Bootstrap to the Sync call that redeems its binding. */
export const DEFAULT_SESSION_BINDING_TTL_MS = 60_000;

/** Default bound on unredeemed bindings held at once (oldest dropped first). */
export const DEFAULT_SESSION_BINDING_MAX = 20_000;

/** What a binding stands for: the certificate the Bootstrap issued. */
export interface BoundCertificate {
  cluster: string;
  /** Serial, lower-case hex, as peer identities carry it. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/** Options of {@linkcode SessionBindings}. */
export interface SessionBindingOptions {
  clock: Clock;
  random?: RandomBytes;
  ttlMs?: number;
  maxEntries?: number;
  /** Counts bindings by result (`meshrelay_session_bindings_total`). */
  metrics?: MetricsRegistry;
}

interface Entry extends BoundCertificate {
  peer: string;
  expiresAt: number;
}

/** The server's table of bindings issued by Bootstrap and not yet redeemed. */
export class SessionBindings {
  #o: { clock: Clock; random: RandomBytes; ttlMs: number; maxEntries: number };
  #counter?: Counter;
  // Insertion order is issue order, so the first entries are the oldest.
  #entries = new Map<string, Entry>();

  constructor(o: SessionBindingOptions) {
    const ttlMs = o.ttlMs ?? DEFAULT_SESSION_BINDING_TTL_MS;
    const maxEntries = o.maxEntries ?? DEFAULT_SESSION_BINDING_MAX;
    if (!(ttlMs > 0) || !(maxEntries >= 1)) {
      throw new RangeError("session bindings need a positive ttlMs and maxEntries");
    }
    this.#o = { clock: o.clock, random: o.random ?? cryptoRandomBytes, ttlMs, maxEntries };
    this.#counter = o.metrics?.counter(
      "meshrelay_session_bindings_total",
      "Session bindings by result: issued by Bootstrap, redeemed by the first Sync stream on the same " +
        "connection, refused.",
    );
  }

  /** Unredeemed bindings held (expired ones are dropped as new ones come). */
  get size(): number {
    return this.#entries.size;
  }

  /** A new binding for `cert`, redeemable once from `peer` (grpc-js `call.getPeer()`). */
  issue(cert: BoundCertificate, peer: string): string {
    const now = this.#o.clock.now().getTime();
    this.#prune(now);
    while (this.#entries.size >= this.#o.maxEntries) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    // The same form as a generated relay token: 256 random bits, base64url; only its hash is kept.
    const binding = generateSharedToken(this.#o.random);
    this.#entries.set(tokenHash(binding), { ...cert, peer, expiresAt: now + this.#o.ttlMs });
    this.#counter?.inc({ result: "issued" });
    return binding;
  }

  /**
   * The certificate `binding` stands for, if it was issued to `peer` and has not expired or been
   * redeemed; it is spent either way once found. Throws AuthenticationError otherwise, with a reason
   * that names no secret.
   */
  redeem(binding: string, peer: string): BoundCertificate {
    try {
      const c = this.#redeem(binding, peer);
      this.#counter?.inc({ result: "redeemed" });
      return c;
    } catch (e) {
      this.#counter?.inc({ result: "refused" });
      throw e;
    }
  }

  #redeem(binding: string, peer: string): BoundCertificate {
    const key = tokenHash(binding);
    const e = this.#entries.get(key);
    if (!e) throw new AuthenticationError("unknown or already used session binding");
    this.#entries.delete(key);
    const now = this.#o.clock.now().getTime();
    if (now >= e.expiresAt) throw new AuthenticationError("session binding expired");
    if (e.peer !== peer) {
      throw new AuthenticationError(
        "session binding presented on another connection than the one it was issued on",
      );
    }
    if (now >= e.notAfter.getTime()) throw new AuthenticationError("the bound certificate has expired");
    return { cluster: e.cluster, serial: e.serial, notBefore: e.notBefore, notAfter: e.notAfter };
  }

  #prune(now: number): void {
    for (const [k, e] of this.#entries) {
      // Issue order with one TTL: the first unexpired entry ends the expired run.
      if (e.expiresAt > now) break;
      this.#entries.delete(k);
    }
  }
}

/** What {@linkcode identifyWithBinding} checks besides the binding itself. */
export interface BindingIdentityDeps extends Pick<CertificateIdentityDeps, "isRegistered" | "revocations"> {
  bindings: SessionBindings;
}

/**
 * The Sync service's identity in mTLS: a verified client certificate as always (`byCertificate`); without
 * one, a session binding from this connection's Bootstrap, checked against revocation and registration
 * like the certificate it stands for. Neither: `byCertificate`'s refusal (no client certificate).
 */
export function identifyWithBinding(deps: BindingIdentityDeps, byCertificate: Identify): Identify {
  return (call) => {
    const raw = call.metadata?.get(SESSION_BINDING_METADATA)?.[0];
    if (hasVerifiedCertificate(call) || raw === undefined) return byCertificate(call);
    try {
      const c = deps.bindings.redeem(String(raw), call.getPeer());
      checkStanding(c, deps);
      const id: PeerIdentity = { ...c, via: "binding" };
      return Promise.resolve(id);
    } catch (e) {
      return Promise.reject(e);
    }
  };
}
