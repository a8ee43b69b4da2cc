import * as grpc from "@grpc/grpc-js";
import { caFingerprint } from "./ca_fingerprint.ts";
import { Buffer } from "node:buffer";
import { FakeClock } from "../clock.ts";
import { GrpcStatus } from "../errors.ts";
import { type Logger, memoryLogger, nullLogger } from "../log.ts";
import {
  createCsr,
  dnsNamesOf,
  generateKeyPair,
  parseCertificates,
  privateKeyToPem,
  verifyChain,
} from "../pki/mod.ts";
import { type CertificateResponse, IdentityClient, IdentityService } from "../proto/mod.ts";
import { MemorySecretStore, type Secret } from "../store/mod.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { AdmissionGate } from "./admission.ts";
import { IdentityHandlers, identityServiceImpl, SIGNING_BUSY_MESSAGE } from "./identity_service.ts";
import { MetricsRegistry } from "./metrics.ts";
import { certificateIdentify } from "./peer_identity.ts";
import { FailureLimiter } from "./rate_limit.ts";
import { RevocationList } from "./revocation.ts";
import { SecretCache } from "./secret_cache.ts";
import { ServerTls } from "./server_tls.ts";
import { makeTestPki, type TestPki } from "./testing_pki.ts";
import { IDENTITY_TOKEN_SECRET, TokenAuthority } from "./tokens.ts";

const NOW = new Date();
const DAY = 86_400_000;

interface Rig {
  pki: TestPki;
  port: number;
  tokens: TokenAuthority;
  revocations: RevocationList;
  metrics: MetricsRegistry;
  registered: Set<string>;
  shared: string;
  clock: FakeClock;
  gate?: AdmissionGate;
  /** Store reads per secret name (with `cache`). */
  reads: Map<string, number>;
  stop(): void;
}

/** A memory store counting reads per secret name. */
class CountingStore extends MemorySecretStore {
  reads = new Map<string, number>();
  override get(name: string): Promise<Secret | undefined> {
    this.reads.set(name, (this.reads.get(name) ?? 0) + 1);
    return super.get(name);
  }
}

async function rig(
  opts: {
    signing?: boolean;
    burst?: number;
    gate?: (clock: FakeClock, metrics: MetricsRegistry) => AdmissionGate;
    cache?: boolean;
    log?: Logger;
  } = {},
): Promise<Rig> {
  const store = new CountingStore();
  const pki = await makeTestPki(NOW, store);
  if (opts.signing === false) await pki.store.delete("relay-tls-signing-secret");
  const clock = new FakeClock(NOW);
  const tls = await ServerTls.load({ store: pki.store, clock, log: nullLogger, requestClientCert: true });
  const secrets = opts.cache ? new SecretCache({ store, clock, maxAgeMs: 5000 }) : undefined;
  const tokens = new TokenAuthority({ store: pki.store, sharedTokenReader: secrets });
  const revocations = await RevocationList.load(pki.store);
  const registered = new Set(["cluster-1", "cluster-2"]);
  const metrics = new MetricsRegistry();
  const gate = opts.gate?.(clock, metrics);
  const isRegistered = (c: string) => registered.has(c);
  const h = new IdentityHandlers({
    store: pki.store,
    secrets,
    admission: gate,
    tokens,
    clock,
    log: opts.log ?? nullLogger,
    limiter: new FailureLimiter({ burst: opts.burst ?? 100 }),
    isRegistered,
    identifyCertificate: certificateIdentify({ trust: () => tls.trust, clock, isRegistered, revocations }),
    issuesCertificates: true,
    revocations,
    metrics,
    clientCertTtlMs: 30 * DAY,
  });
  const server = new grpc.Server();
  server.addService(IdentityService, identityServiceImpl(h, nullLogger));
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", tls.credentials, (e, p) => e ? rej(e) : res(p))
  );
  // Read past the cache, so tests that count store reads start cold.
  const shared = (await new TokenAuthority({ store: pki.store }).sharedToken())!;
  store.reads.clear();
  return {
    gate,
    reads: store.reads,
    pki,
    port,
    tokens,
    revocations,
    metrics,
    registered,
    shared,
    clock,
    stop: () => server.forceShutdown(),
  };
}

type Outcome = { ok: CertificateResponse } | { code: number; details: string };

