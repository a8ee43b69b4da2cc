import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { FakeClock } from "../clock.ts";
import { AuthenticationError, PermissionDeniedError, ResourceExhaustedError } from "../errors.ts";
import { MemorySecretStore } from "../store/mod.ts";
import { assertEquals, assertRejects } from "../testing/assert.ts";
import {
  certificateIdentify,
  type IdentifiableCall,
  identityOfCertificate,
  insecureIdentify,
  peerCertificate,
  tokenIdentify,
} from "./peer_identity.ts";
import { FailureLimiter } from "./rate_limit.ts";
import { RevocationList } from "./revocation.ts";
import { splitTrust } from "./server_tls.ts";
import { foreignCa, issueClient, makeTestPki } from "./testing_pki.ts";
import { IDENTITY_TOKEN_SECRET, TokenAuthority } from "./tokens.ts";

const NOW = new Date();

function fakeCall(md: Record<string, string>, der?: Uint8Array): IdentifiableCall {
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(md)) metadata.set(k, v);
  return {
    metadata,
    getPeer: () => "ipv4:10.1.2.3:4567",
    getAuthContext: () =>
      der ? { transportSecurityType: "ssl", sslPeerCertificate: { raw: Buffer.from(der) } as never } : {},
  } as IdentifiableCall;
}

Deno.test("certificate identity: the SAN of a verified cert, never anything else", async (t) => {
  const pki = await makeTestPki(NOW);
  const clock = new FakeClock(NOW);
  const trust = splitTrust([
    pki.signing.certificate,
    ...(await import("../pki/mod.ts")).parseCertificates(pki.rootPem),
  ]);
  const revocations = await RevocationList.load(new MemorySecretStore());
  const identify = certificateIdentify({
    trust: () => trust,
    clock,
    isRegistered: (c) => c !== "gone",
    revocations,
  });
  const der = async (cluster: string) => new Uint8Array((await pki.client(cluster)).certificate.rawData);

  await t.step("cluster-2's certificate is cluster-2 whatever the metadata says", async () => {
    const id = await identify(fakeCall({ "x-meshrelay-cluster": "cluster-1" }, await der("cluster-2")));
    assertEquals(id.cluster, "cluster-2");
    assertEquals(id.via, "certificate");
  });
  await t.step("no certificate", async () => {
    await assertRejects(
      () => identify(fakeCall({ "x-meshrelay-cluster": "cluster-1" })),
      AuthenticationError,
    );
  });
  await t.step("foreign CA (never trusted, even if a handshake let it through)", async () => {
    const other = await issueClient(await foreignCa(NOW), "cluster-1", NOW, 86_400_000);
    await assertRejects(
      () => identify(fakeCall({}, new Uint8Array(other.certificate.rawData))),
      AuthenticationError,
    );
  });
  await t.step("unregistered", async () => {
    const gone = await der("gone");
    await assertRejects(() => identify(fakeCall({}, gone)), PermissionDeniedError);
  });
  await t.step("deregistered cluster's earlier certificate", async () => {
    const c = await der("cluster-3");
    await revocations.revokeCluster("cluster-3", new Date(NOW.getTime() + 1000));
    await assertRejects(() => identify(fakeCall({}, c)), PermissionDeniedError);
  });
  await t.step("peerCertificate parses the DER the handshake gives", async () => {
    const c = await pki.client("cluster-1");
    assertEquals(
      peerCertificate(fakeCall({}, new Uint8Array(c.certificate.rawData)))?.serialNumber,
      c.certificate.serialNumber,
    );
    const id = await identityOfCertificate(c.certificate, {
      trust: () => trust,
      clock,
      isRegistered: () => true,
    });
    assertEquals(id.serial, c.certificate.serialNumber.toLowerCase());
  });
});

Deno.test("token identity (simple TLS): per-cluster tokens bind the name; the shared one does not", async (t) => {
  const store = new MemorySecretStore();
  await store.put(IDENTITY_TOKEN_SECRET, { token: new TextEncoder().encode("shared-secret") });
  const tokens = new TokenAuthority({ store });
  const { token } = await tokens.create("cluster-1", { now: NOW, ttlMs: 3600_000 });
  const failures: string[] = [];
  const identify = tokenIdentify({
    tokens,
    clock: new FakeClock(NOW),
    isRegistered: (c) => c.startsWith("cluster-"),
    limiter: new FailureLimiter({ burst: 4 }),
    onFailure: (r) => failures.push(r),
  });
  const cases: { name: string; md: Record<string, string>; want: string | (new (m: string) => Error) }[] = [
    {
      name: "per-cluster token, its cluster",
      md: { authorization: `Bearer ${token}`, "x-meshrelay-cluster": "cluster-1" },
      want: "cluster-1",
    },
    {
      name: "used again (simple TLS does not consume)",
      md: { authorization: `Bearer ${token}`, "x-meshrelay-cluster": "cluster-1" },
      want: "cluster-1",
    },
    {
      name: "per-cluster token, other cluster",
      md: { authorization: `Bearer ${token}`, "x-meshrelay-cluster": "cluster-2" },
      want: PermissionDeniedError,
    },
    {
      name: "shared token names any registered cluster",
      md: { authorization: "Bearer shared-secret", "x-meshrelay-cluster": "cluster-2" },
      want: "cluster-2",
    },
    { name: "no token", md: { "x-meshrelay-cluster": "cluster-2" }, want: AuthenticationError },
    { name: "no cluster", md: { authorization: "Bearer shared-secret" }, want: AuthenticationError },
    {
      name: "unregistered",
      md: { authorization: "Bearer shared-secret", "x-meshrelay-cluster": "other" },
      want: PermissionDeniedError,
    },
    {
      name: "rate limited after 4 failures",
      md: { authorization: "Bearer shared-secret", "x-meshrelay-cluster": "cluster-2" },
      want: ResourceExhaustedError,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      if (typeof c.want === "string") assertEquals((await identify(fakeCall(c.md))).cluster, c.want);
      else await assertRejects(() => identify(fakeCall(c.md)), c.want);
    });
  }
  assertEquals(failures.length, 4);
});

Deno.test("insecure identity: the named cluster, if registered", async () => {
  const identify = insecureIdentify({ isRegistered: (c) => c === "cluster-1" });
  assertEquals((await identify(fakeCall({ "x-meshrelay-cluster": "cluster-1" }))).cluster, "cluster-1");
  await assertRejects(
    () => identify(fakeCall({ "x-meshrelay-cluster": "cluster-2" })),
    PermissionDeniedError,
  );
  await assertRejects(() => identify(fakeCall({})), AuthenticationError);
});
