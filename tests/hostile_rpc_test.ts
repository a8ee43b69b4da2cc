/**
 * Hostile bytes on every RPC of a real `meshrelay server` process (mTLS mode, loopback): random and
 * mutated protobuf, oversized messages, truncated and abandoned streams, with and without a client
 * certificate. Properties checked after every call and at the end:
 *
 * - the answer is one of the statuses that RPC may give for bad input, never INTERNAL (bytes that are
 *   not protobuf are refused by our handlers with INVALID_ARGUMENT, see src/relay/tolerant_decoding.ts);
 *   a truncated or reset stream gets the status its RPC must give (unary: INVALID_ARGUMENT; Sync: OK);
 * - nothing is signed that should not be: every client certificate handed out is checked (exactly one
 *   registered cluster, the caller's for Renew; EKU clientAuth only; not a CA), every Istio intermediate
 *   (SignMeshCa) too (the caller's cluster, istiod's name only, pathLen 0), and the issued counters grow
 *   by exactly the certificates checked, so one a fuzz input got signed unseen fails the test;
 * - each refused Identity call that reached our handler logged one warning line with a reason, and each
 *   call grpc-js refused before it (oversized, truncated; a Sync message over the limit too) one line of
 *   src/relay/grpc_refusals.ts;
 *   no log line carries PEM or the token; no error-level line from an unexpected failure;
 * - the process is alive and still serves a real agent flow (Bootstrap + Sync Welcome), and exits 0
 *   on SIGTERM.
 *
 * The random sequences are seeded, so a failure reproduces.
 */
import { GrpcStatus } from "../src/errors.ts";
import { createCsr, dnsNamesOf, generateKeyPair, ipAddressesOf, parseCertificates } from "../src/pki/mod.ts";
import { EKU, readBasicConstraints, readExtKeyUsage } from "../src/pki/extensions.ts";
import { AgentMessageCodec, IdentityService } from "../src/proto/mod.ts";
import { MISSING_REQUEST_DETAILS, REFUSED_BEFORE_HANDLER } from "../src/relay/grpc_refusals.ts";
import { ISTIOD_SAN } from "../src/relay/mesh_ca.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";
import { metricValue, rawSyncFirstMessage, waitFor } from "./relay_e2e_harness.ts";
import {
  bootstrapPair,
  mutate,
  rawClient,
  rawFrames,
  type RawResult,
  rawSync,
  rawUnary,
  seeded,
  type UnaryRpc,
  withHostileServer,
} from "./support/hostile.ts";

const REGISTERED = new Set(["cluster-1", "cluster-2"]);
const MAX = 65536;
const IDENTITY = "/meshrelay.relay.v1.Identity/";
const SYNC = "/meshrelay.relay.v1.Relay/Sync";

function describe(r: RawResult): string {
  return `${r.code} ${JSON.stringify(r.details)}`;
}

/** The status is one of `allowed` (never INTERNAL: bad input is the caller's fault, not ours). */
function checkStatus(r: RawResult, allowed: number[], what: string): void {
  assert(allowed.includes(r.code), `${what}: unexpected status ${describe(r)}`);
}

/**
 * A client certificate handed out (its PEM first, chain after): exactly one DNS SAN and no IP, a
 * registered cluster (`only` if given), CA:false, and good for client authentication only (a relay
 * client certificate that a server, or anything else, could use would be a certificate we should not
 * have signed).
 */
function checkClientCert(certPem: string, what: string, only?: string): void {
  const [cert] = parseCertificates(certPem, what);
  const names = dnsNamesOf(cert);
  assertEquals(names.length, 1, `${what}: SANs ${names}`);
  assertEquals(ipAddressesOf(cert), [], `${what}: IP SANs`);
  assert(REGISTERED.has(names[0]), `${what}: issued for unregistered ${names[0]}`);
  if (only) assertEquals(names[0], only, `${what}: issued for another cluster`);
  assertEquals(readBasicConstraints(cert)?.ca, false, `${what}: basicConstraints must say CA:false`);
  assertEquals(readExtKeyUsage(cert)?.oids, [EKU.clientAuth], `${what}: extended key usage`);
}

