/**
 * Helpers of the hostile-input and fault tests: raw gRPC calls with bytes we choose (grpc-js generic
 * client with identity serializers, so nothing validates what we send), a seeded random source, a
 * protobuf mutator, a real server started the same way for every hostile test, and a real Bootstrap to
 * get a client certificate.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { createCsr, generateKeyPair, type KeyAlgorithm, privateKeyToPem } from "../../src/pki/mod.ts";
import { type CertificateResponse, IdentityClient } from "../../src/proto/mod.ts";
import { rawMethod } from "../../src/testing/raw_method.ts";
import { assertEquals } from "../../src/testing/assert.ts";
import { rawCallOnce, type RawCallStatus } from "../../src/testing/raw_h2_call.ts";
import { localServerArgs, type Proc, readToken, startServer, workspace } from "../relay_e2e_harness.ts";

/** Every RPC of the relay with raw bytes in and out. */
export const RawRelayClient = grpc.makeGenericClientConstructor({
  bootstrap: rawMethod("/meshrelay.relay.v1.Identity/Bootstrap", false),
  renew: rawMethod("/meshrelay.relay.v1.Identity/Renew", false),
  signMeshCa: rawMethod("/meshrelay.relay.v1.Identity/SignMeshCa", false),
  sync: rawMethod("/meshrelay.relay.v1.Relay/Sync", true),
}, "RawRelay");

/** What a raw call ended with. */
export interface RawResult {
  code: number;
  details: string;
  response?: Buffer;
  /** Messages received on a stream. */
  messages?: number;
}

/** A client certificate and key (PEM). */
export interface ClientPair {
  certPem: string;
  keyPem: string;
}

type UnaryRaw = (
  req: Buffer,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (e: grpc.ServiceError | null, r?: Buffer) => void,
) => grpc.ClientUnaryCall;

/** The raw client's shape. */
export type Raw = grpc.Client & {
  bootstrap: UnaryRaw;
  renew: UnaryRaw;
  signMeshCa: UnaryRaw;
  sync: (md: grpc.Metadata, opts: grpc.CallOptions) => grpc.ClientDuplexStream<Buffer, Buffer>;
};

/**
 * A raw client over TLS to `host`:port (default localhost), with or without a client certificate. An IP
 * host is verified as the server certificate's name "localhost".
 */
export function rawClient(port: number, rootPem: string, client?: ClientPair, host = "localhost"): Raw {
  const creds = grpc.credentials.createSsl(
    Buffer.from(rootPem),
    client ? Buffer.from(client.keyPem) : null,
    client ? Buffer.from(client.certPem) : null,
  );
  const { target, options } = channelTo(host, port);
  return new RawRelayClient(target, creds, {
    ...options,
    // Our own connection, not one shared with other clients of the same target.
    "grpc.use_local_subchannel_pool": 1,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
  }) as unknown as Raw;
}

/**
 * The gRPC target for `host`:port, and the channel options that verify any host but localhost as the
 * server certificate's name "localhost".
 */
