/**
 * A grpc-js method definition that passes bytes through untouched, for tests that must send what no
 * generated client would (random, mutated, truncated or oversized messages).
 * @module
 */
import type { Buffer } from "node:buffer";

const identity = (b: Buffer) => b;

/** `path` as a raw method: bidi streaming when `stream`, else unary; no (de)serialization. */
export function rawMethod(path: string, stream: boolean) {
  return {
    path,
    requestStream: stream,
    responseStream: stream,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}