async function call(
  r: Rig,
  rpc: "bootstrap" | "renew",
  req: Record<string, string>,
  client?: { keyPem: string; chainPem: string },
): Promise<Outcome> {
  const creds = grpc.credentials.createSsl(
    Buffer.from(r.pki.rootPem),
    client ? Buffer.from(client.keyPem) : null,
    client ? Buffer.from(client.chainPem) : null,
  );
  const c = new IdentityClient(`localhost:${r.port}`, creds);
  try {
    return await new Promise<Outcome>((res) => {
      // deno-lint-ignore no-explicit-any
      (c[rpc] as any)(
        req,
        (e: grpc.ServiceError | null, resp: CertificateResponse) =>
          res(e ? { code: e.code, details: e.details } : { ok: resp }),
      );
    });
  } finally {
    c.close();
  }
}

async function csrFor(...names: string[]) {
  const kp = await generateKeyPair();
  return { csrPem: await createCsr(kp, { dnsNames: names }), keyPem: await privateKeyToPem(kp) };
}

function codeOf(o: Outcome): number {
  return "ok" in o ? GrpcStatus.OK : o.code;
}

Deno.test("Bootstrap: token + registered cluster + matching CSR → a verifiable client certificate", async () => {
  const r = await rig();
  try {
    const { csrPem } = await csrFor("cluster-1");
    const o = await call(r, "bootstrap", { token: r.shared, cluster: "cluster-1", csrPem });
    assert("ok" in o, JSON.stringify(o));
    const [leaf] = parseCertificates(o.ok.certificatePem);
    assertEquals(dnsNamesOf(leaf), ["cluster-1"]);
    await verifyChain(leaf, {
      roots: parseCertificates(o.ok.caPem),
      intermediates: parseCertificates(o.ok.chainPem),
      now: NOW,
      purpose: "clientAuth",
    });
    assertEquals(o.ok.notAfterUnixMs, leaf.notAfter.getTime());
    assert(Math.abs(leaf.notAfter.getTime() - (NOW.getTime() + 30 * DAY)) < 2000);
  } finally {
    r.stop();
  }
});

Deno.test("Bootstrap: the answer leaves out the trust anchors the agent says it has, and only those", async (t) => {
  const r = await rig();
  try {
    const { csrPem } = await csrFor("cluster-1");
    const full = await call(r, "bootstrap", { token: r.shared, cluster: "cluster-1", csrPem });
    assert("ok" in full, JSON.stringify(full));
    const root = full.ok.caPem;
    assert(root.includes("BEGIN CERTIFICATE"));
    const cases: [string, string | undefined, boolean][] = [
      [
        "the server's own anchors, wrapped differently: left out",
        caFingerprint(root.replace(/\n/g, "\r\n")),
        true,
      ],
      ["other anchors: sent", caFingerprint(root + root), false],
      ["none named: sent", undefined, false],
    ];
    for (const [name, known, omitted] of cases) {
      await t.step(name, async () => {
        const o = await call(r, "bootstrap", {
          token: r.shared,
          cluster: "cluster-1",
          csrPem,
          ...(known ? { knownCaSha256: known } : {}),
        });
        assert("ok" in o, JSON.stringify(o));
        assertEquals(o.ok.caPem, omitted ? "" : root);
      });
    }
  } finally {
    r.stop();
  }
});

Deno.test("Bootstrap refusals", async (t) => {
  const r = await rig();
  try {
    const c1 = (await csrFor("cluster-1")).csrPem;
    const cases: {
      name: string;
      req: () => Record<string, string> | Promise<Record<string, string>>;
      code: number;
      reason?: string;
    }[] = [
      {
        name: "wrong token",
        req: () => ({ token: "nope", cluster: "cluster-1", csrPem: c1 }),
        code: GrpcStatus.UNAUTHENTICATED,
      },
      {
        name: "no token",
        req: () => ({ token: "", cluster: "cluster-1", csrPem: c1 }),
        code: GrpcStatus.UNAUTHENTICATED,
      },
      {
        name: "unregistered cluster, even with the shared token",
        req: async () => ({
          token: r.shared,
          cluster: "cluster-9",
          csrPem: (await csrFor("cluster-9")).csrPem,
        }),
        code: GrpcStatus.PERMISSION_DENIED,
      },
      {
        name: "CSR for another cluster than claimed",
        req: async () => ({
          token: r.shared,
          cluster: "cluster-1",
          csrPem: (await csrFor("cluster-2")).csrPem,
        }),
        code: GrpcStatus.PERMISSION_DENIED,
      },
      {
        name: "CSR with an extra name",
        req: async () => ({
          token: r.shared,
          cluster: "cluster-1",
          csrPem: (await csrFor("cluster-1", "evil")).csrPem,
        }),
        code: GrpcStatus.PERMISSION_DENIED,
      },
      {
        name: "garbage CSR",
        req: () => ({ token: r.shared, cluster: "cluster-1", csrPem: "x" }),
        code: GrpcStatus.INVALID_ARGUMENT,
      },
      {
        name: "bad cluster name",
        req: () => ({ token: r.shared, cluster: "A_B", csrPem: c1 }),
        code: GrpcStatus.INVALID_ARGUMENT,
      },
    ];
    for (const c of cases) {
      await t.step(c.name, async () => {
        const o = await call(r, "bootstrap", await c.req());
        assertEquals(codeOf(o), c.code, JSON.stringify(o));
        assert(!JSON.stringify(o).includes(r.shared), "the token must not be echoed");
      });
    }
    await t.step("failures are counted by reason", () => {
      const text = r.metrics.render();
      assert(
        text.includes('meshrelay_bootstrap_failures_total{reason="unauthenticated",rpc="bootstrap"} 2'),
        text,
      );
    });
  } finally {
    r.stop();
  }
});

