/**
 * Who is calling: the cluster identity of a gRPC caller, per security mode.
 *
 * - mTLS: the single DNS SAN of a client certificate that the TLS handshake verified and that we verify
 *   again ourselves (`verifyChain`, purpose clientAuth, against the current trust bundle: the handshake
 *   checks neither EKU nor SAN), then the revocation list and the cluster registry. Never a message
 *   field, never metadata.
 * - simple TLS: the server cannot tell agents apart by certificate, so every call carries the bootstrap
 *   token (`authorization: Bearer …`) and names its cluster (`x-meshrelay-cluster`). A per-cluster token
 *   binds the name; the shared token lets its holder name any cluster (logged as a warning at startup).
 * - insecure: the cluster named in metadata, plus the token when the server has one.
 *
 * Each returns an {@linkcode Identify} function that R2's Sync handler and the Identity service call
 * on every call; it throws AuthenticationError (no or bad proof) or PermissionDeniedError (known but
 * not allowed: unregistered, revoked, other cluster's token), which map to gRPC statuses.
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import type { Clock } from "../clock.ts";
import { AuthenticationError, PermissionDeniedError } from "../errors.ts";
import { dnsNamesOf, parseCertificates, verifyChain, type X509Certificate } from "../pki/mod.ts";
import type { FailureLimiter } from "./rate_limit.ts";
import { peerAddress } from "./rate_limit.ts";
import type { RevocationList } from "./revocation.ts";
import type { ClientTrust } from "./server_tls.ts";
import { type TokenAuthority, validateClusterName } from "./tokens.ts";

/** Metadata key naming the caller's cluster in simple-TLS and insecure modes. */
export const CLUSTER_METADATA = "x-meshrelay-cluster";
/** Metadata key carrying `Bearer <token>` in simple-TLS and insecure modes. */
export const AUTHORIZATION_METADATA = "authorization";

/** What a caller proved. */
export interface PeerIdentity {
  cluster: string;
  /** Client certificate serial (mTLS). */
  serial?: string;
  notBefore?: Date;
  notAfter?: Date;
  /** `binding`: the certificate its connection's Bootstrap just issued (session_binding.ts). */
  via: "certificate" | "binding" | "token" | "insecure";
}

/** The part of a grpc-js server call identity needs. */
export type IdentifiableCall = Pick<
  grpc.ServerUnaryCall<unknown, unknown>,
  "getAuthContext" | "metadata" | "getPeer"
>;

/**
 * The contract with the Sync handler: resolves to the caller's identity or throws
 * AuthenticationError / PermissionDeniedError.
 */
export type Identify = (
  // deno-lint-ignore no-explicit-any
  call: grpc.ServerDuplexStream<any, any> | grpc.ServerUnaryCall<any, any> | IdentifiableCall,
) => Promise<PeerIdentity>;

/** Whether the TLS handshake verified a client certificate (grpc-js exposes no other). */
export function hasVerifiedCertificate(call: IdentifiableCall): boolean {
  return (call.getAuthContext()?.sslPeerCertificate?.raw?.length ?? 0) > 0;
}

/** The client certificate the TLS handshake verified, if any. */
export function peerCertificate(call: IdentifiableCall): X509Certificate | undefined {
  if (!hasVerifiedCertificate(call)) return undefined;
  const raw = call.getAuthContext().sslPeerCertificate!.raw;
  // The pki face takes PEM; the handshake gives DER.
  const b64 = Buffer.from(raw).toString("base64").replace(/(.{64})/g, "$1\n");
  return parseCertificates(
    `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`,
    "client certificate",
  )[0];
}

/** Dependencies of certificate verification. */
export interface CertificateIdentityDeps {
  trust: () => ClientTrust;
  clock: Clock;
  isRegistered: (cluster: string) => boolean;
  revocations?: RevocationList;
}

