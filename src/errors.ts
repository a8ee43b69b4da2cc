/**
 * The project's error vocabulary. Every failure that can reach a user or a peer is one of these,
 * so the CLI can print one clear line and the relay can answer with the right gRPC status.
 *
 * Messages never contain tokens, keys or PEM: callers describe *which* input was wrong, not its value.
 * @module
 */

/** Stable machine-readable error codes. */
export type ErrorCode =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "conflict"
  | "unauthenticated"
  | "permission_denied"
  | "resource_exhausted"
  | "failed_precondition"
  | "unavailable"
  | "deadline_exceeded"
  | "internal";

/** Base class of every meshrelay error. */
export class MeshrelayError extends Error {
  /** Stable code, mapped to exit codes and gRPC status codes. */
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Input (flags, files, PEM, messages) is malformed or inconsistent. */
export class InvalidInputError extends MeshrelayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("invalid_argument", message, options);
  }
}

/** A named thing does not exist. */
export class NotFoundError extends MeshrelayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("not_found", message, options);
  }
}

/** A thing that must not exist already does. */
export class AlreadyExistsError extends MeshrelayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("already_exists", message, options);
  }
}

/** An optimistic-concurrency check failed: someone else wrote first. */
export class ConflictError extends MeshrelayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("conflict", message, options);
  }
}

/** The caller did not prove who it is (bad token, no or invalid certificate). */
export class AuthenticationError extends MeshrelayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("unauthenticated", message, options);
  }
}

/** The caller is known but not allowed to do this (other cluster, revoked). */
export class PermissionDeniedError extends MeshrelayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("permission_denied", message, options);
  }
}

/** A limit was hit (rate limit, size, connections). */
export class ResourceExhaustedError extends MeshrelayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("resource_exhausted", message, options);
  }
}

/** The system is not in a state that allows this (e.g. CA disabled, cert expired). */
export class PreconditionError extends MeshrelayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("failed_precondition", message, options);
  }
}

/** A dependency (server, API server, disk) could not be reached; retrying may help. */
export class UnavailableError extends MeshrelayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("unavailable", message, options);
  }
}

/** gRPC status codes (numeric, so this module does not depend on grpc-js). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  UNAVAILABLE: 14,
  INTERNAL: 13,
  UNAUTHENTICATED: 16,
} as const;

const GRPC_BY_CODE: Record<ErrorCode, number> = {
  invalid_argument: GrpcStatus.INVALID_ARGUMENT,
  not_found: GrpcStatus.NOT_FOUND,
  already_exists: GrpcStatus.ALREADY_EXISTS,
  conflict: GrpcStatus.ABORTED,
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  permission_denied: GrpcStatus.PERMISSION_DENIED,
  resource_exhausted: GrpcStatus.RESOURCE_EXHAUSTED,
  failed_precondition: GrpcStatus.FAILED_PRECONDITION,
  unavailable: GrpcStatus.UNAVAILABLE,
  deadline_exceeded: GrpcStatus.DEADLINE_EXCEEDED,
  internal: GrpcStatus.INTERNAL,
};

/**
 * A grpc-js status text as one clear line for a log or an error: grpc-js ends every connection failure
 * with "Resolution note: " and nothing after it, and a TLS client talking to a plaintext server reads only
 * "wrong version number".
 */
export function grpcDetailsText(details: string): string {
  let t = details.replace(/\s+/g, " ").replace(/\.?\s*Resolution note:\s*$/, "").trim();
  if (/wrong version number/i.test(t)) {
    t += " (TLS to a server that speaks plaintext? both sides need the same --tls-mode)";
  }
  return t;
}

/**
 * The one mapping from errors to gRPC status codes. Anything that is not a MeshrelayError is
 * INTERNAL: its message may carry details we did not vet, so callers must not forward it.
 */
export function grpcStatusOf(err: unknown): number {
  return err instanceof MeshrelayError ? GRPC_BY_CODE[err.code] : GrpcStatus.INTERNAL;
}

/** Process exit code for an error at the CLI: 2 for bad input, 1 otherwise. */
export function exitCodeOf(err: unknown): number {
  return err instanceof MeshrelayError && err.code === "invalid_argument" ? 2 : 1;
}

/**
 * One line for a human. Deno's own errors (permission, not found, …) are wrapped with their
 * message only, never a stack.
 */
export function describeError(err: unknown): string {
  if (err instanceof MeshrelayError) return err.message;
  if (err instanceof Deno.errors.NotCapable) return `not permitted: ${err.message}`;
  if (err instanceof Error) return err.message;
  return String(err);
}
