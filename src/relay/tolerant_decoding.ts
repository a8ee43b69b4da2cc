/**
 * Request bytes that are not valid protobuf reach our handlers as an empty message instead of failing
 * inside grpc-js.
 *
 * Why: when a request deserializer throws, grpc-js answers INTERNAL on its own, without the handler
 * knowing. On a Sync stream whose headers were already sent, that status is queued behind the
 * stream's end while our session keeps writing; under Deno the trailers then never leave, and the
 * client waits until its deadline (an agent has none on Sync) while the server keeps the session
 * (found by tests/hostile_rpc_test.ts). An empty message instead goes through the handler's own
 * validation: Bootstrap/Renew refuse it with INVALID_ARGUMENT and their one log line, Sync closes
 * the stream with INVALID_ARGUMENT ("empty AgentMessage") through its normal close path.
 * `isUndecodable` tells a handler that wants a more precise message.
 * @module
 */
import type * as grpc from "@grpc/grpc-js";

const UNDECODABLE = Symbol("meshrelay.undecodable");

/** True for the placeholder of a request whose bytes were not valid protobuf. */
export function isUndecodable(msg: unknown): boolean {
  return typeof msg === "object" && msg !== null && (msg as Record<symbol, unknown>)[UNDECODABLE] === true;
}

/** The service definition with request deserializers that never throw (see the module comment). */
export function tolerantDecoding<S extends grpc.ServiceDefinition>(def: S): S {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, m] of Object.entries(def)) {
    const decode = m.requestDeserialize;
    out[name] = {
      ...m,
      requestDeserialize: (bytes) => {
        try {
          return decode(bytes);
        } catch {
          const empty = decode(new Uint8Array(0) as never);
          Object.defineProperty(empty, UNDECODABLE, { value: true, enumerable: false });
          return empty;
        }
      },
    };
  }
  return out as S;
}