/** Verifies a client certificate and derives the cluster (see the module comment). */
export async function identityOfCertificate(
  leaf: X509Certificate,
  deps: CertificateIdentityDeps,
): Promise<PeerIdentity> {
  const trust = deps.trust();
  await verifyChain(leaf, {
    roots: trust.roots,
    intermediates: trust.intermediates,
    now: deps.clock.now(),
    purpose: "clientAuth",
  });
  const names = dnsNamesOf(leaf);
  if (names.length !== 1) {
    throw new AuthenticationError(
      `client certificate must carry exactly one DNS name (the cluster), it has ${names.length}`,
    );
  }
  const cluster = names[0];
  try {
    validateClusterName(cluster);
  } catch {
    throw new AuthenticationError("client certificate's DNS name is not a valid cluster name");
  }
  const id: PeerIdentity = {
    cluster,
    serial: leaf.serialNumber.toLowerCase(),
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    via: "certificate",
  };
  checkStanding({ cluster, serial: id.serial!, notBefore: leaf.notBefore }, deps);
  return id;
}

/**
 * What every certificate identity must pass once its cluster is known: not revoked, cluster registered.
 * Throws PermissionDeniedError otherwise.
 */
export function checkStanding(
  cert: { cluster: string; serial: string; notBefore: Date },
  deps: Pick<CertificateIdentityDeps, "isRegistered" | "revocations">,
): void {
  deps.revocations?.check(cert);
  if (!deps.isRegistered(cert.cluster)) {
    throw new PermissionDeniedError(`cluster "${cert.cluster}" is not registered`);
  }
}

/** mTLS: identity from the verified client certificate only. */
export function certificateIdentify(deps: CertificateIdentityDeps): Identify {
  return (call) => {
    const leaf = peerCertificate(call);
    if (!leaf) {
      return Promise.reject(
        new AuthenticationError(
          "no valid client certificate (missing, expired, or not issued by the relay CA); only " +
            "Identity.Bootstrap works without one",
        ),
      );
    }
    return identityOfCertificate(leaf, deps);
  };
}

function metadataValue(call: IdentifiableCall, key: string): string {
  const v = call.metadata?.get(key)?.[0];
  if (v === undefined) return "";
  return typeof v === "string" ? v : Buffer.from(v).toString("utf8");
}

/** The token of an `authorization: Bearer …` header, or "". */
export function bearerToken(call: IdentifiableCall): string {
  const m = /^Bearer\s+(.+)$/i.exec(metadataValue(call, AUTHORIZATION_METADATA).trim());
  return m ? m[1].trim() : "";
}

/** The cluster a caller names in metadata (simple TLS, insecure). */
export function claimedCluster(call: IdentifiableCall): string {
  const c = metadataValue(call, CLUSTER_METADATA).trim();
  if (!c) throw new AuthenticationError(`missing ${CLUSTER_METADATA} metadata`);
  try {
    validateClusterName(c);
  } catch {
    throw new AuthenticationError(`${CLUSTER_METADATA} is not a valid cluster name`);
  }
  return c;
}

/** Dependencies of token-based identity. */
export interface TokenIdentityDeps {
  tokens: TokenAuthority;
  clock: Clock;
  isRegistered: (cluster: string) => boolean;
  limiter?: FailureLimiter;
  onFailure?: (reason: string) => void;
}

/**
 * Simple TLS (and insecure with a token): the token proves the right to act as the named cluster. Per-cluster
 * tokens are checked but not consumed here: in simple TLS they are the session credential.
 */
export function tokenIdentify(deps: TokenIdentityDeps, via: "token" | "insecure" = "token"): Identify {
  return async (call) => {
    const now = deps.clock.now();
    const peer = peerAddress(call.getPeer());
    deps.limiter?.check(peer, now);
    try {
      const cluster = claimedCluster(call);
      await deps.tokens.check(bearerToken(call), cluster, { now, consume: false });
      if (!deps.isRegistered(cluster)) {
        throw new PermissionDeniedError(`cluster "${cluster}" is not registered`);
      }
      return { cluster, via };
    } catch (e) {
      deps.limiter?.fail(peer, now);
      deps.onFailure?.(e instanceof PermissionDeniedError ? "permission_denied" : "unauthenticated");
      throw e;
    }
  };
}

/** Insecure without any token configured: the cluster named in metadata, if registered. */
export function insecureIdentify(deps: { isRegistered: (cluster: string) => boolean }): Identify {
  return (call) => {
    try {
      const cluster = claimedCluster(call);
      if (!deps.isRegistered(cluster)) {
        throw new PermissionDeniedError(`cluster "${cluster}" is not registered`);
      }
      return Promise.resolve({ cluster, via: "insecure" as const });
    } catch (e) {
      return Promise.reject(e);
    }
  };
}
