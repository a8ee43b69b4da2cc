/**
 * Hostile bytes on every RPC of a real `meshrelay server` process (mTLS mode, loopback): random and
 * mutated protobuf, oversized messages, truncated and abandoned streams, with and without a client
 * certificate. Properties checked after every call and at the end:
 *
 * - the answer is one of the statuses that RPC may give for bad input, never INTERNAL (bytes that are
 *   not protobuf are refused by our handlers with INVALID_ARGUMENT, see src/relay/tolerant_decoding.ts);
 * - nothing is signed that should not be: any certificate handed out names exactly one registered
 *   cluster (the caller's, for Renew) and is a client certificate;
 * - each refused Identity call that reached our handler logged one warning line with a reason; no log
 *   line carries PEM or the token; no error-level line from an unexpected failure;
 * - the process is alive and still serves a real agent flow (Bootstrap + Sync Welcome), and exits 0
 *   on SIGTERM.
 *
 * The random sequences are seeded, so a failure reproduces.
 */
import { Buffer } from "node:buffer";
import { GrpcStatus } from "../src/errors.ts";
import { dnsNamesOf, isCa, parseCertificates } from "../src/pki/mod.ts";
import { AgentMessageCodec, IdentityService } from "../src/proto/mod.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";
import {
  localServerArgs,
  metricValue,
  rawSyncFirstMessage,
  startServer,
  workspace,
} from "./relay_e2e_harness.ts";
import {
  bootstrapPair,
  mutate,
  rawClient,
  type RawResult,
  rawSync,
  rawUnary,
  secretText,
  seeded,
  withTimeout,
} from "./support/hostile.ts";

const REGISTERED = new Set(["cluster-1", "cluster-2"]);
const MAX = 65536;

function describe(r: RawResult): string {
  return `${r.code} ${JSON.stringify(r.details)}`;
}

/** The status is one of `allowed` (never INTERNAL: bad input is the caller's fault, not ours). */
function checkStatus(r: RawResult, allowed: number[], what: string): void {
  assert(allowed.includes(r.code), `${what}: unexpected status ${describe(r)}`);
}

/** A certificate handed out: exactly one DNS SAN, a registered cluster (`only` if given), not a CA. */
function checkIssued(r: RawResult, what: string, only?: string): void {
  const resp = IdentityService.bootstrap.responseDeserialize(r.response!);
  const [cert] = parseCertificates(resp.certificatePem, what);
  const names = dnsNamesOf(cert);
  assertEquals(names.length, 1, `${what}: SANs ${names}`);
  assert(REGISTERED.has(names[0]), `${what}: issued for unregistered ${names[0]}`);
  if (only) assertEquals(names[0], only, `${what}: issued for another cluster`);
  assert(!isCa(cert), `${what}: issued a CA certificate`);
}