Deno.test("Bootstrap: per-cluster token is bound, single-use, and not burnt by a bad CSR", async () => {
  const r = await rig();
  try {
    const { token } = await r.tokens.create("cluster-1", { now: NOW, ttlMs: 3600_000 });
    const other = await call(r, "bootstrap", {
      token,
      cluster: "cluster-2",
      csrPem: (await csrFor("cluster-2")).csrPem,
    });
    assertEquals(codeOf(other), GrpcStatus.PERMISSION_DENIED);
    const bad = await call(r, "bootstrap", {
      token,
      cluster: "cluster-1",
      csrPem: (await csrFor("cluster-2")).csrPem,
    });
    assertEquals(codeOf(bad), GrpcStatus.PERMISSION_DENIED);
    const [a, b] = await Promise.all([
      call(r, "bootstrap", { token, cluster: "cluster-1", csrPem: (await csrFor("cluster-1")).csrPem }),
      call(r, "bootstrap", { token, cluster: "cluster-1", csrPem: (await csrFor("cluster-1")).csrPem }),
    ]);
    assertEquals([codeOf(a), codeOf(b)].sort(), [GrpcStatus.OK, GrpcStatus.UNAUTHENTICATED]);
  } finally {
    r.stop();
  }
});

Deno.test("failed attempts are rate limited per peer", async () => {
  const r = await rig({ burst: 3 });
  try {
    const csrPem = (await csrFor("cluster-1")).csrPem;
    for (let i = 0; i < 3; i++) {
      assertEquals(
        codeOf(await call(r, "bootstrap", { token: "guess" + i, cluster: "cluster-1", csrPem })),
        GrpcStatus.UNAUTHENTICATED,
      );
    }
    const limited = await call(r, "bootstrap", { token: r.shared, cluster: "cluster-1", csrPem });
    assertEquals(codeOf(limited), GrpcStatus.RESOURCE_EXHAUSTED);
  } finally {
    r.stop();
  }
});

Deno.test("Renew: only with a verified certificate, only for its own cluster", async (t) => {
  const r = await rig();
  try {
    const c1 = await r.pki.client("cluster-1");
    await t.step("without a client certificate", async () => {
      const o = await call(r, "renew", { csrPem: (await csrFor("cluster-1")).csrPem });
      assertEquals(codeOf(o), GrpcStatus.UNAUTHENTICATED);
    });
    await t.step("with cluster-1's certificate, for cluster-1", async () => {
      const o = await call(r, "renew", { csrPem: (await csrFor("cluster-1")).csrPem }, c1);
      assert("ok" in o, JSON.stringify(o));
      assertEquals(dnsNamesOf(parseCertificates(o.ok.certificatePem)[0]), ["cluster-1"]);
    });
    await t.step("with cluster-1's certificate, asking for cluster-2", async () => {
      const o = await call(r, "renew", { csrPem: (await csrFor("cluster-2")).csrPem }, c1);
      assertEquals(codeOf(o), GrpcStatus.PERMISSION_DENIED);
    });
    await t.step("expired certificate", async () => {
      // Valid for the TLS handshake (real time), expired for the server's own check (its clock).
      const short = await r.pki.client("cluster-1", { validityMs: 3600_000 });
      await r.clock.advance(2 * 3600_000);
      try {
        const o = await call(r, "renew", { csrPem: (await csrFor("cluster-1")).csrPem }, short);
        assertEquals(codeOf(o), GrpcStatus.UNAUTHENTICATED);
      } finally {
        await r.clock.advance(-2 * 3600_000);
      }
    });
    await t.step("revoked serial", async () => {
      const c = await r.pki.client("cluster-1");
      await r.revocations.revokeSerial(c.certificate.serialNumber, { now: NOW, reason: "test" });
      const o = await call(r, "renew", { csrPem: (await csrFor("cluster-1")).csrPem }, c);
      assertEquals(codeOf(o), GrpcStatus.PERMISSION_DENIED);
    });
    await t.step("deregistered cluster", async () => {
      r.registered.delete("cluster-2");
      const c2 = await r.pki.client("cluster-2");
      const o = await call(r, "renew", { csrPem: (await csrFor("cluster-2")).csrPem }, c2);
      assertEquals(codeOf(o), GrpcStatus.PERMISSION_DENIED);
    });
  } finally {
    r.stop();
  }
});

