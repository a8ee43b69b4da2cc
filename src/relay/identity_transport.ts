/**
 * {@linkcode IdentityTransport} over gRPC: Bootstrap over server-authenticated TLS (no client
 * certificate), Renew over mTLS with the current certificate. These calls are rare (once per
 * certificate lifetime), so a channel lives for one call and its retries: it is kept after an answer
 * that says "ask again" on a working connection (busy, refused) and reused by the next call with the
 * same credentials, and closed after anything else. In a bootstrap storm an agent refused as busy
 * retries on the connection it has instead of making one more (each closed connection costs the
 * server memory on the pinned Deno, docs/relay.md "Known limits").
 *
 * A Bootstrap answered with a session binding hands its channel on instead of closing it: the Sync
 * dialer takes it ({@linkcode BoundChannel}) and runs the first stream on the same connection
 * (session_binding.ts), so a new agent costs the server one connection, not two.
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { closeClient } from "./close_client.ts";
import {
  AuthenticationError,
  grpcDetailsText,
  GrpcStatus,
  InvalidInputError,
  type MeshrelayError,
  NotFoundError,
  PermissionDeniedError,
  PreconditionError,
  ResourceExhaustedError,
  UnavailableError,
} from "../errors.ts";
import {
  type BootstrapRequest,
  type CertificateResponse,
  IdentityClient,
  type MeshCaRequest,
  type RenewRequest,
} from "../proto/mod.ts";
import type { IdentityTransport } from "./agent_identity.ts";
import type { MeshCaTransport } from "./mesh_ca_agent.ts";
import { channelFor, type ClientKeyPair } from "./client_credentials.ts";
import { parseCertificates } from "../pki/mod.ts";
import { caFingerprint } from "./ca_fingerprint.ts";

/** A project error for a gRPC status the server returned (the inverse of `grpcStatusOf`). */
export function errorFromStatus(e: Partial<grpc.ServiceError>): MeshrelayError {
  const msg = grpcDetailsText(e.details || e.message || "call failed");
  switch (e.code) {
    case GrpcStatus.UNAUTHENTICATED:
      return new AuthenticationError(msg);
    case GrpcStatus.PERMISSION_DENIED:
      return new PermissionDeniedError(msg);
    case GrpcStatus.INVALID_ARGUMENT:
      return new InvalidInputError(msg);
    case GrpcStatus.FAILED_PRECONDITION:
      return new PreconditionError(msg);
    case GrpcStatus.RESOURCE_EXHAUSTED:
      return new ResourceExhaustedError(msg);
    case GrpcStatus.NOT_FOUND:
      return new NotFoundError(msg);
    default:
      return new UnavailableError(`relay server: ${msg}`);
  }
}

/**
 * Deadline of an identity call (Bootstrap, Renew, SignMeshCa), connection included. Generous on purpose:
 * in a bootstrap storm the TLS handshake and the answer wait behind thousands of others, and with 30 s a
 * quarter of 5,000 agents bootstrapping at once gave up on certificates the server had already signed,
 * and asked again (README "Performance"). The server's queue wait stays well below it.
 */
export const IDENTITY_CALL_DEADLINE_MS = 60_000;

/** Options of {@linkcode grpcIdentityTransport}. */
export interface GrpcIdentityTransportOptions {
  serverAddress: string;
  authority?: string;
  /** Trust anchors for the server (read per call, so a rotated root is picked up). */
  rootCaPem: () => Promise<string>;
  channelOptions?: grpc.ChannelOptions;
  /** Per-call deadline. Default {@linkcode IDENTITY_CALL_DEADLINE_MS}. */
  deadlineMs?: number;
}

/**
 * Statuses the server sends on a working connection when the caller may ask again: the channel is
 * worth keeping for the retry. Anything else (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED…) may be the
 * connection's fault, and a success changes the credentials the next call uses.
 */
const KEEP_CHANNEL_AFTER = new Set<number>([
  GrpcStatus.RESOURCE_EXHAUSTED,
  GrpcStatus.UNAUTHENTICATED,
  GrpcStatus.PERMISSION_DENIED,
  GrpcStatus.FAILED_PRECONDITION,
  GrpcStatus.INVALID_ARGUMENT,
  GrpcStatus.NOT_FOUND,
]);

/** A Bootstrap's connection, handed to the Sync dialer with the binding that opens a stream on it. */
export interface BoundChannel {
  /** The channel; whoever takes it closes it (`closeClient` of a client made on it). */
  channel: ReturnType<grpc.Client["getChannel"]>;
  /** For the `x-meshrelay-session-binding` metadata of the first Sync call. */
  binding: string;
}

interface KeptChannel {
  key: string;
  /** The trust anchors this channel verifies the server with. */
  rootCaPem: string;
  client: IdentityClient;
  calls: number;
  /** False once a call on it ended in a way that is not worth keeping it for. */
  reusable: boolean;
}