function channelTo(host: string, port: number): { target: string; options: grpc.ChannelOptions } {
  return {
    target: host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`,
    options: host === "localhost" ? {} : { "grpc.ssl_target_name_override": "localhost" },
  };
}

/** The unary RPCs of the raw client. */
export type UnaryRpc = "bootstrap" | "renew" | "signMeshCa";

/** One unary call with raw bytes. */
export function rawUnary(c: Raw, rpc: UnaryRpc, body: Uint8Array): Promise<RawResult> {
  return new Promise((resolve) => {
    c[rpc](Buffer.from(body), new grpc.Metadata(), { deadline: Date.now() + 20_000 }, (e, r) => {
      if (e) resolve({ code: e.code, details: e.details });
      else resolve({ code: 0, details: "", response: r });
    });
  });
}

/**
 * A Sync stream: writes `messages` (raw bytes each), then half-closes (or cancels when `cancel`),
 * and resolves with the final status. The server may end the stream early; that is a result too.
 */
export function rawSync(
  c: Raw,
  messages: Uint8Array[],
  opts: { cancel?: boolean; deadlineMs?: number } = {},
): Promise<RawResult> {
  return new Promise((resolve) => {
    const s = c.sync(new grpc.Metadata(), { deadline: Date.now() + (opts.deadlineMs ?? 20_000) });
    let received = 0;
    let done = false;
    const finish = (r: RawResult) => {
      if (done) return;
      done = true;
      resolve({ ...r, messages: received });
    };
    s.on("data", () => received++);
    s.on("error", (e: grpc.ServiceError) => finish({ code: e.code, details: e.details }));
    s.on("status", (st: grpc.StatusObject) => finish({ code: st.code, details: st.details }));
    for (const m of messages) s.write(Buffer.from(m));
    if (opts.cancel) {
      setTimeout(() => s.cancel(), 20);
    } else {
      s.end();
    }
  });
}

/**
 * A gRPC call below any gRPC client, on its own HTTP/2 connection (TLS, the client certificate if
 * given): writes `chunks` as they are (length prefixes and all, so they can lie), then ends the stream,
 * or resets it (RST_STREAM CANCEL) after `resetAfterMs`. Resolves with the status the server sent.
 */
export function rawFrames(
  port: number,
  rootPem: string,
  client: ClientPair | undefined,
  path: string,
  chunks: Uint8Array[],
  opts: { resetAfterMs?: number } = {},
): Promise<RawCallStatus> {
  return rawCallOnce(`https://localhost:${port}`, path, chunks, {
    connect: { ca: rootPem, ...(client ? { cert: client.certPem, key: client.keyPem } : {}) },
    resetAfterMs: opts.resetAfterMs,
  });
}

/** Deterministic random numbers (a test's sequence reproduces from its seed). */
export function seeded(
  seed: number,
): { next: () => number; int: (n: number) => number; bytes: (n: number) => Uint8Array } {
  let s = seed >>> 0 || 1;
  const next = () => {
    // xorshift32
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
  const int = (n: number) => Math.floor(next() * n);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => int(256));
  return { next, int, bytes };
}

/** A mutation of `valid`: bit flips, byte changes, truncation, duplication, insertion, or splicing. */
export function mutate(valid: Uint8Array, r: ReturnType<typeof seeded>): Uint8Array {
  const b = Uint8Array.from(valid);
  switch (r.int(6)) {
    case 0: {
      for (let i = 0, n = 1 + r.int(4); i < n && b.length; i++) b[r.int(b.length)] ^= 1 << r.int(8);
      return b;
    }
    case 1: {
      for (let i = 0, n = 1 + r.int(4); i < n && b.length; i++) b[r.int(b.length)] = r.int(256);
      return b;
    }
    case 2:
      return b.subarray(0, r.int(b.length + 1));
    case 3: {
      const at = r.int(b.length + 1);
      return Uint8Array.from([...b.subarray(0, at), ...b.subarray(r.int(at + 1), at), ...b.subarray(at)]);
    }
    case 4: {
      const at = r.int(b.length + 1);
      return Uint8Array.from([...b.subarray(0, at), ...r.bytes(1 + r.int(16)), ...b.subarray(at)]);
    }
    default: {
      // A varint length field made huge: a classic parser trap.
      const at = r.int(b.length + 1);
      return Uint8Array.from([...b.subarray(0, at), 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, ...b.subarray(at)]);
    }
  }
}

/**
 * Bootstraps a client certificate for `cluster` the way an agent does (token + CSR over server TLS),
 * from `host` (default localhost; its address is the peer address the server's limits count).
 */
export async function bootstrapPair(
  port: number,
  rootPem: string,
  token: string,
  cluster: string,
  opts: { algorithm?: KeyAlgorithm; host?: string } = {},
): Promise<ClientPair> {
  const kp = await generateKeyPair(opts.algorithm ?? "ecdsa-p256");
  const csrPem = await createCsr(kp, { dnsNames: [cluster] });
  const { target, options } = channelTo(opts.host ?? "localhost", port);
  const c = new IdentityClient(target, grpc.credentials.createSsl(Buffer.from(rootPem)), options);
  try {
    const r = await new Promise<CertificateResponse>((resolve, reject) =>
      c.bootstrap({ token, cluster, csrPem }, (e, res) => e ? reject(e) : resolve(res))
    );
    return { certPem: r.certificatePem + r.chainPem, keyPem: await privateKeyToPem(kp) };
  } finally {
    c.close();
  }
}

