import { Buffer } from "node:buffer";
import { FakeClock } from "../clock.ts";
import { GrpcStatus, PreconditionError, ResourceExhaustedError, UnavailableError } from "../errors.ts";
import { memoryLogger, nullLogger } from "../log.ts";
import { parseCertificates } from "../pki/mod.ts";
import type { BootstrapRequest, RenewRequest } from "../proto/mod.ts";
import { MemorySecretStore, type PutOptions, type Secret } from "../store/mod.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { AgentIdentity, type ClientCredentials, type IdentityTransport } from "./agent_identity.ts";
import type { ClientKeyPair } from "./client_credentials.ts";
import { AdmissionGate } from "./admission.ts";
import { IdentityHandlers, SIGNING_BUSY_MESSAGE } from "./identity_service.ts";
import { errorFromStatus } from "./identity_transport.ts";
import { certificateIdentify, type IdentifiableCall } from "./peer_identity.ts";
import { FailureLimiter } from "./rate_limit.ts";
import { splitTrust } from "./server_tls.ts";
import { makeTestPki } from "./testing_pki.ts";
import { IDENTITY_TOKEN_SECRET } from "./tokens.ts";
import { TokenAuthority } from "./tokens.ts";

const DAY = 86_400_000;
const dec = new TextDecoder();

/** The real server-side handlers, called without a network; records what the agent sent. */
async function setup(opts: { ttlMs?: number; issues?: boolean; busyGate?: boolean } = {}) {
  const start = new Date();
  const clock = new FakeClock(start);
  // One signing slot and no queue: while the test holds the slot, every signing is refused as busy.
  const gate = opts.busyGate
    ? new AdmissionGate({ clock, maxConcurrent: 1, maxQueued: 0, busyMessage: SIGNING_BUSY_MESSAGE })
    : undefined;
  const pki = await makeTestPki(start);
  const trust = splitTrust([pki.signing.certificate, ...parseCertificates(pki.rootPem)]);
  const h = new IdentityHandlers({
    store: pki.store,
    tokens: new TokenAuthority({ store: pki.store }),
    clock,
    log: nullLogger,
    limiter: new FailureLimiter({ burst: 1000 }),
    isRegistered: () => true,
    identifyCertificate: certificateIdentify({ trust: () => trust, clock, isRegistered: () => true }),
    issuesCertificates: opts.issues ?? true,
    clientCertTtlMs: opts.ttlMs ?? 10 * DAY,
    admission: gate,
  });
  const sent: string[] = [];
  const transport: IdentityTransport & { failNext?: Error; failBootstraps: Error[] } = {
    failBootstraps: [],
    bootstrap(req: BootstrapRequest) {
      sent.push(JSON.stringify(req));
      const e = transport.failBootstraps.shift();
      if (e) return Promise.reject(e);
      return h.bootstrap(req, { getPeer: () => "ipv4:10.0.0.1:1" });
    },
    renew(req: RenewRequest, cur: ClientKeyPair) {
      sent.push(JSON.stringify(req));
      if (transport.failNext) {
        const e = transport.failNext;
        transport.failNext = undefined;
        return Promise.reject(e);
      }
      const der = parseCertificates(cur.certChainPem)[0].rawData;
      const call = {
        getPeer: () => "ipv4:10.0.0.1:1",
        getAuthContext: () => ({ sslPeerCertificate: { raw: Buffer.from(der) } }),
        metadata: undefined,
      } as unknown as IdentifiableCall;
      return h.renew(req, call);
    },
  };
  const shared = dec.decode((await pki.store.get(IDENTITY_TOKEN_SECRET))!.data.token);
  return { clock, pki, transport, sent, shared, gate };
}

/** Takes the gate's only slot until the returned function is called. */
function holdSlot(gate: AdmissionGate): () => Promise<void> {
  let release!: () => void;
  const held = gate.run(() => new Promise<void>((r) => release = r));
  return async () => {
    release();
    await held;
  };
}

function agent(
  s: Awaited<ReturnType<typeof setup>>,
  over: Partial<ConstructorParameters<typeof AgentIdentity>[0]> = {},
) {
  return new AgentIdentity({
    cluster: "cluster-1",
    store: new MemorySecretStore(),
    transport: s.transport,
    token: () => Promise.resolve(s.shared),
    clock: s.clock,
    random: () => 0.5,
    log: nullLogger,
    pollMs: DAY,
    ...over,
  });
}