Deno.test("hostile RPC input: random, mutated, oversized and truncated calls on a real server", async (t) => {
  const ws = await workspace("hostile-rpc");
  const secrets = `${ws.dir}/secrets`;
  const { proc, port, metricsPort } = await startServer([
    ...localServerArgs(ws.config, { metrics: true }),
    "--secrets-dir",
    secrets,
    "--max-message-bytes",
    String(MAX),
    // Fuzzing sends thousands of failures from one address; the limiter has its own test.
    "--bootstrap-failure-burst",
    "1000000",
  ], "hostile-server");
  const clients: { close(): void }[] = [];
  try {
    const rootPem = await secretText(secrets, "relay-root-tls-secret", "ca.crt");
    const token = await secretText(secrets, "relay-identity-token-secret", "token");
    const pair1 = await bootstrapPair(port, rootPem, token, "cluster-1");
    const anon = rawClient(port, rootPem);
    const authed = rawClient(port, rootPem, pair1);
    clients.push(anon, authed);
    let handled = 0; // refused Identity calls (each must log one line)
    let syncRefused = 0; // Sync streams refused by our handler (each must log one warning)
    let syncCancelled = 0;
    const countHandled = (r: RawResult) => {
      if (r.code !== GrpcStatus.OK) handled++;
    };
    const issuedBefore = await metricValue(metricsPort!, "meshrelay_client_certificates_issued_total");

    await t.step("Bootstrap: random bytes, no client certificate", async () => {
      const r = seeded(1);
      for (let i = 0; i < 150; i++) {
        const res = await rawUnary(anon, "bootstrap", r.bytes(r.int(400)));
        checkStatus(res, [
          GrpcStatus.INVALID_ARGUMENT,
          GrpcStatus.UNAUTHENTICATED,
          GrpcStatus.PERMISSION_DENIED,
        ], `random #${i}`);
        countHandled(res);
      }
    });

    await t.step("Bootstrap: mutations of a request with a wrong token are never granted", async () => {
      const { createCsr, generateKeyPair } = await import("../src/pki/mod.ts");
      const csrPem = await createCsr(await generateKeyPair(), { dnsNames: ["cluster-2"] });
      const valid = IdentityService.bootstrap.requestSerialize({
        token: token.slice(0, -2) + (token.endsWith("AA") ? "BB" : "AA"),
        cluster: "cluster-2",
        csrPem,
      });
      const r = seeded(2);
      for (let i = 0; i < 150; i++) {
        const res = await rawUnary(anon, "bootstrap", mutate(valid, r));
        checkStatus(res, [
          GrpcStatus.INVALID_ARGUMENT,
          GrpcStatus.UNAUTHENTICATED,
          GrpcStatus.PERMISSION_DENIED,
        ], `mutated wrong-token #${i}`);
        countHandled(res);
      }
    });

    await t.step("Bootstrap: mutations of a valid request grant only a registered cluster", async () => {
      const { createCsr, generateKeyPair } = await import("../src/pki/mod.ts");
      const csrPem = await createCsr(await generateKeyPair(), { dnsNames: ["cluster-2"] });
      const valid = IdentityService.bootstrap.requestSerialize({ token, cluster: "cluster-2", csrPem });
      const r = seeded(3);
      for (let i = 0; i < 150; i++) {
        const res = await rawUnary(anon, "bootstrap", mutate(valid, r));
        checkStatus(res, [
          GrpcStatus.OK,
          GrpcStatus.INVALID_ARGUMENT,
          GrpcStatus.UNAUTHENTICATED,
          GrpcStatus.PERMISSION_DENIED,
        ], `mutated #${i}`);
        if (res.code === GrpcStatus.OK) checkIssued(res, `mutated #${i}`, "cluster-2");
        countHandled(res);
      }
    });

    await t.step("Renew: random and mutated bytes, with and without a client certificate", async () => {
      const r = seeded(4);
      const { createCsr, generateKeyPair } = await import("../src/pki/mod.ts");
      const other = IdentityService.renew.requestSerialize({
        csrPem: await createCsr(await generateKeyPair(), { dnsNames: ["cluster-2"] }),
      });
      const own = IdentityService.renew.requestSerialize({
        csrPem: await createCsr(await generateKeyPair(), { dnsNames: ["cluster-1"] }),
      });
      for (let i = 0; i < 100; i++) {
        const body = i % 3 === 0 ? r.bytes(r.int(400)) : mutate(i % 3 === 1 ? other : own, r);
        const a = await rawUnary(anon, "renew", body);
        checkStatus(a, [GrpcStatus.UNAUTHENTICATED, GrpcStatus.INVALID_ARGUMENT], `anonymous renew #${i}`);
        countHandled(a);
        const b = await rawUnary(authed, "renew", body);
        checkStatus(b, [
          GrpcStatus.OK,
          GrpcStatus.INVALID_ARGUMENT,
          GrpcStatus.PERMISSION_DENIED,
        ], `renew #${i}`);
        // The caller is cluster-1: whatever the CSR asks, only cluster-1 may come back.
        if (b.code === GrpcStatus.OK) checkIssued(b, `renew #${i}`, "cluster-1");
        countHandled(b);
      }
      // Not fuzz: a well-formed CSR for another cluster over cluster-1's certificate is refused.
      const steal = await rawUnary(authed, "renew", other);
      assertEquals(steal.code, GrpcStatus.PERMISSION_DENIED, describe(steal));
      countHandled(steal);
    });

    await t.step("Sync: random and mutated messages, with and without a client certificate", async () => {
      const r = seeded(5);
      const valid = [
        AgentMessageCodec.encode(AgentMessageCodec.fromPartial({ hello: { agentVersion: "fuzz" } })).finish(),
        AgentMessageCodec.encode(AgentMessageCodec.fromPartial({
          discovery: {
            generation: 1,
            upserts: [{ key: "v1|ConfigMap|apps|x", version: "sha256:00", objectJson: new Uint8Array(20) }],
            deletes: ["v1|ConfigMap|apps|y"],
            last: true,
          },
        })).finish(),
        AgentMessageCodec.encode(AgentMessageCodec.fromPartial({
          status: { generation: 1, statuses: [{ key: "k", state: "applied", message: "" }] },
        })).finish(),
      ];
      for (let i = 0; i < 60; i++) {
        const msgs = Array.from(
          { length: 1 + r.int(4) },
          () => r.int(3) === 0 ? r.bytes(r.int(300)) : mutate(valid[r.int(valid.length)], r),
        );
        const a = await rawSync(anon, msgs);
        checkStatus(a, [GrpcStatus.UNAUTHENTICATED], `anonymous sync #${i}`);
        syncRefused++;
        const b = await rawSync(authed, msgs, { cancel: i % 5 === 0 });
        checkStatus(b, [
          GrpcStatus.OK,
          GrpcStatus.CANCELLED,
          GrpcStatus.INVALID_ARGUMENT,
          GrpcStatus.RESOURCE_EXHAUSTED,
        ], `sync #${i}`);
        if (b.code === GrpcStatus.INVALID_ARGUMENT) syncRefused++;
        // We cancelled it: the server may have refused it just before noticing.
        if (b.code === GrpcStatus.CANCELLED) syncCancelled++;
      }
    });

    await t.step("oversized messages are refused with RESOURCE_EXHAUSTED", async () => {
      const big = IdentityService.bootstrap.requestSerialize({
        token: "t".repeat(MAX * 2),
        cluster: "cluster-2",
        csrPem: "",
      });
      const a = await rawUnary(anon, "bootstrap", big);
      assertEquals(a.code, GrpcStatus.RESOURCE_EXHAUSTED, describe(a));
      const b = await rawSync(authed, [
        AgentMessageCodec.encode(AgentMessageCodec.fromPartial({
          discovery: {
            generation: 1,
            upserts: [{ key: "v1|ConfigMap|apps|big", version: "v", objectJson: new Uint8Array(MAX * 2) }],
            deletes: [],
            last: true,
          },
        })).finish(),
      ]);
      assertEquals(b.code, GrpcStatus.RESOURCE_EXHAUSTED, describe(b));
    });

    await t.step("truncated gRPC frames and abandoned HTTP/2 streams", async () => {
      const http2 = await import("node:http2");
      const statuses: string[] = [];
      for (const [i, variant] of ["short-body", "header-only", "reset"].entries()) {
        const session = http2.connect(`https://localhost:${port}`, {
          ca: rootPem,
          cert: pair1.certPem,
          key: pair1.keyPem,
        });
        session.on("error", () => {});
        const status = await withTimeout(
          new Promise<string>((resolve) => {
            const req = session.request({
              ":method": "POST",
              ":path": i === 0 ? "/meshrelay.relay.v1.Identity/Bootstrap" : "/meshrelay.relay.v1.Relay/Sync",
              "content-type": "application/grpc",
              "te": "trailers",
            });
            let grpcStatus = "";
            req.on("response", (h) => grpcStatus = String(h["grpc-status"] ?? grpcStatus));
            req.on("trailers", (h) => grpcStatus = String(h["grpc-status"] ?? grpcStatus));
            req.on("error", () => resolve(grpcStatus || "stream error"));
            req.on("close", () => resolve(grpcStatus || "closed"));
            req.on("data", () => {});
            // A frame header announcing 1000 bytes, then fewer (or none), then the end of the stream.
            const head = Buffer.from([0, 0, 0, 0x03, 0xe8]);
            if (variant === "short-body") req.end(Buffer.concat([head, Buffer.alloc(10)]));
            else if (variant === "header-only") req.end(head.subarray(0, 3));
            else {
              req.write(head);
              setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), 20);
            }
          }),
          15_000,
          `truncated ${variant}`,
        ).finally(() => session.destroy());
        statuses.push(`${variant}: ${status}`);
        // A unary call whose only message is cut short must not be served.
        if (variant === "short-body") assert(status !== String(GrpcStatus.OK), `${variant}: ${status}`);
      }
    });

    await t.step("the server still serves a real agent, and it logged each refusal once", async () => {
      assertEquals(proc.exited, undefined, "server process still running");
      const pair2 = await bootstrapPair(port, rootPem, token, "cluster-2");
      const first = await rawSyncFirstMessage({ port, rootPem, client: pair2 });
      assertEquals(first.welcome, "cluster-2", JSON.stringify(first));
      const refusals = proc.lines.filter((l) => l.msg === "bootstrap refused" || l.msg === "renew refused");
      assertEquals(refusals.length, handled, "one warning line per refused Identity call");
      for (const l of refusals) assert(typeof l.reason === "string" && typeof l.error === "string");
      const syncWarnings = proc.lines.filter((l) => l.msg === "sync stream refused");
      assert(
        syncWarnings.length >= syncRefused && syncWarnings.length <= syncRefused + syncCancelled,
        `one warning line per refused Sync stream: ${syncWarnings.length} lines, ${syncRefused} refused, ` +
          `${syncCancelled} cancelled by us`,
      );
      const unexpected = proc.lines.filter((l) =>
        l.msg === "sync stream failed" || l.msg === "identity call failed unexpectedly"
      );
      assertEquals(unexpected, [], "no unexpected failures");
      for (const raw of proc.raw) {
        assert(
          !raw.includes("-----BEGIN"),
          `no PEM in logs: ${raw.replace(/-----BEGIN[^]*/, "<PEM…>").slice(0, 300)}`,
        );
        assert(!raw.includes(token), "no token in logs");
        assert(!/^\s+at /.test(raw), `no stack traces: ${raw}`);
      }
      // Only the deliberate bootstraps (2) and any mutated-but-valid ones were issued, each checked above.
      const issued = await metricValue(metricsPort!, "meshrelay_client_certificates_issued_total");
      assert(issued >= issuedBefore + 1, `issued ${issued}`);
    });
  } finally {
    for (const c of clients) c.close();
    const st = await proc.stop("SIGTERM");
    await ws.cleanup();
    assertEquals(st.code, 0, `server exit: ${JSON.stringify(st)}\n${proc.raw.slice(-10).join("\n")}`);
  }
});