/** Serves every cluster, with a root the server generates in its own store: SignMeshCa can sign. */
const ROOT_TRUST_POLICY = `apiVersion: meshrelay.io/v1alpha1
kind: RootTrustPolicy
metadata: { name: hostile-mesh }
spec:
  mgmtServerCa: { generated: {} }
`;

/** A server started by {@linkcode startHostileServer}, and what a client needs to reach it. */
export interface HostileServer {
  proc: Proc;
  port: number;
  metricsPort: number;
  /** The server's `--secrets-dir`. */
  secrets: string;
  /** The relay's root CA (PEM), to trust the server. */
  rootPem: string;
  /** The shared bootstrap token. */
  token: string;
}

/**
 * Starts a real `meshrelay server` on the workspace `ws` (its declared config, /metrics on, its secrets
 * in `<ws.dir>/secrets`) and waits until it listens. `host` overrides the harness's 127.0.0.1 (`::` gives
 * a test a second peer address); `args` go last. With `rootTrustPolicy`, a RootTrustPolicy with a
 * generated root is added to the config first, so SignMeshCa can sign. The caller stops the process; one
 * it cannot use (no secrets, no /metrics) is killed here.
 */
export async function startHostileServer(
  ws: { dir: string; config: string },
  opts: { name: string; args?: string[]; host?: string; rootTrustPolicy?: boolean },
): Promise<HostileServer> {
  if (opts.rootTrustPolicy) await Deno.writeTextFile(`${ws.config}/root-trust.yaml`, ROOT_TRUST_POLICY);
  const secrets = `${ws.dir}/secrets`;
  const { proc, port, metricsPort } = await startServer([
    ...(opts.host ? ["--host", opts.host] : []),
    ...localServerArgs(ws.config, { metrics: true }),
    "--secrets-dir",
    secrets,
    ...opts.args ?? [],
  ], opts.name);
  try {
    if (metricsPort === undefined) throw new Error(`${opts.name}: no /metrics port in its listening line`);
    const rootPem = await secretText(secrets, "relay-root-tls-secret", "ca.crt");
    const token = await readToken(secrets);
    return { proc, port, metricsPort, secrets, rootPem, token };
  } catch (e) {
    await proc.kill9();
    throw e;
  }
}

/** A {@linkcode HostileServer} run by {@linkcode withHostileServer}. */
export interface HostileRun extends HostileServer {
  /** The workspace folder (the server's secrets are in it, under `secrets`). */
  dir: string;
  /** Closed when the run ends, pass or fail. */
  held: { close(): void }[];
}

/**
 * Runs `body` against a server {@linkcode startHostileServer} starts (`opts.name` also names its
 * workspace). When `body` succeeds, the server must still run and then exit 0 on SIGTERM; pass or fail,
 * `held` is closed, the server stopped and the workspace removed, and a failure of `body` is what the
 * test reports.
 */
export async function withHostileServer(
  opts: Parameters<typeof startHostileServer>[1],
  body: (s: HostileRun) => Promise<void>,
): Promise<void> {
  const ws = await workspace(opts.name);
  let server: HostileServer;
  try {
    server = await startHostileServer(ws, opts);
  } catch (e) {
    await ws.cleanup();
    throw e;
  }
  const held: { close(): void }[] = [];
  let passed = false;
  try {
    await body({ ...server, dir: ws.dir, held });
    assertEquals(server.proc.exited, undefined, `${opts.name}: still running`);
    passed = true;
  } finally {
    for (const h of held) {
      try {
        h.close();
      } catch { /* gone */ }
    }
    const st = await server.proc.stop("SIGTERM");
    await ws.cleanup();
    // Only after a pass: a failed body's own error is the one to report.
    if (passed) {
      assertEquals(st.code, 0, `${opts.name} exit ${st.code}\n${server.proc.raw.slice(-10).join("\n")}`);
    }
  }
}

/** Reads one key of a secret in a folder laid out as `certs init --out` writes it. */
export async function secretText(secretsDir: string, secret: string, key: string): Promise<string> {
  return (await Deno.readTextFile(`${secretsDir}/${secret}/${key}`)).trim();
}

/** `p`, or a rejection naming `what` after `ms` (tests must end even when a peer never answers). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/** Whether this host has an IPv6 loopback (tests that need a second peer address skip without one). */
export const hasIpv6Loopback = (() => {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
})();
