/**
 * Resource exhaustion against a real `meshrelay server` process, with its limits turned down so the
 * test is quick (`--max-connections-per-peer`, `--handshake-timeout`, `--max-streams-per-connection`,
 * `--connection-idle-timeout`):
 *
 * - connections that never finish the TLS handshake are closed after the handshake timeout;
 * - connections beyond the per-peer limit are closed at accept, counted in
 *   meshrelay_connections_refused_total and logged once, not once per connection;
 * - half-open calls (HTTP/2 streams that never send their request) are bounded per connection, and a
 *   cluster's half-open Sync streams are bounded to one (a new stream replaces the old);
 * - idle connections are closed;
 * - meanwhile a real agent from another address (::1) bootstraps and gets its Welcome, and the
 *   process exits 0 at the end.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import http2 from "node:http2";
import { GrpcStatus } from "../src/errors.ts";
import { createCsr, generateKeyPair, privateKeyToPem } from "../src/pki/mod.ts";
import { AgentMessageCodec, IdentityService, ServerMessageCodec } from "../src/proto/mod.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";
import { localServerArgs, metricValue, startServer, waitFor, workspace } from "./relay_e2e_harness.ts";
import { type ClientPair, rawClient, rawUnary, secretText, withTimeout } from "./support/hostile.ts";

const PER_PEER = 40;
const STREAMS = 10;

const hasIpv6Loopback = (() => {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
})();

/** A TCP connection that sends nothing; `closed` resolves when the server closes it. */
async function silentConnection(port: number): Promise<{ conn: Deno.TcpConn; closed: Promise<void> }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const closed = (async () => {
    const buf = new Uint8Array(1024);
    try {
      while ((await conn.read(buf)) !== null) { /* the server's alert, if any */ }
    } catch { /* reset */ }
  })();
  return { conn, closed };
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* gone */ }
}

