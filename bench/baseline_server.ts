/**
 * The baseline of `deno task bench:relay`: a bare grpc-js mTLS server in Deno with one bidi method
 * and no meshrelay logic. It holds whatever streams clients open (greeting each with one message, so
 * a client knows its stream is established), broadcasts a payload to all of them on command, and
 * counts what clients send. Driven by JSON lines on stdin, answering on stdout.
 *
 * Usage: deno run -A bench/baseline_server.ts --port P --cert F --key F --ca F
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { out, serveCommands } from "./command_loop.ts";

const now = (): number => performance.timeOrigin + performance.now();

function arg(name: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  if (i < 0 || !Deno.args[i + 1]) throw new Error(`--${name} is required`);
  return Deno.args[i + 1];
}

const identity = (b: Buffer) => b;
const streams = new Set<grpc.ServerDuplexStream<Buffer, Buffer>>();
let received = 0;
let receivedBytes = 0;

const server = new grpc.Server({ "grpc.keepalive_time_ms": 60_000 });
server.addService({
  stream: {
    path: "/bench.Baseline/Stream",
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
}, {
  stream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    streams.add(call);
    const gone = () => streams.delete(call);
    call.on("data", (d: Buffer) => {
      received++;
      receivedBytes += d.length;
    });
    call.on("error", gone);
    call.on("cancelled", gone);
    call.on("end", () => {
      gone();
      call.end();
    });
    call.write(Buffer.from("hello"));
  },
});

const creds = grpc.ServerCredentials.createSsl(
  Buffer.from(Deno.readTextFileSync(arg("ca"))),
  [{
    cert_chain: Buffer.from(Deno.readTextFileSync(arg("cert"))),
    private_key: Buffer.from(Deno.readTextFileSync(arg("key"))),
  }],
  true,
);
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync(`127.0.0.1:${arg("port")}`, creds, (e, p) => e ? reject(e) : resolve(p))
);

out({ event: "ready", port, pid: Deno.pid });

// deno-lint-ignore no-explicit-any
async function handle(c: Record<string, any>): Promise<Record<string, unknown>> {
  switch (c.cmd) {
    case "broadcast": {
      // Same size as the relay's message for one changed object; the stamp leads so clients find it.
      const head = `${c.stamp}|`;
      const payload = Buffer.alloc(Math.max(head.length, Number(c.bytes ?? 1024)), 120);
      payload.write(head, 0, "utf8");
      // `count` messages per stream, written back to back (bench:message-size: many small vs one large).
      const count = Number(c.count ?? 1);
      const t0 = now();
      for (const s of streams) for (let k = 0; k < count; k++) s.write(payload);
      return { t0, t1: now(), streams: streams.size };
    }
    case "memory":
      return { ...Deno.memoryUsage() };
    case "counts":
      return { streams: streams.size, received, receivedBytes, t: now() };
    case "waitReceived": {
      const want = Number(c.count);
      const end = now() + Number(c.timeoutMs ?? 60_000);
      while (received < want && now() < end) await new Promise((r) => setTimeout(r, 10));
      return { complete: received >= want, received, t: now() };
    }
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

await serveCommands(handle);
server.forceShutdown();
