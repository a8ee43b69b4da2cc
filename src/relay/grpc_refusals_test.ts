/**
 * The refusal interceptor on a real grpc-js server (127.0.0.1, plaintext), fed raw HTTP/2 so the input
 * can be what no grpc client sends: each unary call grpc-js (or the interceptor) refuses logs exactly one
 * line with the method, peer, code and grpc-js's details; calls our handler answers, and streaming
 * methods, log none.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { GrpcStatus } from "../errors.ts";
import { memoryLogger } from "../log.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import {
  EXTRA_REQUEST_DETAILS,
  MISSING_REQUEST_DETAILS,
  refusalLogInterceptor,
  REFUSED_BEFORE_HANDLER,
} from "./grpc_refusals.ts";
import { rawMethod } from "../testing/raw_method.ts";
import { rawCallOnce } from "../testing/raw_h2_call.ts";

const MAX = 1024;
const SERVICE = { echo: rawMethod("/t.T/Echo", false), chat: rawMethod("/t.T/Chat", true) };

/** One gRPC frame (uncompressed) around `body`. */
function frame(body: Uint8Array, announced = body.length): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(announced, 1);
  return Buffer.concat([head, body]);
}

Deno.test("refusalLogInterceptor: one line per unary call refused before its handler", async (t) => {
  const log = memoryLogger();
  const server = new grpc.Server({
    "grpc.max_receive_message_length": MAX,
    interceptors: [refusalLogInterceptor(log)],
  });
  server.addService(SERVICE, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const text = call.request.toString();
      if (text === "slow") setTimeout(() => cb(null, call.request), 1000);
      else if (text === "bad") cb({ code: GrpcStatus.INVALID_ARGUMENT, details: "handler says no" });
      else cb(null, call.request);
    },
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on("data", (m: Buffer) => call.write(m));
      call.on("end", () => call.end());
    },
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => e ? rej(e) : res(p))
  );
  const msg = (s: string) => frame(Buffer.from(s));
  const cases: {
    name: string;
    path?: string;
    chunks: Buffer[];
    reset?: boolean;
    headers?: Record<string, string>;
    code?: number;
    details?: RegExp;
    /** Level of the one line logged; absent: no line. */
    line?: "warn" | "debug";
    /** The code in that line, when the client cannot read it (default: `code`). */
    lineCode?: number;
  }[] = [
    { name: "one whole message: the handler answers, no line", chunks: [msg("hi")], code: GrpcStatus.OK },
    {
      name: "the handler refuses: its status, no line (it logs its own)",
      chunks: [msg("bad")],
      code: GrpcStatus.INVALID_ARGUMENT,
      details: /^handler says no$/,
    },
    {
      name: "a message over the limit: grpc-js's RESOURCE_EXHAUSTED, one line",
      chunks: [frame(new Uint8Array(MAX + 1))],
      code: GrpcStatus.RESOURCE_EXHAUSTED,
      details: /larger than max/,
      line: "warn",
    },
    {
      name: "headers only, no message: INVALID_ARGUMENT, one line",
      chunks: [],
      code: GrpcStatus.INVALID_ARGUMENT,
      details: new RegExp(`^${MISSING_REQUEST_DETAILS}$`),
      line: "warn",
    },
    {
      name: "a frame header cut short: INVALID_ARGUMENT, one line",
      chunks: [Buffer.from([0, 0, 0])],
      code: GrpcStatus.INVALID_ARGUMENT,
      details: new RegExp(`^${MISSING_REQUEST_DETAILS}$`),
      line: "warn",
    },
    {
      name: "a body shorter than its length prefix: INVALID_ARGUMENT, one line",
      chunks: [frame(new Uint8Array(10), 1000)],
      code: GrpcStatus.INVALID_ARGUMENT,
      details: new RegExp(`^${MISSING_REQUEST_DETAILS}$`),
      line: "warn",
    },
    {
      name: "two messages on a unary call: INVALID_ARGUMENT, one line",
      chunks: [msg("a"), msg("b")],
      code: GrpcStatus.INVALID_ARGUMENT,
      details: new RegExp(`^${EXTRA_REQUEST_DETAILS}$`),
      line: "warn",
    },
    {
      name: "a compression grpc-js does not support: its UNIMPLEMENTED, one line",
      chunks: [Buffer.concat([Buffer.from([1]), frame(Buffer.from("x")).subarray(1)])],
      headers: { "grpc-encoding": "snappy" },
      code: grpc.status.UNIMPLEMENTED,
      details: /unsupported encoding/,
      line: "warn",
    },
    {
      name: "the client's deadline passes: DEADLINE_EXCEEDED, one debug line",
      chunks: [msg("slow")],
      headers: { "grpc-timeout": "100m" },
      code: GrpcStatus.DEADLINE_EXCEEDED,
      line: "debug",
    },
    {
      // Under Deno the server sees the stream end before the reset (grpc_refusals.ts): cut short.
      name: "the client resets the stream mid-message: it reads no status, one line",
      chunks: [frame(new Uint8Array(5), 9)],
      reset: true,
      line: "warn",
      lineCode: GrpcStatus.INVALID_ARGUMENT,
    },
    {
      name: "a streaming method: grpc-js's status, no line (streams are not wrapped)",
      path: "/t.T/Chat",
      chunks: [frame(new Uint8Array(MAX + 1))],
      code: GrpcStatus.RESOURCE_EXHAUSTED,
    },
  ];
  try {
    for (const c of cases) {
      await t.step(c.name, async () => {
        const from = log.lines.length;
        const path = c.path ?? "/t.T/Echo";
        const r = await rawCallOnce(`http://127.0.0.1:${port}`, path, c.chunks, {
          headers: c.headers,
          resetAfterMs: c.reset ? 50 : undefined,
        });
        assertEquals(r.code, c.code, `status ${r.code} ${JSON.stringify(r.details)}`);
        if (c.details) assert(c.details.test(r.details), r.details);
        // A line for a reset or slow call would come after the client saw the end: give it the time.
        await new Promise((res) => setTimeout(res, c.reset || c.line === "debug" ? 1200 : 20));
        const lines = log.lines.slice(from).filter((l) => l.msg === REFUSED_BEFORE_HANDLER);
        if (!c.line) {
          assertEquals(lines, []);
          return;
        }
        assertEquals(lines.length, 1, JSON.stringify(lines));
        const [l] = lines;
        assertEquals([l.level, l.method, l.code], [c.line, path, c.lineCode ?? c.code]);
        // Read when the call starts: known even for a stream reset before it was refused.
        assertEquals(l.peer, "127.0.0.1");
        if (!c.reset) assertEquals(l.error, r.details);
      });
    }
    await t.step("streaming methods get the call itself back: no per-stream object", () => {
      const call = { sendStatus() {} } as unknown as grpc.ServerInterceptingCallInterface;
      const out = refusalLogInterceptor(log)({ ...SERVICE.chat } as never, call);
      assert((out as unknown) === call);
    });
  } finally {
    server.forceShutdown();
  }
});