Deno.test({
  name: "resource exhaustion: handshake timeout, per-peer connections, half-open streams, idle connections",
  ignore: !hasIpv6Loopback,
  fn: async (t) => {
    const ws = await workspace("hostile-exhaustion");
    const secrets = `${ws.dir}/secrets`;
    const { proc, port, metricsPort } = await startServer([
      "--host",
      "::",
      ...localServerArgs(ws.config, { metrics: true }),
      "--secrets-dir",
      secrets,
      "--max-connections-per-peer",
      String(PER_PEER),
      "--handshake-timeout",
      "1500ms",
      "--max-streams-per-connection",
      String(STREAMS),
      "--connection-idle-timeout",
      "2s",
    ], "exhaustion-server");
    const held: { close(): void }[] = [];
    try {
      const rootPem = await secretText(secrets, "relay-root-tls-secret", "ca.crt");
      const token = await secretText(secrets, "relay-identity-token-secret", "token");
      // A real agent from another address than the flood's (127.0.0.1): bootstrap, then its Welcome.
      const realAgentWorks = async (cluster: string) => {
        const pair = await bootstrapVia6(port, rootPem, token, cluster);
        assertEquals(await welcomeVia6(port, rootPem, pair), cluster);
      };

      await t.step("stalled TLS handshakes are closed after the timeout; agents still served", async () => {
        const silent = await Promise.all(Array.from({ length: PER_PEER - 5 }, () => silentConnection(port)));
        for (const s of silent) held.push(s.conn);
        await realAgentWorks("cluster-1");
        // Bounded wait for the server to give up on every one of them (1.5 s each, in parallel).
        await Promise.race([
          Promise.all(silent.map((s) => s.closed)),
          new Promise((_, rej) => setTimeout(() => rej(new Error("stalled handshakes not closed")), 20_000)),
        ]);
        await waitFor(
          "open connections drop",
          async () => (await metricValue(metricsPort!, "meshrelay_connections_open")) <= 5,
        );
        // Closed connections stay counted as accepted (what docs/relay.md tells operators to watch).
        const accepted = await metricValue(metricsPort!, "meshrelay_connections_accepted_total");
        assert(accepted >= silent.length + 1, `accepted ${accepted}, expected at least ${silent.length + 1}`);
      });

      await t.step("connections beyond the per-peer limit are closed at accept, logged once", async () => {
        const before = proc.lines.filter((l) => l.msg.startsWith("connection refused: limit reached")).length;
        const flood = await Promise.all(Array.from({ length: PER_PEER + 25 }, () => silentConnection(port)));
        for (const s of flood) held.push(s.conn);
        await waitFor(
          "refusals counted",
          async () =>
            (await metricValue(metricsPort!, "meshrelay_connections_refused_total", { limit: "per_peer" })) >=
              25,
        );
        await realAgentWorks("cluster-2");
        const warned = proc.lines.filter((l) => l.msg.startsWith("connection refused: limit reached")).length;
        assertEquals(warned - before, 1, "one warning line for the flooding peer");
        for (const s of flood) closeQuietly(s.conn);
        await Promise.all(flood.map((s) => s.closed));
      });

      await t.step("half-open calls are bounded per connection; the server keeps serving", async () => {
        const pair = await bootstrapVia6(port, rootPem, token, "cluster-1");
        const session = http2.connect(`https://localhost:${port}`, {
          ca: rootPem,
          cert: pair.certPem,
          key: pair.keyPem,
        });
        session.on("error", () => {});
        held.push(session);
        await withTimeout(
          new Promise<void>((r) => session.once("remoteSettings", () => r())),
          15_000,
          "HTTP/2 settings",
        );
        assertEquals(session.remoteSettings.maxConcurrentStreams, STREAMS);
        const streams: http2.ClientHttp2Stream[] = [];
        for (let i = 0; i < STREAMS + 5; i++) {
          const s = session.request({
            ":method": "POST",
            ":path": "/meshrelay.relay.v1.Identity/Bootstrap",
            "content-type": "application/grpc",
            "te": "trailers",
          });
          s.on("error", () => {});
          // Headers only: the request message never comes.
          streams.push(s);
        }
        await realAgentWorks("cluster-2");
        for (const s of streams) s.close(http2.constants.NGHTTP2_CANCEL);
      });

      await t.step("a cluster's half-open Sync streams are bounded to one", async () => {
        const pair = await bootstrapVia6(port, rootPem, token, "cluster-1");
        const client = rawClient(port, rootPem, pair);
        held.push(client);
        const ends: Promise<number>[] = [];
        for (let i = 0; i < 4; i++) {
          const s = client.sync(new grpc.Metadata(), {});
          let got = false;
          s.on("data", () => got = true);
          ends.push(
            new Promise((r) => {
              s.on("error", (e: { code: number }) => r(e.code));
              s.on("status", (st: { code: number }) => r(st.code));
            }),
          );
          // Never a Hello: half-open. Wait for its Welcome so the order of arrival is known.
          await waitFor(`welcome ${i}`, () => got, 15_000);
        }
        const first3 = await withTimeout(Promise.all(ends.slice(0, 3)), 15_000, "replaced streams");
        assertEquals(first3, [GrpcStatus.ABORTED, GrpcStatus.ABORTED, GrpcStatus.ABORTED]);
      });

      await t.step("idle connections are closed", async () => {
        const session = http2.connect(`https://localhost:${port}`, { ca: rootPem });
        session.on("error", () => {});
        held.push(session);
        await withTimeout(
          new Promise<void>((r) => session.once("remoteSettings", () => r())),
          15_000,
          "HTTP/2 settings",
        );
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error("idle connection not closed")), 20_000);
          session.once("goaway", () => {
            clearTimeout(t);
            resolve();
          });
          session.once("close", () => {
            clearTimeout(t);
            resolve();
          });
        });
      });

      assertEquals(proc.exited, undefined, "server still running");
      assertEquals(
        proc.lines.filter((l) => l.level === "error"),
        [],
        "no error lines",
      );
    } finally {
      for (const h of held) closeQuietly(h);
      const st = await proc.stop("SIGTERM");
      await ws.cleanup();
      assertEquals(st.code, 0, proc.raw.slice(-10).join("\n"));
    }
  },
});

/** Bootstrap over ::1, another peer address than the flood's. */
async function bootstrapVia6(
  port: number,
  rootPem: string,
  token: string,
  cluster: string,
): Promise<ClientPair> {
  const kp = await generateKeyPair();
  const c = rawClient(port, rootPem, undefined, "::1");
  try {
    const r = await rawUnary(
      c,
      "bootstrap",
      IdentityService.bootstrap.requestSerialize({
        token,
        cluster,
        csrPem: await createCsr(kp, { dnsNames: [cluster] }),
      }),
    );
    assertEquals(r.code, GrpcStatus.OK, r.details);
    const resp = IdentityService.bootstrap.responseDeserialize(Buffer.from(r.response!));
    return { certPem: resp.certificatePem + resp.chainPem, keyPem: await privateKeyToPem(kp) };
  } finally {
    c.close();
  }
}

/** Opens a Sync stream over ::1 with `pair`, sends Hello, and returns the cluster its Welcome names. */
async function welcomeVia6(port: number, rootPem: string, pair: ClientPair): Promise<string> {
  const c = rawClient(port, rootPem, pair, "::1");
  try {
    return await new Promise<string>((resolve, reject) => {
      const s = c.sync(new grpc.Metadata(), { deadline: Date.now() + 15_000 });
      s.on("data", (b: Buffer) => {
        const m = ServerMessageCodec.decode(b);
        if (m.welcome) {
          resolve(m.welcome.cluster);
          s.cancel();
        }
      });
      s.on("error", (e: grpc.ServiceError) => reject(new Error(`sync: ${e.code} ${e.details}`)));
      s.write(
        Buffer.from(
          AgentMessageCodec.encode(AgentMessageCodec.fromPartial({ hello: { agentVersion: "t" } })).finish(),
        ),
      );
    });
  } finally {
    c.close();
  }
}
