import { FakeClock } from "../clock.ts";
import { PreconditionError } from "../errors.ts";
import { nullLogger } from "../log.ts";
import {
  dnsNamesOf,
  importPrivateKey,
  keyMatchesCertificate,
  parseCertificates,
  verifyChain,
} from "../pki/mod.ts";
import { type KubeObject, parseDeclaredConfig } from "../state/mod.ts";
import { MemorySecretStore } from "../store/mod.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import type { ClientKeyPair } from "./client_credentials.ts";
import { ISTIOD_SAN, MeshCaAuthority } from "./mesh_ca.ts";
import { ISTIO_CACERTS_SECRET, MeshCaAgent, type MeshCaTransport } from "./mesh_ca_agent.ts";

const NOW = new Date("2026-06-01T00:00:00Z");
const DAY = 86_400_000;
const dec = new TextDecoder();
const V = "meshrelay.io/v1alpha1";
const CREDS: ClientKeyPair = { certChainPem: "client-cert", keyPem: "client-key" };

function rig(opts: { policy?: boolean; credentials?: boolean } = {}) {
  const clock = new FakeClock(NOW);
  const docs: KubeObject[] = [{ apiVersion: V, kind: "KubernetesCluster", metadata: { name: "c1" } }];
  if (opts.policy !== false) {
    docs.push({
      apiVersion: V,
      kind: "RootTrustPolicy",
      metadata: { name: "mesh" },
      spec: { mgmtServerCa: { generated: {} }, intermediateCertOptions: { ttlDays: 10 } },
    });
  }
  const declared = { value: parseDeclaredConfig(docs) };
  const serverStore = new MemorySecretStore();
  const authority = new MeshCaAuthority({
    store: serverStore,
    declared: () => declared.value,
    log: nullLogger,
  });
  const calls: ClientKeyPair[] = [];
  const transport: MeshCaTransport = {
    signMeshCa: async (req, current) => {
      calls.push(current);
      return (await authority.sign("c1", req.csrPem, clock.now())).response;
    },
  };
  const store = new MemorySecretStore();
  const restarts: Date[] = [];
  const creds = { value: opts.credentials === false ? undefined : CREDS };
  const agent = new MeshCaAgent({
    cluster: "c1",
    store,
    transport,
    credentials: () => creds.value,
    restart: () => {
      restarts.push(clock.now());
      return Promise.resolve(["istio-system/istiod"]);
    },
    clock,
    random: () => 0.5,
    log: nullLogger,
    retry: { initialMs: 1000, maxMs: 1000 },
    // Sleeps last until the renewal moment, so advancing the fake clock by days wakes the loop once.
    pollMs: 100 * DAY,
  });
  const ctl = new AbortController();
  let running: Promise<void> | undefined;
  return {
    clock,
    store,
    agent,
    calls,
    restarts,
    creds,
    declared,
    start: () => running = agent.run(ctl.signal),
    stop: async () => {
      ctl.abort();
      await running;
    },
  };
}

/** Lets the event loop run (no clock time passes) until `cond` holds; bounded in turns. */
async function settle(cond: () => boolean, maxTurns = 20_000): Promise<void> {
  for (let i = 0; i < maxTurns && !cond(); i++) await new Promise((r) => setTimeout(r, 0));
  assert(cond(), "condition not reached");
}

async function cacerts(store: MemorySecretStore) {
  const s = await store.get(ISTIO_CACERTS_SECRET);
  assert(s, "cacerts written");
  const text = Object.fromEntries(Object.entries(s.data).map(([k, v]) => [k, dec.decode(v)]));
  return { text, version: s.version };
}

