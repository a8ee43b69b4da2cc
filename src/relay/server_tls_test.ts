import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { FakeClock } from "../clock.ts";
import { memoryLogger, nullLogger } from "../log.ts";
import { certificateToPem, generateKeyPair, issueCertificate, privateKeyToPem } from "../pki/mod.ts";
import { type CertificateResponse, IdentityClient, IdentityService } from "../proto/mod.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { InvalidInputError, PreconditionError } from "../errors.ts";
import { MemorySecretStore } from "../store/mod.ts";
import { normalizeSerial } from "./revocation.ts";
import { ServerTls } from "./server_tls.ts";
import { foreignCa, issueClient, makeTestPki } from "./testing_pki.ts";

const NOW = new Date();
const enc = new TextEncoder();

/** A server whose Bootstrap answers with what the transport proved about the caller. */
async function echoServer(creds: grpc.ServerCredentials): Promise<{ port: number; stop: () => void }> {
  const server = new grpc.Server();
  server.addService(IdentityService, {
    bootstrap: (
      call: grpc.ServerUnaryCall<unknown, CertificateResponse>,
      cb: grpc.sendUnaryData<CertificateResponse>,
    ) => {
      const peer = call.getAuthContext().sslPeerCertificate;
      cb(null, {
        certificatePem: peer ? `CN=${peer.subject.CN}` : "no-cert",
        chainPem: "",
        caPem: "",
        notAfterUnixMs: 0,
        sessionBinding: "",
      });
    },
    renew: (_c: unknown, cb: grpc.sendUnaryData<CertificateResponse>) =>
      cb({ code: grpc.status.UNIMPLEMENTED }),
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", creds, (e, p) => e ? rej(e) : res(p))
  );
  return { port, stop: () => server.forceShutdown() };
}

async function ask(
  port: number,
  rootPem: string,
  client?: { keyPem: string; chainPem: string },
): Promise<{ answer: string; serverSerial: string }> {
  let serverSerial = "";
  const creds = grpc.credentials.createSsl(
    Buffer.from(rootPem),
    client ? Buffer.from(client.keyPem) : null,
    client ? Buffer.from(client.chainPem) : null,
    {
      checkServerIdentity: (_host, cert) => {
        // Node prints serials without leading zeros; compare the canonical form.
        serverSerial = normalizeSerial(cert.serialNumber);
        return undefined;
      },
    },
  );
  const c = new IdentityClient(`localhost:${port}`, creds);
  try {
    const answer = await new Promise<string>((res, rej) =>
      c.bootstrap({ token: "", cluster: "", csrPem: "" }, (e, r) => e ? rej(e) : res(r.certificatePem))
    );
    return { answer, serverSerial };
  } finally {
    c.close();
  }
}

Deno.test("mTLS credentials: one port, a client cert is requested but not required", async (t) => {
  const pki = await makeTestPki(NOW);
  const tls = await ServerTls.load({
    store: pki.store,
    clock: new FakeClock(),
    log: nullLogger,
    requestClientCert: true,
  });
  const srv = await echoServer(tls.credentials);
  try {
    await t.step("no client certificate: connects, nothing proven", async () => {
      assertEquals((await ask(srv.port, pki.rootPem)).answer, "no-cert");
    });
    await t.step("client certificate from the signing CA: verified, visible to the handler", async () => {
      assertEquals((await ask(srv.port, pki.rootPem, await pki.client("cluster-1"))).answer, "CN=cluster-1");
    });
    await t.step("leaf only (no chain sent): the signing CA in the trust bundle completes it", async () => {
      const c = await pki.client("cluster-2");
      assertEquals(
        (await ask(srv.port, pki.rootPem, { keyPem: c.keyPem, chainPem: c.certPem })).answer,
        "CN=cluster-2",
      );
    });
    await t.step("client certificate from a foreign CA: connects, but proves nothing", async () => {
      const other = await issueClient(await foreignCa(NOW), "cluster-1", NOW, 86_400_000);
      assertEquals((await ask(srv.port, pki.rootPem, other)).answer, "no-cert");
    });
  } finally {
    srv.stop();
  }
});

Deno.test("simple TLS credentials: no client certificate is requested", async () => {
  const pki = await makeTestPki(NOW);
  const tls = await ServerTls.load({
    store: pki.store,
    clock: new FakeClock(),
    log: nullLogger,
    requestClientCert: false,
  });
  const srv = await echoServer(tls.credentials);
  try {
    assertEquals((await ask(srv.port, pki.rootPem, await pki.client("cluster-1"))).answer, "no-cert");
  } finally {
    srv.stop();
  }
});

async function newServerCert(pki: Awaited<ReturnType<typeof makeTestPki>>) {
  const rootSecret = (await pki.store.get("relay-root-ca-key-secret"))!;
  const { loadIssuer } = await import("../pki/mod.ts");
  const dec = new TextDecoder();
  const root = await loadIssuer(
    dec.decode(rootSecret.data["tls.crt"]),
    dec.decode(rootSecret.data["tls.key"]),
    { now: NOW },
  );
  const kp = await generateKeyPair();
  const cert = await issueCertificate({
    profile: "server",
    subject: "CN=rotated",
    dnsNames: ["localhost"],
    publicKey: kp.publicKey,
    issuer: root,
    now: NOW,
    validityMs: 86_400_000,
  });
  return { cert, certPem: certificateToPem(cert), keyPem: await privateKeyToPem(kp) };
}

Deno.test("server certificate rotation without restart: files replaced, new connections see the new cert", async () => {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-servertls-" });
  const { FileSecretStore } = await import("../store/mod.ts");
  const store = new FileSecretStore(dir);
  const pki = await makeTestPki(NOW, store);
  const clock = new FakeClock(NOW);
  const log = memoryLogger();
  const tls = await ServerTls.load({ store, clock, log, requestClientCert: true, reloadIntervalMs: 5000 });
  const reloaded: string[] = [];
  tls.onReload((leaf) => reloaded.push(leaf.serialNumber));
  const srv = await echoServer(tls.credentials);
  const ac = new AbortController();
  const watching = tls.watch(ac.signal);
  try {
    const before = await ask(srv.port, pki.rootPem);
    assertEquals(before.serverSerial, normalizeSerial(tls.certificate.serialNumber));

    // cert-manager style: the files of the secret change on disk, in place.
    const next = await newServerCert(pki);
    await Deno.writeTextFile(`${dir}/relay-server-tls-secret/tls.crt`, next.certPem);
    await Deno.writeTextFile(`${dir}/relay-server-tls-secret/tls.key`, next.keyPem);
    await clock.waitForSleepers(1);
    await clock.advance(5000);
    await clock.waitForSleepers(1);
    assertEquals(reloaded, [next.cert.serialNumber]);

    const after = await ask(srv.port, pki.rootPem, await pki.client("cluster-1"));
    assertEquals(after.serverSerial, normalizeSerial(next.cert.serialNumber));
    assertEquals(after.answer, "CN=cluster-1");
    assert(before.serverSerial !== after.serverSerial);

    // A broken update (key of another cert) is refused; the last good cert stays.
    const other = await newServerCert(pki);
    await Deno.writeTextFile(`${dir}/relay-server-tls-secret/tls.key`, other.keyPem);
    await clock.advance(5000);
    await clock.waitForSleepers(1);
    assertEquals(reloaded.length, 1);
    assert(log.lines.some((l) => l.level === "error" && String(l.error).includes("does not belong")));
    assertEquals((await ask(srv.port, pki.rootPem)).serverSerial, normalizeSerial(next.cert.serialNumber));
  } finally {
    ac.abort();
    await watching;
    srv.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ServerTls.load names what is missing or wrong", async (t) => {
  await t.step("no server secret", async () => {
    const e = await assertRejects(
      () =>
        ServerTls.load({
          store: new MemorySecretStore(),
          clock: new FakeClock(),
          log: nullLogger,
          requestClientCert: false,
        }),
      PreconditionError,
    );
    assert(e.message.includes("relay-server-tls-secret"));
  });
  await t.step("mTLS without a root CA", async () => {
    const pki = await makeTestPki(NOW);
    const store = new MemorySecretStore();
    await store.put(
      "relay-server-tls-secret",
      (await pki.store.get("relay-server-tls-secret"))!.data as Record<string, Uint8Array>,
    );
    const e = await assertRejects(
      () => ServerTls.load({ store, clock: new FakeClock(), log: nullLogger, requestClientCert: true }),
      PreconditionError,
    );
    assert(e.message.includes("relay-root-tls-secret"));
  });
  await t.step("garbage certificate", async () => {
    const store = new MemorySecretStore();
    await store.put("relay-server-tls-secret", {
      "tls.crt": enc.encode("nope"),
      "tls.key": enc.encode("nope"),
    });
    await assertRejects(
      () => ServerTls.load({ store, clock: new FakeClock(), log: nullLogger, requestClientCert: false }),
      InvalidInputError,
    );
  });
});