/** The gRPC implementation (also of SignMeshCa, for the agent's Istio intermediate CA). */
export function grpcIdentityTransport(
  opts: GrpcIdentityTransportOptions,
): IdentityTransport & MeshCaTransport & {
  close(): void;
  takeBoundChannel(serial: string): BoundChannel | undefined;
} {
  let kept: KeptChannel | undefined;
  // The last Bootstrap's channel and binding, until the Sync dialer takes them or they go stale.
  let bound: { client: IdentityClient; binding: string; serial: string } | undefined;
  const dropBound = () => {
    if (bound) closeClient(bound.client);
    bound = undefined;
  };
  const release = (ch: KeptChannel, keep: boolean) => {
    ch.calls--;
    if (!keep) ch.reusable = false;
    if (ch.calls > 0) return;
    if (ch.reusable && kept === ch) return;
    if (kept === ch) kept = undefined;
    closeClient(ch.client);
  };
  const acquire = async (client: ClientKeyPair | undefined): Promise<KeptChannel> => {
    // Any new identity call means the bound channel was not taken in time: its binding is worth nothing.
    dropBound();
    const rootCaPem = await opts.rootCaPem();
    const key = `${rootCaPem}\0${client?.certChainPem ?? ""}`;
    if (kept && kept.key === key && kept.reusable) {
      kept.calls++;
      return kept;
    }
    const old = kept;
    kept = undefined;
    if (old) {
      // Other credentials now: the old channel goes when its last call ends.
      old.reusable = false;
      if (old.calls === 0) closeClient(old.client);
    }
    const ch = channelFor({
      serverAddress: opts.serverAddress,
      authority: opts.authority,
      rootCaPem,
      client,
      options: opts.channelOptions,
    });
    kept = {
      key,
      rootCaPem,
      client: new IdentityClient(ch.target, ch.credentials, ch.options),
      calls: 1,
      reusable: true,
    };
    return kept;
  };
  const call = async <Req, Res>(
    client: ClientKeyPair | undefined,
    fn: (
      c: IdentityClient,
      req: Req,
      deadline: Date,
      cb: (e: grpc.ServiceError | null, r: Res) => void,
    ) => grpc.ClientUnaryCall,
    /** The request, or how to make it from the trust anchors the call's channel verifies the server with. */
    req: Req | ((rootCaPem: string) => Req),
    signal?: AbortSignal,
    /** After a success: true when the caller takes `ch` over (it is then neither kept nor closed here). */
    handOff?: (ch: KeptChannel, res: Res) => boolean,
  ): Promise<Res> => {
    const ch = await acquire(client);
    const request = typeof req === "function" ? (req as (rootCaPem: string) => Req)(ch.rootCaPem) : req;
    let keep = false;
    let handedOff = false;
    try {
      const res = await new Promise<Res>((resolve, reject) => {
        const deadline = new Date(Date.now() + (opts.deadlineMs ?? IDENTITY_CALL_DEADLINE_MS));
        const pending = fn(ch.client, request, deadline, (e, r) => {
          signal?.removeEventListener("abort", onAbort);
          if (e) {
            keep = e.code !== undefined && KEEP_CHANNEL_AFTER.has(e.code);
            reject(errorFromStatus(e));
          } else resolve(r);
        });
        const onAbort = () => pending.cancel();
        if (signal?.aborted) onAbort();
        else signal?.addEventListener("abort", onAbort, { once: true });
      });
      if (handOff && !signal?.aborted && handOff(ch, res)) {
        handedOff = true;
        ch.calls--;
        ch.reusable = false;
        if (kept === ch) kept = undefined;
      }
      return res;
    } finally {
      if (!handedOff) release(ch, keep && !signal?.aborted);
    }
  };
  return {
    /** Closes the channel kept for a retry (calls in flight finish first) and an untaken bound one. */
    close: () => {
      dropBound();
      const ch = kept;
      kept = undefined;
      if (!ch) return;
      ch.reusable = false;
      if (ch.calls === 0) closeClient(ch.client);
    },
    /**
     * The channel of the Bootstrap that issued certificate `serial`, with its binding, once; any other
     * serial drops it (that Bootstrap's certificate is not the one in use).
     */
    takeBoundChannel: (serial: string): BoundChannel | undefined => {
      if (!bound) return undefined;
      if (bound.serial !== serial) return void dropBound();
      const b = bound;
      bound = undefined;
      return { channel: b.client.getChannel(), binding: b.binding };
    },
    bootstrap: async (req: BootstrapRequest, signal?: AbortSignal) => {
      let taken: KeptChannel | undefined;
      let known = "";
      const res = await call<BootstrapRequest, CertificateResponse>(
        undefined,
        (c, r, deadline, cb) => c.bootstrap(r, new grpc.Metadata(), { deadline }, cb),
        // Name the anchors this call verifies the server with; if they are the server's, it leaves them out.
        (rootCaPem) => {
          known = rootCaPem;
          return { ...req, knownCaSha256: caFingerprint(rootCaPem) };
        },
        signal,
        (ch, r) => {
          if (!r.sessionBinding || ch.calls !== 1) return false;
          taken = ch;
          return true;
        },
      );
      if (!res.caPem) res.caPem = known;
      if (taken) {
        let serial = "";
        try {
          serial = parseCertificates(res.certificatePem, "issued certificate")[0].serialNumber.toLowerCase();
        } catch {
          // Not a certificate: the identity manager refuses the answer; the channel has no use.
        }
        if (serial) bound = { client: taken.client, binding: res.sessionBinding, serial };
        else closeClient(taken.client);
      }
      return res;
    },
    renew: (req: RenewRequest, current: ClientKeyPair, signal?: AbortSignal) =>
      call<RenewRequest, CertificateResponse>(
        current,
        (c, r, deadline, cb) => c.renew(r, new grpc.Metadata(), { deadline }, cb),
        req,
        signal,
      ),
    signMeshCa: (req: MeshCaRequest, current: ClientKeyPair, signal?: AbortSignal) =>
      call<MeshCaRequest, CertificateResponse>(
        current,
        (c, r, deadline, cb) => c.signMeshCa(r, new grpc.Metadata(), { deadline }, cb),
        req,
        signal,
      ),
  };
}