Deno.test("MeshCaAgent keeps cacerts issued and fresh", async (t) => {
  await t.step("missing: issued over mTLS, written whole, Istio restarted once", async () => {
    const r = rig();
    r.start();
    try {
      await r.clock.waitForSleepers(1);
      const { text } = await cacerts(r.store);
      assertEquals(Object.keys(text).sort(), [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
      ]);
      const [ca] = parseCertificates(text["ca-cert.pem"]);
      const [root] = parseCertificates(text["root-cert.pem"]);
      assertEquals(ca.subject, "O=Istio, CN=Intermediate CA, L=c1");
      assertEquals(dnsNamesOf(ca), [ISTIOD_SAN]);
      assertEquals(text["cert-chain.pem"], text["ca-cert.pem"] + text["root-cert.pem"]);
      assert(await keyMatchesCertificate(await importPrivateKey(text["ca-key.pem"]), ca));
      await verifyChain(ca, { roots: [root], now: r.clock.now() });
      assertEquals(r.calls, [CREDS]);
      assertEquals(r.restarts.length, 1);
      assertEquals(r.agent.status().state, "ready");
    } finally {
      await r.stop();
    }
  });

  await t.step("valid: kept until its renewal window, then renewed with a new key", async () => {
    const r = rig();
    r.start();
    try {
      await r.clock.waitForSleepers(1);
      const first = await cacerts(r.store);
      // 10-day intermediate, random 0.5: renewal at 80% of the lifetime.
      await r.clock.advance(7.9 * DAY);
      assertEquals((await cacerts(r.store)).version, first.version);
      assertEquals(r.calls.length, 1);
      await r.clock.advance(0.2 * DAY);
      await settle(() => r.calls.length === 2 && r.agent.status().state === "ready");
      await r.clock.waitForSleepers(1);
      const second = await cacerts(r.store);
      assert(second.version !== first.version, "renewed");
      assert(second.text["ca-key.pem"] !== first.text["ca-key.pem"], "new key");
      assertEquals(second.text["root-cert.pem"], first.text["root-cert.pem"]);
      assertEquals(r.calls.length, 2);
      assertEquals(r.restarts.length, 2);
    } finally {
      await r.stop();
    }
  });

  await t.step("a restarted agent keeps a valid cacerts (no new intermediate, no restart)", async () => {
    const r = rig();
    r.start();
    await r.clock.waitForSleepers(1);
    await r.stop();
    const again = new MeshCaAgent({
      cluster: "c1",
      store: r.store,
      transport: { signMeshCa: () => Promise.reject(new Error("must not be called")) },
      credentials: () => CREDS,
      clock: r.clock,
      random: () => 0.5,
      log: nullLogger,
    });
    const ctl = new AbortController();
    const run = again.run(ctl.signal);
    await r.clock.waitForSleepers(1);
    assertEquals(again.status().state, "ready");
    ctl.abort();
    await run;
  });

  await t.step("unusable (key of another certificate): counts as missing", async () => {
    const r = rig();
    r.start();
    await r.clock.waitForSleepers(1);
    const good = await cacerts(r.store);
    await r.stop();
    const other = rig();
    other.start();
    await other.clock.waitForSleepers(1);
    await other.stop();
    const foreignKey = (await cacerts(other.store)).text["ca-key.pem"];
    const enc = new TextEncoder();
    await r.store.put(ISTIO_CACERTS_SECRET, {
      ...Object.fromEntries(Object.entries(good.text).map(([k, v]) => [k, enc.encode(v)])),
      "ca-key.pem": enc.encode(foreignKey),
    });
    assertEquals(await r.agent.read(r.clock.now()), undefined);
  });

  await t.step("no client certificate yet: waits, then issues when poked", async () => {
    const r = rig({ credentials: false });
    r.start();
    try {
      await r.clock.waitForSleepers(1);
      assertEquals(r.agent.status().state, "waiting");
      assertEquals(await r.store.get(ISTIO_CACERTS_SECRET), undefined);
      r.creds.value = CREDS;
      r.agent.poke();
      await r.clock.waitForSleepers(1);
      await cacerts(r.store);
      assertEquals(r.agent.status().state, "ready");
    } finally {
      await r.stop();
    }
  });

  await t.step(
    "no RootTrustPolicy serves the cluster: waiting with the server's reason, then issued",
    async () => {
      const r = rig({ policy: false });
      r.start();
      try {
        await r.clock.waitForSleepers(1);
        const st = r.agent.status();
        assertEquals(st.state, "waiting");
        assert(/no RootTrustPolicy serves cluster "c1"/.test(st.message ?? ""), st.message);
        r.declared.value = rig().declared.value;
        await r.clock.advance(1000);
        await r.clock.waitForSleepers(1);
        await cacerts(r.store);
        assertEquals(r.agent.status().state, "ready");
      } finally {
        await r.stop();
      }
    },
  );

  await t.step("(control) a transport that fails leaves nothing written", async () => {
    const clock = new FakeClock(NOW);
    const store = new MemorySecretStore();
    const agent = new MeshCaAgent({
      cluster: "c1",
      store,
      transport: { signMeshCa: () => Promise.reject(new PreconditionError("nope")) },
      credentials: () => CREDS,
      clock,
      random: () => 0.5,
      log: nullLogger,
    });
    const ctl = new AbortController();
    const run = agent.run(ctl.signal);
    await clock.waitForSleepers(1);
    assertEquals(await store.get(ISTIO_CACERTS_SECRET), undefined);
    assertEquals(agent.status().state, "waiting");
    ctl.abort();
    await run;
  });
});