/**
 * An Istio intermediate handed out by SignMeshCa: a CA (that is its purpose) limited to pathLen 0, for
 * `cluster` (the caller's) under the RootTrustPolicy's root, with istiod's name only.
 */
function checkIntermediate(r: RawResult, what: string, cluster: string): void {
  const resp = IdentityService.signMeshCa.responseDeserialize(r.response!);
  const [cert] = parseCertificates(resp.certificatePem, what);
  const [root] = parseCertificates(resp.caPem, `${what} root`);
  assertEquals(cert.subject, `O=Istio, CN=Intermediate CA, L=${cluster}`, `${what}: subject`);
  assertEquals(
    [cert.issuer, root.subject],
    ["O=Istio, CN=Root CA", "O=Istio, CN=Root CA"],
    `${what}: issuer`,
  );
  assertEquals(dnsNamesOf(cert), [ISTIOD_SAN], `${what}: DNS SANs`);
  assertEquals(ipAddressesOf(cert), [], `${what}: IP SANs`);
  const bc = readBasicConstraints(cert);
  assertEquals([bc?.ca, bc?.pathLength], [true, 0], `${what}: basicConstraints`);
  assertEquals(readExtKeyUsage(cert), undefined, `${what}: an intermediate CA has no EKU`);
}

Deno.test("hostile RPC input: random, mutated, oversized and truncated calls on a real server", async (t) => {
  await withHostileServer({
    name: "hostile-rpc",
    rootTrustPolicy: true,
    args: [
      "--max-message-bytes",
      String(MAX),
      // Fuzzing sends thousands of failures from one address; the limiter has its own test.
      "--bootstrap-failure-burst",
      "1000000",
    ],
  }, async ({ proc, port, metricsPort, rootPem, token, held }) => {
    const pair1 = await bootstrapPair(port, rootPem, token, "cluster-1");
    const anon = rawClient(port, rootPem);
    const authed = rawClient(port, rootPem, pair1);
    held.push(anon, authed);
    let handled = 0; // refused Identity calls (each must log one line)
    let syncRefused = 0; // Sync streams refused by our handler (each must log one warning)
    let syncCancelled = 0;
    const countHandled = (r: RawResult) => {
      if (r.code !== GrpcStatus.OK) handled++;
    };
    // Certificates the fuzz got signed, each checked: the counters must grow by exactly these.
    let clientIssued = 0;
    let meshIssued = 0;
    const issued = (r: RawResult, what: string, only: string) => {
      checkClientCert(IdentityService.bootstrap.responseDeserialize(r.response!).certificatePem, what, only);
      clientIssued++;
    };
    const signed = (r: RawResult, what: string) => {
      checkIntermediate(r, what, "cluster-1");
      meshIssued++;
    };
    // Renew and SignMeshCa both take a CSR and may grant pair1's cluster only, so one fuzz serves both:
    // each body goes out anonymously and as pair1, and `granted` checks whatever pair1 got.
    const fuzzUnary = async (o: {
      rpc: Exclude<UnaryRpc, "bootstrap">;
      name: string;
      seed: number;
      own: Uint8Array;
      other: Uint8Array;
      granted: (r: RawResult, what: string) => void;
    }) => {
      const r = seeded(o.seed);
      for (let i = 0; i < 100; i++) {
        const body = i % 3 === 0 ? r.bytes(r.int(400)) : mutate(i % 3 === 1 ? o.other : o.own, r);
        const a = await rawUnary(anon, o.rpc, body);
        checkStatus(
          a,
          [GrpcStatus.UNAUTHENTICATED, GrpcStatus.INVALID_ARGUMENT],
          `anonymous ${o.name} #${i}`,
        );
        countHandled(a);
        const b = await rawUnary(authed, o.rpc, body);
        checkStatus(b, [
          GrpcStatus.OK,
          GrpcStatus.INVALID_ARGUMENT,
          GrpcStatus.PERMISSION_DENIED,
        ], `${o.name} #${i}`);
        if (b.code === GrpcStatus.OK) o.granted(b, `${o.name} #${i}`);
        countHandled(b);
      }
    };
    /** Unary calls refused before our handler ran (method, code), in order: one line each. */
    const beforeHandler: [string, number][] = [];
    const issuedBefore = await metricValue(metricsPort, "meshrelay_client_certificates_issued_total");
    const meshBefore = await metricValue(metricsPort, "meshrelay_istio_ca_certificates_issued_total");

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
        if (res.code === GrpcStatus.OK) issued(res, `mutated #${i}`, "cluster-2");
        countHandled(res);
      }
    });

    await t.step("Renew: random and mutated bytes, with and without a client certificate", async () => {
      const other = IdentityService.renew.requestSerialize({
        csrPem: await createCsr(await generateKeyPair(), { dnsNames: ["cluster-2"] }),
      });
      const own = IdentityService.renew.requestSerialize({
        csrPem: await createCsr(await generateKeyPair(), { dnsNames: ["cluster-1"] }),
      });
      await fuzzUnary({
        rpc: "renew",
        name: "renew",
        seed: 4,
        own,
        other,
        // The caller is cluster-1: whatever the CSR asks, only cluster-1 may come back.
        granted: (b, what) => issued(b, what, "cluster-1"),
      });
      // Not fuzz: a well-formed CSR for another cluster over cluster-1's certificate is refused.
      const steal = await rawUnary(authed, "renew", other);
      assertEquals(steal.code, GrpcStatus.PERMISSION_DENIED, describe(steal));
      countHandled(steal);
    });

    await t.step("SignMeshCa: random and mutated bytes, with and without a client certificate", async () => {
      const own = IdentityService.signMeshCa.requestSerialize({
        csrPem: await createCsr(await generateKeyPair(), { dnsNames: [ISTIOD_SAN] }),
      });
      // Its policy allows istiod's name only (the cluster is the certificate's; the subject is ours).
      const other = IdentityService.signMeshCa.requestSerialize({
        csrPem: await createCsr(await generateKeyPair(), { dnsNames: ["istiod.other.svc"] }),
      });
      // The caller is cluster-1: whatever the CSR asks, only cluster-1's intermediate may come back.
      await fuzzUnary({ rpc: "signMeshCa", name: "sign_mesh_ca", seed: 6, own, other, granted: signed });
      // Not fuzz: the valid request is signed over a client certificate, and only over one.
      const ok = await rawUnary(authed, "signMeshCa", own);
      assertEquals(ok.code, GrpcStatus.OK, describe(ok));
      signed(ok, "valid sign_mesh_ca");
      const anonymous = await rawUnary(anon, "signMeshCa", own);
      assertEquals(anonymous.code, GrpcStatus.UNAUTHENTICATED, describe(anonymous));
      countHandled(anonymous);
      const otherName = await rawUnary(authed, "signMeshCa", other);
      assertEquals(otherName.code, GrpcStatus.PERMISSION_DENIED, describe(otherName));
      countHandled(otherName);
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
      beforeHandler.push([`${IDENTITY}Bootstrap`, GrpcStatus.RESOURCE_EXHAUSTED]);
      // Sync is refused the same way, by grpc-js, mid-stream; its handler logs the same line
      // (grpcRefusalOf in grpc_refusals.ts), not "ended by the peer".
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
      beforeHandler.push([SYNC, GrpcStatus.RESOURCE_EXHAUSTED]);
    });

    await t.step(
      "truncated gRPC frames and reset HTTP/2 streams: the status each RPC must give",
      async () => {
        // A gRPC frame header announcing a 1000-byte message.
        const head = Uint8Array.from([0, 0, 0, 0x03, 0xe8]);
        const variants: { name: string; chunks: Uint8Array[]; resetAfterMs?: number }[] = [
          { name: "headers only, then the end", chunks: [] },
          { name: "a frame header cut short, then the end", chunks: [head.subarray(0, 3)] },
          { name: "a body shorter than its length prefix, then the end", chunks: [head, new Uint8Array(10)] },
          { name: "a frame header, then RST_STREAM", chunks: [head], resetAfterMs: 20 },
        ];
        const rpcs = [`${IDENTITY}Bootstrap`, `${IDENTITY}Renew`, `${IDENTITY}SignMeshCa`, SYNC];
        for (const path of rpcs) {
          for (const v of variants) {
            const what = `${path}: ${v.name}`;
            const r = await rawFrames(port, rootPem, pair1, path, v.chunks, { resetAfterMs: v.resetAfterMs });
            if (v.resetAfterMs !== undefined) {
              // We reset the stream before any answer was due: we read no status. Under Deno the server
              // sees the stream end before the reset, so a unary call is refused as cut short, with its
              // line (see grpc_refusals.ts).
              assertEquals(r.code, undefined, `${what}: ${r.code} ${r.details}`);
              if (path !== SYNC) beforeHandler.push([path, GrpcStatus.INVALID_ARGUMENT]);
            } else if (path !== SYNC) {
              // Without one whole request message there is nothing to serve: bad input, not OK, and not
              // grpc-js's UNIMPLEMENTED ("Received no request message …"), which src/relay/grpc_refusals.ts
              // replaces, logging one line.
              assertEquals([r.code, r.details], [GrpcStatus.INVALID_ARGUMENT, MISSING_REQUEST_DETAILS], what);
              beforeHandler.push([path, GrpcStatus.INVALID_ARGUMENT]);
            } else {
              // The agent half-closed, which ends Sync with OK ("agent ended the stream", sync_service.ts);
              // a partial frame before the end never becomes a message, so the handler cannot see it.
              assertEquals(r.code, GrpcStatus.OK, `${what}: ${r.code} ${r.details}`);
            }
            const first = await rawSyncFirstMessage({ port, rootPem, client: pair1 });
            assertEquals(first.welcome, "cluster-1", `${what}, then a real Sync: ${JSON.stringify(first)}`);
          }
        }
      },
    );

    await t.step("the server still serves a real agent, and it logged each refusal once", async () => {
      assertEquals(proc.exited, undefined, "server process still running");
      const pair2 = await bootstrapPair(port, rootPem, token, "cluster-2");
      const first = await rawSyncFirstMessage({ port, rootPem, client: pair2 });
      assertEquals(first.welcome, "cluster-2", JSON.stringify(first));
      const refusals = proc.lines.filter((l) =>
        l.msg === "bootstrap refused" || l.msg === "renew refused" || l.msg === "sign_mesh_ca refused"
      );
      assertEquals(refusals.length, handled, "one warning line per refused Identity call");
      for (const l of refusals) assert(typeof l.reason === "string" && typeof l.error === "string");
      const syncWarnings = proc.lines.filter((l) => l.msg === "sync stream refused");
      assert(
        syncWarnings.length >= syncRefused && syncWarnings.length <= syncRefused + syncCancelled,
        `one warning line per refused Sync stream: ${syncWarnings.length} lines, ${syncRefused} refused, ` +
          `${syncCancelled} cancelled by us`,
      );
      // The refusals grpc-js made before our handlers ran: one line each, in order, nothing else.
      const early = () => proc.lines.filter((l) => l.msg === REFUSED_BEFORE_HANDLER);
      await waitFor(
        "a line per call refused before its handler",
        () => early().length >= beforeHandler.length,
      );
      assertEquals(early().map((l) => [l.method, l.code]), beforeHandler);
      for (const l of early()) {
        assertEquals([l.level, l.peer], ["warn", "127.0.0.1"], JSON.stringify(l));
        assert(typeof l.error === "string" && l.error.length > 0, JSON.stringify(l));
      }
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
      // Counted from after pair1: the fuzz's certificates, each checked above, and pair2's.
      checkClientCert(pair2.certPem, "pair2", "cluster-2");
      const issuedNow = await metricValue(metricsPort, "meshrelay_client_certificates_issued_total");
      assertEquals(issuedNow, issuedBefore + clientIssued + 1, "client certificates issued");
      const meshNow = await metricValue(metricsPort, "meshrelay_istio_ca_certificates_issued_total");
      assertEquals(meshNow, meshBefore + meshIssued, "Istio intermediates signed");
    });
  });
});