Deno.test("bootstrap: key made locally, only a CSR travels, pair stored in the client secret", async () => {
  const s = await setup();
  const store = new MemorySecretStore();
  const a = agent(s, { store });
  const creds = await a.ensure();
  assertEquals(s.sent.length, 1);
  assert(!s.sent[0].includes("PRIVATE KEY"));
  assert(s.sent[0].includes("CERTIFICATE REQUEST"));
  const sec = (await store.get("relay-client-tls-secret"))!;
  assertEquals(Object.keys(sec.data).sort(), ["ca.crt", "tls.crt", "tls.key"]);
  assertEquals(parseCertificates(dec.decode(sec.data["tls.crt"])).length, 2, "leaf + signing CA");
  assertEquals(dec.decode(sec.data["ca.crt"]), s.pki.rootPem);
  assertEquals(a.status().state, "ready");
  // A second start reuses the stored pair.
  const b = agent(s, { store });
  assertEquals((await b.ensure()).serial, creds.serial);
  assertEquals(s.sent.length, 1);
});

Deno.test("renewal loop: renews inside the window, publishes the new pair, never before", async () => {
  const s = await setup();
  const store = new MemorySecretStore();
  const a = agent(s, { store });
  const first = await a.ensure();
  const seen: string[] = [];
  a.onChange((c) => seen.push(c.serial));
  const ac = new AbortController();
  const loop = a.run(ac.signal);
  try {
    const at = a.renewalTime(first);
    // The lifetime counts from when we got it, not from the backdated notBefore.
    const got = s.clock.now().getTime();
    assertEquals(a.effectiveValidity(first).notBefore.getTime(), got);
    const life = first.notAfter.getTime() - got;
    // random 0.5 → the middle of [70%, 90%] of the lifetime.
    assert(Math.abs(at.getTime() - (got + life * 0.8)) <= 1, `${at.toISOString()}`);
    await s.clock.waitForSleepers(1);
    await s.clock.advance(at.getTime() - s.clock.now().getTime() - 60_000);
    await s.clock.waitForSleepers(1);
    assertEquals(seen, [], "not renewed before its time");
    await s.clock.advance(120_000);
    await s.clock.waitForSleepers(1);
    assertEquals(seen.length, 1);
    const stored = dec.decode((await store.get("relay-client-tls-secret"))!.data["tls.crt"]);
    assertEquals(parseCertificates(stored)[0].serialNumber.toLowerCase(), seen[0]);
    assert(seen[0] !== first.serial);
    assertEquals(a.current()!.serial, seen[0]);
  } finally {
    ac.abort();
    await loop;
  }
});

Deno.test("crash safety: a failed renewal or store write leaves the old pair in place", async (t) => {
  const s = await setup();
  let failPuts = 0;
  const inner = new MemorySecretStore();
  const store = Object.assign(Object.create(inner), {
    get: (n: string) => inner.get(n),
    list: () => inner.list(),
    delete: (n: string) => inner.delete(n),
    put: (n: string, d: Record<string, Uint8Array>, o?: PutOptions): Promise<Secret> => {
      if (failPuts > 0) {
        failPuts--;
        return Promise.reject(new UnavailableError("disk full"));
      }
      return inner.put(n, d, o);
    },
  });
  const a = agent(s, { store });
  const first = await a.ensure();
  const before = (await inner.get("relay-client-tls-secret"))!;
  await t.step("server unavailable", async () => {
    s.transport.failNext = new UnavailableError("relay server: connection refused");
    await assertRejects(() => a.renew(), UnavailableError);
    assertEquals((await inner.get("relay-client-tls-secret"))!.version, before.version);
    assertEquals(a.current()!.serial, first.serial);
  });
  await t.step("certificate issued but the store write fails", async () => {
    failPuts = 1;
    await assertRejects(() => a.renew(), UnavailableError);
    const now = (await inner.get("relay-client-tls-secret"))!;
    assertEquals(now.version, before.version);
    assertEquals(a.current()!.serial, first.serial);
  });
  await t.step("the loop retries with backoff and then succeeds", async () => {
    const ac = new AbortController();
    const loop = a.run(ac.signal);
    try {
      s.transport.failNext = new UnavailableError("relay server: connection refused");
      await s.clock.waitForSleepers(1);
      await s.clock.advance(a.renewalTime(first).getTime() - s.clock.now().getTime());
      await s.clock.waitForSleepers(1);
      assertEquals(a.status().state, "error");
      assertEquals(a.current()!.serial, first.serial);
      await s.clock.advance(300_000);
      await s.clock.waitForSleepers(1);
      assertEquals(a.status().state, "ready");
      assert(a.current()!.serial !== first.serial);
    } finally {
      ac.abort();
      await loop;
    }
  });
});

