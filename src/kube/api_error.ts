/**
 * Turns what @kubernetes/client-node throws into the project's error classes, with a message that
 * names the request (verb, resource, namespace, name) and the API server's reason, never a body we did
 * not vet or credentials.
 * @module
 */
import { ApiException } from "@kubernetes/client-node";
import {
  AlreadyExistsError,
  ConflictError,
  InvalidInputError,
  MeshrelayError,
  NotFoundError,
  PermissionDeniedError,
  PreconditionError,
  ResourceExhaustedError,
  UnavailableError,
} from "../errors.ts";

/** The request an error belongs to, for its message. */
export interface KubeRequest {
  /** Kubernetes verb: get, list, watch, create, update, patch, delete. */
  readonly verb: string;
  /** Plural resource, e.g. `secrets`, `deployments.apps`. */
  readonly resource: string;
  readonly namespace?: string;
  readonly name?: string;
}

/** What the API server said: HTTP code and, when the body was a Status, its reason and message. */
export interface KubeApiStatus {
  readonly code: number;
  /** Status.reason: `NotFound`, `AlreadyExists`, `Conflict`, `Forbidden`, `Invalid`, … */
  readonly reason?: string;
  readonly message?: string;
}

/** Socket-level failures that mean "the API server could not be reached". */
const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EPIPE",
  "UND_ERR_SOCKET",
]);

/** The API status carried by a client-node `ApiException`, or undefined for any other error. */
export function kubeApiStatusOf(err: unknown): KubeApiStatus | undefined {
  if (!(err instanceof ApiException)) return undefined;
  const { code, body } = err as { code: unknown; body: unknown };
  if (typeof code !== "number") return undefined;
  let status: unknown = body;
  if (typeof body === "string") {
    try {
      status = JSON.parse(body);
    } catch {
      status = undefined;
    }
  }
  const s = (status && typeof status === "object") ? status as { reason?: unknown; message?: unknown } : {};
  return {
    code,
    reason: typeof s.reason === "string" ? s.reason : undefined,
    message: typeof s.message === "string" ? s.message : undefined,
  };
}

/** The socket error code (ECONNREFUSED, …) of a network failure, looking through `cause` chains. */
function networkCodeOf(err: unknown): string | undefined {
  for (let e = err, depth = 0; e && typeof e === "object" && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && UNREACHABLE.has(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

function describe(req: KubeRequest): string {
  const what = req.name ? `${req.resource}/${req.name}` : req.resource;
  return `${req.verb} ${what}${req.namespace ? ` in namespace ${req.namespace}` : ""}`;
}

/** The server's own message, shortened: it names objects and fields, which is what a user needs. */
function serverSays(s: KubeApiStatus): string {
  const m = s.message?.replace(/\s+/g, " ").trim();
  if (!m) return "";
  return `: ${m.length > 300 ? `${m.slice(0, 300)}…` : m}`;
}

/**
 * The project error for a failed Kubernetes request. MeshrelayErrors pass through unchanged; anything
 * unrecognised becomes UnavailableError (the request's outcome is unknown; retrying is the safe move).
 */
export function kubeError(err: unknown, req: KubeRequest): MeshrelayError {
  if (err instanceof MeshrelayError) return err;
  const what = `kubernetes ${describe(req)}`;
  const status = kubeApiStatusOf(err);
  if (status) {
    const says = serverSays(status);
    switch (status.code) {
      case 400:
        return new InvalidInputError(`${what}: bad request${says}`, { cause: err });
      case 401:
        return new PermissionDeniedError(
          `${what}: the API server did not accept our credentials (401 Unauthorized)`,
          { cause: err },
        );
      case 403:
        return new PermissionDeniedError(`${what}: forbidden (403)${says}`, { cause: err });
      case 404:
        return new NotFoundError(`${what}: not found${says}`, { cause: err });
      case 409:
        return status.reason === "AlreadyExists"
          ? new AlreadyExistsError(`${what}: already exists${says}`, { cause: err })
          : new ConflictError(`${what}: conflict${says}`, { cause: err });
      case 410:
        return new PreconditionError(`${what}: gone (resource version expired)${says}`, { cause: err });
      case 412:
        return new ConflictError(`${what}: precondition failed${says}`, { cause: err });
      case 422:
        return new InvalidInputError(`${what}: invalid${says}`, { cause: err });
      case 429:
        return new ResourceExhaustedError(`${what}: too many requests${says}`, { cause: err });
      default:
        return new UnavailableError(`${what}: API server answered ${status.code}${says}`, { cause: err });
    }
  }
  const net = networkCodeOf(err);
  if (net) {
    return new UnavailableError(`${what}: cannot reach the API server (${net})`, { cause: err });
  }
  const msg = err instanceof Error ? err.message.split("\n")[0].slice(0, 200) : String(err);
  return new UnavailableError(`${what}: request failed: ${msg}`, { cause: err });
}
