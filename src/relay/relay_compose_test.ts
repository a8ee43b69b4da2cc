/**
 * The composed server and agent in one process over 127.0.0.1 (mTLS): bootstrap → mTLS session →
 * discovery pushed → desired state applied → renewal → deregistration. The real-process versions of
 * these are in tests/relay_*_e2e_test.ts.
 */
import { systemClock } from "../clock.ts";
import { nullLogger } from "../log.ts";
import { DirectoryApplier, DirectoryConfigSource, DirectoryDiscoverySource } from "../state/mod.ts";
import { MemorySecretStore } from "../store/mod.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { RelayAgent } from "./relay_agent.ts";
import { RelayServer } from "./relay_server.ts";
import { IDENTITY_TOKEN_SECRET } from "./tokens.ts";

const EXAMPLES = new URL("../../examples/", import.meta.url).pathname;
const dec = new TextDecoder();

async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`, `${rel}${e.name}/`);
      else if (!e.name.startsWith(".")) out.push(rel + e.name);
    }
  };
  await walk(dir, "").catch(() => {});
  return out.sort();
}

/** What {@linkcode withServerAndAgent} hands its test. */
interface Rig {
  server: RelayServer;
  agent: RelayAgent;
  /** The relay root CA, PEM, as the server generated it. */
  root: string;
  /** The server's config folder (a copy of the examples' config: tests may edit it). */
  configDir: string;
  /** Where the agent applies its desired state. */
  applyDir: string;
}

/** A server on a copy of the examples' config and one agent for cluster-1, stopped after `fn`. */
async function withServerAndAgent(
  serverOpts: { sessionBindingTtlMs?: number },
  fn: (rig: Rig) => Promise<void>,
): Promise<void> {
  const tmp = await Deno.makeTempDir({ prefix: "meshrelay-compose-" });
  const configDir = `${tmp}/config`;
  const applyDir = `${tmp}/apply-1`;
  await Deno.mkdir(configDir);
  for await (const e of Deno.readDir(`${EXAMPLES}config`)) {
    await Deno.copyFile(`${EXAMPLES}config/${e.name}`, `${configDir}/${e.name}`);
  }
  const serverStore = new MemorySecretStore();
  const server = await RelayServer.start({
    mode: "mtls",
    store: serverStore,
    config: new DirectoryConfigSource({
      root: configDir,
      clock: systemClock,
      log: nullLogger,
      rescanIntervalMs: 200,
    }),
    clock: systemClock,
    log: nullLogger,
    host: "127.0.0.1",
    port: 0,
    metricsPort: null,
    warmupMs: 0,
    debounceMs: 20,
    reloadIntervalMs: 200,
    ...serverOpts,
  });
  const root = dec.decode((await serverStore.get("relay-root-tls-secret"))!.data["ca.crt"]);
  const token = dec.decode((await serverStore.get(IDENTITY_TOKEN_SECRET))!.data.token);
  const agent = await RelayAgent.start({
    mode: "mtls",
    cluster: "cluster-1",
    serverAddress: `127.0.0.1:${server.port}`,
    store: new MemorySecretStore(),
    rootCaPem: () => Promise.resolve(root),
    token: () => Promise.resolve(token),
    discovery: new DirectoryDiscoverySource({
      root: `${EXAMPLES}clusters/cluster-1`,
      clock: systemClock,
      log: nullLogger,
    }),
    applier: new DirectoryApplier({ root: applyDir, log: nullLogger }),
    clock: systemClock,
    random: Math.random,
    log: nullLogger,
    agentVersion: "test",
    metricsPort: null,
    backoff: { initialMs: 100, maxMs: 500 },
  });
  try {
    await fn({ server, agent, root, configDir, applyDir });
  } finally {
    await agent.stop();
    await server.stop();
    await Deno.remove(tmp, { recursive: true });
  }
}

function counter(server: RelayServer, name: string, labels: string): number {
  const series = labels ? `${name}{${labels}} ` : `${name} `;
  const line = server.metrics.render().split("\n").find((l) => l.startsWith(series));
  return line ? Number(line.split(" ").pop()) : 0;
}

Deno.test("session binding: the first stream shares the Bootstrap connection; a late or absent binding falls back to mTLS", async (t) => {
  const cases = [
    { name: "offered and redeemed", ttl: undefined, redeemed: 1, refused: 0, accepted: 1 },
    // 1 ms: spent before the Sync call comes. The agent neither re-bootstraps nor gives up: it dials mTLS.
    { name: "offered but too late: refused, no new Bootstrap", ttl: 1, redeemed: 0, refused: 1, accepted: 2 },
    { name: "not offered (--session-binding-ttl 0)", ttl: 0, redeemed: 0, refused: 0, accepted: 2 },
  ];
  for (const c of cases) {
    await t.step(
      c.name,
      () =>
        withServerAndAgent({ sessionBindingTtlMs: c.ttl }, async ({ server, agent, root }) => {
          await waitFor("sync", () => agent.sync.state === "synced");
          // The server left its anchors out of the answer (the agent named them); the agent kept its own.
          assertEquals(agent.identity!.current()!.caPem, root);
          const m = (name: string, labels: string) => counter(server, name, labels);
          assertEquals(m("meshrelay_client_certificates_issued_total", 'rpc="bootstrap"'), 1);
          assertEquals(m("meshrelay_session_bindings_total", 'result="redeemed"'), c.redeemed);
          assertEquals(m("meshrelay_session_bindings_total", 'result="refused"'), c.refused);
          assertEquals(m("meshrelay_connections_accepted_total", ""), c.accepted);
        }),
    );
  }
});

Deno.test("composed mTLS relay: bootstrap, sync, apply, renew, deregister", () =>
  withServerAndAgent({}, async ({ server, agent, configDir, applyDir }) => {
    await waitFor("bootstrap", () => agent.identity!.status().state === "ready");
    const first = agent.identity!.current()!;
    await waitFor("sync", () => agent.sync.state === "synced");
    await waitFor("desired state applied", async () => (await files(applyDir)).length > 0);
    assert(
      (await files(applyDir)).some((f) => f.includes("Namespace") && f.includes("mesh-config")),
      String(await files(applyDir)),
    );
    assert(server.hub.inventoryVersions("cluster-1").size > 0, "discovery pushed");

    // Renewal: a new certificate, and the session comes back with it.
    const sessionsBefore = agent.sync.stats.sessions;
    const renewed = await agent.identity!.renew();
    assert(renewed.serial !== first.serial);
    await waitFor(
      "reconnect with the new certificate",
      () => agent.sync.stats.sessions > sessionsBefore && agent.sync.state === "synced",
    );

    // Deregistration: stream closed, certificate refused from then on.
    const clustersYaml = await Deno.readTextFile(`${configDir}/clusters.yaml`);
    await Deno.writeTextFile(`${configDir}/clusters.yaml`, clustersYaml.split("---")[1]);
    await waitFor("stream closed", () => agent.sync.state !== "synced");
    await waitFor(
      "revocation recorded",
      () => server.revocations.clusterRevokedAt("cluster-1") !== undefined,
    );
    await waitFor("refused", () => agent.sync.stats.lastCode === 7);
    assertEquals(server.hub.isRegistered("cluster-1"), false);
  }));