Deno.test("without a signing CA (bring-your-own client certificates) Bootstrap says so", async () => {
  const r = await rig({ signing: false });
  try {
    const o = await call(r, "bootstrap", {
      token: r.shared,
      cluster: "cluster-1",
      csrPem: (await csrFor("cluster-1")).csrPem,
    });
    assertEquals(codeOf(o), GrpcStatus.FAILED_PRECONDITION);
    assert(!("ok" in o) && o.details.includes("no signing CA"), JSON.stringify(o));
  } finally {
    r.stop();
  }
});

Deno.test("IdentityHandlers refuses a non-positive TTL", async () => {
  const { assertThrows } = await import("../testing/assert.ts");
  assertThrows(() =>
    new IdentityHandlers({
      store: new MemorySecretStore(),
      tokens: new TokenAuthority({ store: new MemorySecretStore() }),
      clock: new FakeClock(),
      log: nullLogger,
      limiter: new FailureLimiter(),
      isRegistered: () => true,
      issuesCertificates: true,
      clientCertTtlMs: 0,
    }), Error);
});

/** A gate whose only slot the test holds until it calls the returned release. */
function hold(gate: AdmissionGate): () => Promise<void> {
  let release!: () => void;
  const held = gate.run(() => new Promise<void>((r) => release = r));
  return async () => {
    release();
    await held;
  };
}

Deno.test("signing admission: busy callers are refused fast and clearly, never charged as failures", async (t) => {
  const log = memoryLogger();
  const r = await rig({
    log,
    burst: 4,
    gate: (clock, metrics) =>
      new AdmissionGate({
        clock,
        metrics,
        maxConcurrent: 1,
        maxQueued: 0,
        busyMessage: SIGNING_BUSY_MESSAGE,
      }),
  });
  try {
    const release = hold(r.gate!);
    const c1 = await r.pki.client("cluster-1");
    await t.step(
      "Bootstrap and Renew while every slot is taken: RESOURCE_EXHAUSTED, clear message",
      async () => {
        // More busy answers than the failure burst allows failures.
        for (let i = 0; i < 5; i++) {
          const o = await call(r, "bootstrap", {
            token: r.shared,
            cluster: "cluster-1",
            csrPem: (await csrFor("cluster-1")).csrPem,
          });
          assertEquals(o, { code: GrpcStatus.RESOURCE_EXHAUSTED, details: SIGNING_BUSY_MESSAGE });
        }
        const renewed = await call(r, "renew", { csrPem: (await csrFor("cluster-1")).csrPem }, c1);
        assertEquals(renewed, { code: GrpcStatus.RESOURCE_EXHAUSTED, details: SIGNING_BUSY_MESSAGE });
        const text = r.metrics.render();
        assert(
          text.includes('meshrelay_admission_refused_total{gate="signing",reason="queue_full"} 6'),
          text,
        );
        // Load, not faults: logged at debug (a storm would otherwise write a warning per agent and retry).
        const refusals = log.lines.filter((l) => String(l.msg).endsWith(" refused"));
        assertEquals(
          refusals.map((l) => `${l.level} ${l.reason}`),
          Array(6).fill("debug resource_exhausted"),
        );
      },
    );
    await t.step("cheap refusals come first and take no place in the queue", async () => {
      const cases: [string, Record<string, string>, number][] = [
        ["wrong token", { token: "guess", cluster: "cluster-1" }, GrpcStatus.UNAUTHENTICATED],
        ["unregistered cluster", { token: r.shared, cluster: "cluster-9" }, GrpcStatus.PERMISSION_DENIED],
        ["invalid cluster name", { token: r.shared, cluster: "Bad_Name" }, GrpcStatus.INVALID_ARGUMENT],
      ];
      for (const [name, req, code] of cases) {
        const o = await call(r, "bootstrap", { ...req, csrPem: (await csrFor("cluster-1")).csrPem });
        assertEquals(codeOf(o), code, name);
      }
      assertEquals(r.gate!.queued, 0);
      const warned = log.lines.filter((l) => l.level === "warn" && String(l.msg) === "bootstrap refused");
      assertEquals(warned.map((l) => l.reason), ["unauthenticated", "permission_denied", "invalid_argument"]);
    });
    await t.step("once a slot is free the same peer is served: busy answers were not charged", async () => {
      await release();
      // The cheap refusals above spent three of the four failures the burst allows; busy spent none.
      const o = await call(r, "bootstrap", {
        token: r.shared,
        cluster: "cluster-1",
        csrPem: (await csrFor("cluster-1")).csrPem,
      });
      assert("ok" in o, JSON.stringify(o));
    });
  } finally {
    r.stop();
  }
});

