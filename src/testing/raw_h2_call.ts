/**
 * A gRPC call below any gRPC client, for tests that must send what no client library would: bytes
 * written as they are (length prefixes and all, so they can lie) on one HTTP/2 stream.
 * @module
 */
import { Buffer } from "node:buffer";
import * as http2 from "node:http2";

/** The status a raw call got. */
export interface RawCallStatus {
  /** grpc-status the server sent, or undefined when it sent none (a reset stream, a dropped session). */
  code?: number;
  details: string;
}

/**
 * Opens `path` on `session` (the caller connects it, with or without TLS, and destroys it), writes
 * `chunks`, then ends the stream, or resets it (RST_STREAM CANCEL) after `resetAfterMs`. Resolves with the
 * status from the response headers or trailers once the stream closes.
 */
export function rawCall(
  session: http2.ClientHttp2Session,
  path: string,
  chunks: Uint8Array[],
  opts: { resetAfterMs?: number; headers?: Record<string, string> } = {},
): Promise<RawCallStatus> {
  return new Promise<RawCallStatus>((resolve) => {
    const req = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      "te": "trailers",
      ...opts.headers,
    });
    const out: RawCallStatus = { details: "" };
    const read = (h: Record<string, unknown>) => {
      if (h["grpc-status"] !== undefined) out.code = Number(h["grpc-status"]);
      if (h["grpc-message"] !== undefined) out.details = decodeURIComponent(String(h["grpc-message"]));
    };
    req.on("response", read);
    req.on("trailers", read);
    req.on("data", () => {});
    req.on("error", () => resolve(out));
    req.on("close", () => resolve(out));
    for (const c of chunks) req.write(Buffer.from(c));
    if (opts.resetAfterMs !== undefined) {
      setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), opts.resetAfterMs);
    } else {
      req.end();
    }
  });
}

/**
 * {@linkcode rawCall} on a connection of its own to `url` (`connect`: TLS trust, client certificate,
 * server name), destroyed afterwards, errors of the session ignored (the status tells). Rejects when the
 * stream has not closed within `timeoutMs`, so a peer that never answers cannot hang a test.
 */
export async function rawCallOnce(
  url: string,
  path: string,
  chunks: Uint8Array[],
  opts: {
    connect?: http2.SecureClientSessionOptions;
    resetAfterMs?: number;
    headers?: Record<string, string>;
    timeoutMs?: number;
  } = {},
): Promise<RawCallStatus> {
  const session = http2.connect(url, opts.connect);
  session.on("error", () => {});
  const timeoutMs = opts.timeoutMs ?? 15_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      rawCall(session, path, chunks, { resetAfterMs: opts.resetAfterMs, headers: opts.headers }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`raw HTTP/2 call to ${path}: no answer within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    session.destroy();
  }
}
