/**
 * One warning line for each unary call that ends with a non-OK status our handler did not produce, and a
 * clear status for a unary call whose request message never arrived whole.
 *
 * Why: grpc-js refuses some input itself, before any handler runs (a message over --max-message-bytes,
 * a compression it does not support, a bad `grpc-timeout`), and nothing reached our log: an operator saw
 * agents fail with no line on the server. And a unary call whose only message is missing or cut short
 * (HTTP/2 stream ended mid-frame) got grpc-js's UNIMPLEMENTED "Received no request message for server
 * streaming method …", which sends one looking for a method that does not exist; it is bad input, so
 * it gets INVALID_ARGUMENT here, as does a second request message on a unary call.
 *
 * How grpc-js's own statuses are seen: it sends them from its base call, beneath every interceptor, by
 * calling that call's own `sendStatus`; the interceptor wraps that method on the call it is given (the
 * base call: ours is the server's only interceptor), and a status that did not come down from the
 * handler through the interceptor is one grpc-js made. This relies on grpc-js calling `this.sendStatus`
 * internally (true of 1.14, which deno.lock pins); if that changed the lines would go missing
 * (grpc_refusals_test.ts and tests/hostile_rpc_test.ts notice), calls would not fail.
 *
 * Streaming methods (Sync) are not wrapped: the server holds thousands of long-lived Sync streams and is
 * memory-bound, and wrapping a call means objects that live as long as it. Their base call only gets one
 * shared function (no closure) as its `sendStatus`, which records a non-OK status on the call; when a
 * stream ends without its handler having closed it, the handler asks {@linkcode grpcRefusalOf} and logs
 * grpc-js's refusal (a message over the limit, say) as this same line, instead of "ended by the peer".
 *
 * A deadline that passes is the client's own limit, not bad input, and a storm of them under load
 * would be a storm of warnings: it is logged at debug level. A call the client cancels before it sent
 * anything gets no status and no line; but under Deno's node:http2 a stream the client resets in the
 * middle of a message reaches grpc-js as ended first, so it is refused (and logged) as cut short, which
 * is what the server received; the client, gone, never reads that status.
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { GrpcStatus } from "../errors.ts";
import type { LogFields, Logger } from "../log.ts";
import { peerAddress } from "./rate_limit.ts";

/** `msg` of the line logged for a call refused by grpc-js or by this interceptor ({@linkcode logRefusal}). */
export const REFUSED_BEFORE_HANDLER = "call refused before its handler ran";
/** Details of the status a unary call without one whole request message gets. */
export const MISSING_REQUEST_DETAILS = "the request message is missing or cut short";
/** Details of the status a unary call with more than one request message gets. */
export const EXTRA_REQUEST_DETAILS = "a unary call takes exactly one request message";

/** A non-OK status sent on a streaming call, as {@linkcode grpcRefusalOf} reports it. */
export interface GrpcRefusal {
  code: number;
  details: string;
  /** Peer address (no port), read when the status was sent. */
  peer: string;
}

const REFUSAL = Symbol("meshrelay.grpcRefusal");
type RecordingCall = grpc.ServerInterceptingCallInterface & { [REFUSAL]?: GrpcRefusal };

/** The `sendStatus` of every streaming base call: one function for all, so a stream costs one slot. */
function recordingSendStatus(
  this: RecordingCall,
  status: Parameters<grpc.ServerInterceptingCallInterface["sendStatus"]>[0],
): void {
  if (status.code !== GrpcStatus.OK && this[REFUSAL] === undefined) {
    this[REFUSAL] = { code: status.code, details: status.details ?? "", peer: peerAddress(this.getPeer()) };
  }
  Object.getPrototypeOf(this).sendStatus.call(this, status);
}

/**
 * The first non-OK status sent on the stream behind `stream` (a grpc-js server stream of a server using
 * {@linkcode refusalLogInterceptor}), if any. A handler that did not close the stream itself asks this
 * when the stream ends: a status it finds was grpc-js's refusal, not the peer leaving.
 */
export function grpcRefusalOf(stream: object): GrpcRefusal | undefined {
  return (stream as { call?: RecordingCall }).call?.[REFUSAL];
}

/**
 * Whether the HTTP/2 stream behind `stream` (a grpc-js server stream) was destroyed with no reset code
 * from the peer: its connection was destroyed under it (the server's keepalive gave up, the socket
 * closed). Why: under Deno's node:http2 such a stream first emits `end`, as if the peer had half-closed;
 * a peer that half-closes and then cancels leaves its own reset code (CANCEL) instead.
 */
export function connectionDestroyedUnder(stream: object): boolean {
  const h2 = (stream as { call?: { stream?: { destroyed?: boolean; rstCode?: number } } }).call?.stream;
  return h2?.destroyed === true && h2.rstCode === 0;
}

/**
 * The one line for a call refused before its handler saw the input (method, peer, code, grpc-js's
 * reason). A deadline that passed is the client's own limit, not bad input: debug, not warn.
 */
export function logRefusal(log: Logger, method: string, r: GrpcRefusal, fields?: LogFields): void {
  log[r.code === GrpcStatus.DEADLINE_EXCEEDED ? "debug" : "warn"](REFUSED_BEFORE_HANDLER, {
    method,
    peer: r.peer,
    code: r.code,
    error: r.details,
    ...fields,
  });
}

/** The server interceptor described in the module comment; logs through `log`. */
export function refusalLogInterceptor(log: Logger): grpc.ServerInterceptor {
  const l = log.child({ component: "grpc" });
  return (method, call) => {
    if (method.requestStream || method.responseStream) {
      // No wrapper (see the module comment). grpc-js chains interceptors by calling each with the
      // previous call and only ever uses the result through the call interface the base call implements.
      call.sendStatus = recordingSendStatus;
      return call as unknown as grpc.ServerInterceptingCall;
    }
    // Read now, while the connection is surely open: by the time a reset stream gets its status the
    // socket may be gone and grpc-js answers "unknown".
    const peer = peerAddress(call.getPeer());
    let fromHandler = false;
    let logged = false;
    let received = false;
    const send = call.sendStatus.bind(call);
    call.sendStatus = (status) => {
      if (!fromHandler && !logged && status.code !== GrpcStatus.OK) {
        logged = true;
        logRefusal(l, method.path, { code: status.code, details: status.details ?? "", peer });
      }
      send(status);
    };
    const refuse = (details: string) => call.sendStatus({ code: GrpcStatus.INVALID_ARGUMENT, details });
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMessage: (message, next) => {
            if (received) return refuse(EXTRA_REQUEST_DETAILS);
            received = true;
            next(message);
          },
          onReceiveHalfClose: (next) => received ? next() : refuse(MISSING_REQUEST_DETAILS),
        }),
      sendStatus: (status, next) => {
        fromHandler = true;
        next(status);
      },
    });
  };
}