Deno.test("expired while offline: re-bootstrap with a token; without one, a clear status and one log line", async (t) => {
  const s = await setup();
  const store = new MemorySecretStore();
  const first = await agent(s, { store }).ensure();
  await s.clock.advance(first.notAfter.getTime() - s.clock.now().getTime() + DAY); // offline past expiry

  await t.step("no token: waits, says so, retries later", async () => {
    const log = memoryLogger();
    let token: string | undefined;
    const a = agent(s, { store, log, token: () => Promise.resolve(token) });
    const ac = new AbortController();
    const loop = a.run(ac.signal);
    try {
      await s.clock.waitForSleepers(1);
      assertEquals(a.status().state, "waiting_for_credentials");
      assert(a.status().message!.includes("expired"));
      const lines = log.lines.filter((l) => l.level === "error" && String(l.msg).includes("expired"));
      assertEquals(lines.length, 1);
      // Still nothing an hour later (no second identical log line either).
      await s.clock.advance(3600_000);
      await s.clock.waitForSleepers(1);
      assertEquals(
        log.lines.filter((l) => l.level === "error" && String(l.msg).includes("expired")).length,
        1,
      );
      token = s.shared;
      a.poke();
      await s.clock.waitForSleepers(1);
      for (let i = 0; i < 100 && a.status().state !== "ready"; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assertEquals(a.status().state, "ready");
      assert(a.current()!.serial !== first.serial);
    } finally {
      ac.abort();
      await loop;
    }
  });
  await t.step("ensure() without any token fails with a clear precondition", async () => {
    const a = agent(s, { store: new MemorySecretStore(), token: () => Promise.resolve(undefined) });
    const e = await assertRejects(() => a.ensure(), PreconditionError);
    assert(e.message.includes("no bootstrap token"), e.message);
  });
});

Deno.test("bring-your-own client certificates: no renewal, the secret is watched instead", async () => {
  const s = await setup({ issues: false });
  const store = new MemorySecretStore();
  const put = async (c: Awaited<ReturnType<typeof s.pki.client>>) =>
    await store.put("relay-client-tls-secret", {
      "tls.crt": new TextEncoder().encode(c.chainPem),
      "tls.key": new TextEncoder().encode(c.keyPem),
      "ca.crt": new TextEncoder().encode(s.pki.rootPem),
    });
  const mine = await s.pki.client("cluster-1", { validityMs: 10 * DAY });
  await put(mine);
  const a = agent(s, { store, token: () => Promise.resolve(undefined), pollMs: 6 * 3600_000 });
  const seen: ClientCredentials[] = [];
  assertEquals((await a.ensure()).serial, mine.certificate.serialNumber.toLowerCase());
  a.onChange((c) => seen.push(c));
  const ac = new AbortController();
  const loop = a.run(ac.signal);
  try {
    await s.clock.waitForSleepers(1);
    await s.clock.advance(a.renewalTime(a.current()!).getTime() - s.clock.now().getTime());
    await s.clock.waitForSleepers(1);
    assert(a.status().external, JSON.stringify(a.status()));
    assertEquals(a.status().state, "ready");
    const next = await s.pki.client("cluster-1", { now: s.clock.now(), validityMs: 10 * DAY });
    await put(next); // cert-manager rotates the secret
    await s.clock.advance(6 * 3600_000);
    await s.clock.waitForSleepers(1);
    assertEquals(seen.map((c) => c.serial), [next.certificate.serialNumber.toLowerCase()]);
  } finally {
    ac.abort();
    await loop;
  }
});

Deno.test("a certificate for another cluster in the secret is ignored and replaced", async () => {
  const s = await setup();
  const store = new MemorySecretStore();
  const other = await s.pki.client("cluster-2");
  await store.put("relay-client-tls-secret", {
    "tls.crt": new TextEncoder().encode(other.chainPem),
    "tls.key": new TextEncoder().encode(other.keyPem),
  });
  const log = memoryLogger();
  const a = agent(s, { store, log });
  const creds = await a.ensure();
  assert(log.lines.some((l) => l.level === "error" && String(l.error).includes("not for cluster")));
  assertEquals(creds.certificate.subject.includes("cluster-1"), true);
});

Deno.test("short-lived certificates: the window ignores the backdated notBefore, and a restart agrees", async () => {
  const s = await setup({ ttlMs: 6000 });
  const store = new MemorySecretStore();
  const a = agent(s, { store, random: () => 0 });
  const c = await a.ensure();
  const now = s.clock.now().getTime();
  assert(c.notBefore.getTime() < now - 60_000, "our CA backdates notBefore");
  const inMs = a.renewalTime(c).getTime() - now;
  assert(inMs > 3000 && inMs < 6000, `renews ${inMs} ms after issue, inside the 6 s lifetime`);
  // A restarted agent (no memory of when it got the cert) computes nearly the same moment.
  const b = agent(s, { store, random: () => 0 });
  const again = await b.ensure();
  const restartMs = b.renewalTime(again).getTime() - now;
  assert(restartMs > 3000 && restartMs < 6000, `after a restart: ${restartMs} ms`);
});

Deno.test("busy or unavailable server: transient, retried with backoff, the certificate comes in the end", async (t) => {
  await t.step("the gRPC statuses map to the transient errors", () => {
    assert(
      errorFromStatus({ code: GrpcStatus.RESOURCE_EXHAUSTED, details: "x" }) instanceof
        ResourceExhaustedError,
    );
    assert(errorFromStatus({ code: GrpcStatus.UNAVAILABLE, details: "x" }) instanceof UnavailableError);
    assert(errorFromStatus({ code: GrpcStatus.DEADLINE_EXCEEDED, details: "x" }) instanceof UnavailableError);
  });

  const cases: { name: string; refuse: (s: Awaited<ReturnType<typeof setup>>) => () => Promise<void> }[] = [
    {
      name: "Bootstrap refused as busy by the server's signing gate (per-cluster token kept)",
      refuse: (s) => holdSlot(s.gate!),
    },
    {
      name: "Bootstrap while the server is unreachable",
      refuse: (s) => {
        s.transport.failBootstraps.push(
          ...[1, 2, 3].map(() => new UnavailableError("relay server: connection refused")),
        );
        return () => Promise.resolve();
      },
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const s = await setup({ busyGate: true });
      // A single-use token: a refused attempt must not consume it, or the retry would fail for good.
      const { token } = await new TokenAuthority({ store: s.pki.store }).create("cluster-1", {
        now: s.clock.now(),
        ttlMs: DAY,
      });
      const log = memoryLogger();
      const a = agent(s, { token: () => Promise.resolve(token), log });
      const release = c.refuse(s);
      const ac = new AbortController();
      const loop = a.run(ac.signal);
      try {
        // random 0.5 and full jitter: waits of 500, 1000, 2000 ms (half of 1 s doubling).
        for (const [i, waitMs] of [500, 1000, 2000].entries()) {
          await s.clock.waitForSleepers(1);
          assertEquals(s.sent.length, i + 1);
          assertEquals(a.status().state, "error");
          assertEquals(a.current(), undefined);
          await s.clock.advance(waitMs - 1);
          assertEquals(s.sent.length, i + 1, "not before the backoff elapsed");
          if (i === 2) await release();
          await s.clock.advance(1);
        }
        await s.clock.waitForSleepers(1);
        assertEquals(s.sent.length, 4);
        assertEquals(a.status().state, "ready");
        assert(a.current(), "bootstrapped with the same token after the refusals");
        const said = log.lines.filter((l) => l.level === "error").map((l) => String(l.msg));
        assert(said.length >= 1 && said.every((m) => !m.includes("token")), JSON.stringify(said));
      } finally {
        ac.abort();
        await loop;
      }
    });
  }

  await t.step("Renew refused as busy: the current pair is kept and renewal retried", async () => {
    const s = await setup({ busyGate: true });
    const a = agent(s);
    const first = await a.ensure();
    const release = holdSlot(s.gate!);
    const ac = new AbortController();
    const loop = a.run(ac.signal);
    try {
      await s.clock.waitForSleepers(1);
      await s.clock.advance(a.renewalTime(first).getTime() - s.clock.now().getTime());
      await s.clock.waitForSleepers(1);
      assertEquals(a.status().state, "error");
      assert(a.status().message!.includes(SIGNING_BUSY_MESSAGE), a.status().message);
      assertEquals(a.current()!.serial, first.serial);
      await release();
      await s.clock.advance(500);
      await s.clock.waitForSleepers(1);
      assertEquals(a.status().state, "ready");
      assert(a.current()!.serial !== first.serial);
    } finally {
      ac.abort();
      await loop;
    }
  });

  await t.step("re-bootstrap after the server refused our certificate, first refused as busy", async () => {
    const s = await setup({ busyGate: true });
    const a = agent(s);
    const first = await a.ensure();
    const ac = new AbortController();
    const loop = a.run(ac.signal);
    try {
      await s.clock.waitForSleepers(1);
      const release = holdSlot(s.gate!);
      a.markRefused("certificate revoked");
      await s.clock.waitForSleepers(1);
      assertEquals(a.status().state, "error");
      await release();
      await s.clock.advance(500);
      await s.clock.waitForSleepers(1);
      assertEquals(a.status().state, "ready");
      assert(
        a.current()!.serial !== first.serial,
        "the refusal was not forgotten because of the busy answer",
      );
    } finally {
      ac.abort();
      await loop;
    }
  });
});
