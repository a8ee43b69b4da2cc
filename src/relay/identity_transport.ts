/**
 * {@linkcode IdentityTransport} over gRPC: Bootstrap over server-authenticated TLS (no client
 * certificate), Renew over mTLS with the current certificate. One short-lived channel per call: these
 * calls are rare (once per certificate lifetime), and a fresh channel always uses the key pair given.
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { closeClient } from "./close_client.ts";
import {
  AuthenticationError,
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

/** A project error for a gRPC status the server returned (the inverse of `grpcStatusOf`). */
export function errorFromStatus(e: Partial<grpc.ServiceError>): MeshrelayError {
  const msg = e.details || e.message || "call failed";
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

/** The gRPC implementation (also of SignMeshCa, for the agent's Istio intermediate CA). */
export function grpcIdentityTransport(
  opts: GrpcIdentityTransportOptions,
): IdentityTransport & MeshCaTransport {
  const call = async <Req, Res>(
    client: ClientKeyPair | undefined,
    fn: (
      c: IdentityClient,
      req: Req,
      deadline: Date,
      cb: (e: grpc.ServiceError | null, r: Res) => void,
    ) => grpc.ClientUnaryCall,
    req: Req,
    signal?: AbortSignal,
  ): Promise<Res> => {
    const ch = channelFor({
      serverAddress: opts.serverAddress,
      authority: opts.authority,
      rootCaPem: await opts.rootCaPem(),
      client,
      options: opts.channelOptions,
    });
    const c = new IdentityClient(ch.target, ch.credentials, ch.options);
    try {
      return await new Promise<Res>((resolve, reject) => {
        const deadline = new Date(Date.now() + (opts.deadlineMs ?? IDENTITY_CALL_DEADLINE_MS));
        const pending = fn(c, req, deadline, (e, r) => {
          signal?.removeEventListener("abort", onAbort);
          if (e) reject(errorFromStatus(e));
          else resolve(r);
        });
        const onAbort = () => pending.cancel();
        if (signal?.aborted) onAbort();
        else signal?.addEventListener("abort", onAbort, { once: true });
      });
    } finally {
      closeClient(c);
    }
  };
  return {
    bootstrap: (req: BootstrapRequest, signal?: AbortSignal) =>
      call<BootstrapRequest, CertificateResponse>(
        undefined,
        (c, r, deadline, cb) => c.bootstrap(r, new grpc.Metadata(), { deadline }, cb),
        req,
        signal,
      ),
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