Deno.test("signing admission: a call cancelled while queued leaves the queue and is not charged", async () => {
  const r = await rig({
    burst: 1,
    gate: (clock, metrics) =>
      new AdmissionGate({
        clock,
        metrics,
        maxConcurrent: 1,
        maxQueued: 5,
        busyMessage: SIGNING_BUSY_MESSAGE,
      }),
  });
  try {
    const release = hold(r.gate!);
    const client = new IdentityClient(
      `localhost:${r.port}`,
      grpc.credentials.createSsl(Buffer.from(r.pki.rootPem)),
    );
    try {
      const csrPem = (await csrFor("cluster-1")).csrPem;
      let code: number | undefined;
      const ended = new Promise<void>((res) => {
        const c = client.bootstrap({ token: r.shared, cluster: "cluster-1", csrPem }, (e) => {
          code = e?.code;
          res();
        });
        // Cancel once the server has queued it (bounded by event-loop turns, not time).
        (async () => {
          for (let i = 0; i < 5000 && r.gate!.queued === 0; i++) await new Promise((x) => setTimeout(x, 0));
          c.cancel();
        })();
      });
      await ended;
      assertEquals(code, GrpcStatus.CANCELLED);
      for (let i = 0; i < 5000 && r.gate!.queued > 0; i++) await new Promise((x) => setTimeout(x, 0));
      assertEquals(r.gate!.queued, 0, "the cancelled call left the queue");
    } finally {
      client.close();
    }
    await release();
    assertEquals(r.gate!.inFlight, 0);
    const text = r.metrics.render();
    assert(!text.includes("meshrelay_client_certificates_issued_total{"), "nothing was signed for it");
    assert(text.includes('meshrelay_bootstrap_failures_total{reason="cancelled",rpc="bootstrap"} 1'), text);
    // burst 1: had the cancellation been charged, this would be refused as rate limited.
    const o = await call(r, "bootstrap", {
      token: r.shared,
      cluster: "cluster-1",
      csrPem: (await csrFor("cluster-1")).csrPem,
    });
    assert("ok" in o, JSON.stringify(o));
  } finally {
    r.stop();
  }
});

Deno.test("with a secret cache, a burst of Bootstraps reads each CA and token secret from the store once", async () => {
  const r = await rig({ cache: true });
  try {
    const csrs = await Promise.all(Array.from({ length: 10 }, () => csrFor("cluster-1")));
    const outcomes = await Promise.all(
      csrs.map(({ csrPem }) => call(r, "bootstrap", { token: r.shared, cluster: "cluster-1", csrPem })),
    );
    assertEquals(outcomes.map(codeOf), outcomes.map(() => GrpcStatus.OK));
    assertEquals(
      Object.fromEntries(
        ["relay-root-tls-secret", "relay-tls-signing-secret", IDENTITY_TOKEN_SECRET].map((
          n,
        ) => [n, r.reads.get(n)]),
      ),
      { "relay-root-tls-secret": 1, "relay-tls-signing-secret": 1, [IDENTITY_TOKEN_SECRET]: 1 },
    );
  } finally {
    r.stop();
  }
});
