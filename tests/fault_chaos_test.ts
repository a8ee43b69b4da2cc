/**
 * Chaos run with real processes on loopback: one `meshrelay server` (mTLS) and three `meshrelay agent`
 * processes, each agent behind its own TCP fault proxy. A fixed plan of faults and changes, in an order
 * shuffled by a seed, so every kind happens whatever the machine's speed: kill -9 and restart the
 * server (twice), and for every agent once each: kill -9 and restart it, cut its connections (drop),
 * black-hole them for a while (stall) and make them slow, each while it holds a session and, for stall
 * and slow, with a discovery change to push through the bad link (which, through a ServiceFederation,
 * changes the other clusters' desired state); rotate the server certificate on disk (twice) and change
 * the declared config (twice). Each fault must take effect where it happens: a cut session is seen by
 * its agent, which resyncs; a stall holds a session's bytes, which go through once it ends; bytes go
 * through the slow link; a rotation is served to a new TLS handshake and every agent, its session cut,
 * is back in sync on a new one.
 *
 * These stalls end before the agents' keepalive (30 s + 10 s by default) notices them; that an agent
 * gives a hung connection up by its own ping is tests/fault_keepalive_test.ts, with short keepalives.
 *
 * At the end, with every agent stopped gracefully, the server is asked through the protocol itself
 * (tests/support/relay_probe.ts): every cluster's inventory on the server equals what its discovery
 * folder holds, each key once; the first desired diff after a Hello listing what the agent's applier
 * holds is empty (applied == desired); the applier wrote one file per object (nothing duplicated).
 * No process exited on its own: the only non-zero exits are our kill -9s, and every process still
 * running at the end exits 0 on SIGTERM.
 */
import { connect } from "node:tls";
import { systemClock } from "../src/clock.ts";
import { nullLogger } from "../src/log.ts";
import {
  certificatesToPem,
  certificateToPem,
  generateKeyPair,
  issueCertificate,
  loadIssuer,
  privateKeyToPem,
} from "../src/pki/mod.ts";
import {
  DirectoryApplier,
  DirectoryDiscoverySource,
  objectKey,
  resourceVersionOf,
} from "../src/state/mod.ts";
import { FileSecretStore } from "../src/store/mod.ts";
import { FaultProxy } from "../src/testing/fault_proxy.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";
import {
  appliedFiles,
  freePort,
  localAgentArgs,
  type Proc,
  sleep,
  startAgent,
  startServer,
  waitFor,
} from "./relay_e2e_harness.ts";
import { seeded } from "./support/hostile.ts";
import { probe } from "./support/relay_probe.ts";

const CLUSTERS = ["c1", "c2", "c3"];
/** Faults aimed at one agent; the plan gives each agent each of them once. */
const AGENT_FAULTS = ["agent kill -9", "drop", "stall", "slow"] as const;
type Kind = typeof AGENT_FAULTS[number] | "server kill -9" | "server cert rotation" | "config change";
interface Planned {
  kind: Kind;
  slot?: AgentSlot;
}
/** The agent's session lines: the last of them says whether it holds a session now. */
const SESSION_LINES = new Set([
  "connected",
  "in sync with the server",
  "sync session ended; retrying",
  "reconnecting",
]);

const clustersYaml = CLUSTERS.map((c) =>
  `apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: ${c}\n  labels:\n    env: prod\n`
).join("---\n");

const federationYaml = `apiVersion: meshrelay.io/v1alpha1
kind: ServiceFederation
metadata:
  name: exported
spec:
  clusterSelector:
    matchLabels:
      env: prod
  exportSelector:
    matchLabels:
      export: "true"
  namespace: istio-system
`;

function baselineYaml(version: number): string {
  const maps = Array.from(
    { length: 2 + (version % 3) },
    (_, i) =>
      `    - apiVersion: v1\n      kind: ConfigMap\n      metadata:\n        name: base-${i}\n        namespace: apps\n      data:\n        v: "${version}"\n`,
  ).join("");
  return `apiVersion: meshrelay.io/v1alpha1\nkind: ClusterConfig\nmetadata:\n  name: baseline\nspec:\n  clusterSelector:\n    matchLabels:\n      env: prod\n  objects:\n${maps}`;
}

function discoveryYaml(cluster: string, version: number): string {
  const docs = [
    `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n`,
    `apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  replicas: ${
      1 + (version % 4)
    }\n`,
    `apiVersion: v1\nkind: Service\nmetadata:\n  name: web-${cluster}\n  namespace: apps\n  labels:\n    export: "true"\nspec:\n  ports:\n    - name: http\n      port: ${
      8000 + (version % 5)
    }\n`,
  ];
  if (version % 2 === 1) {
    docs.push(
      `apiVersion: v1\nkind: Service\nmetadata:\n  name: extra-${cluster}\n  namespace: apps\n  labels:\n    export: "true"\nspec:\n  ports:\n    - name: grpc\n      port: 9000\n`,
    );
  }
  return docs.join("---\n");
}

/** Hex serial as both node:tls and @peculiar/x509 may spell it (case, leading zeros). */
function normalSerial(hex: string): string {
  return hex.toLowerCase().replace(/^0+(?=.)/, "");
}

/** The serial of the leaf certificate a new TLS handshake with 127.0.0.1:`port` gets, once verified. */
function servedSerial(port: number, rootPem: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({
      host: "127.0.0.1",
      port,
      ca: rootPem,
      servername: "localhost",
      ALPNProtocols: ["h2"],
    }, () => {
      const serial = sock.getPeerCertificate().serialNumber;
      sock.destroy();
      resolve(normalSerial(serial ?? ""));
    });
    sock.setTimeout(5_000, () => sock.destroy(new Error("TLS handshake timed out")));
    sock.once("error", reject);
  });
}

async function writeAtomic(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(`${path}.tmp`, text);
  await Deno.rename(`${path}.tmp`, path);
}

interface AgentSlot {
  cluster: string;
  proxy: FaultProxy;
  proc?: Proc;
  dirs: { secrets: string; discovery: string; apply: string };
  version: number;
}

Deno.test("chaos: kills, cuts, stalls, slow links, cert rotation and changes converge with nothing lost or doubled", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "meshrelay-chaos-" });
  const secrets = `${tmp}/server-secrets`;
  const config = `${tmp}/config`;
  await Deno.mkdir(config, { recursive: true });
  await Deno.writeTextFile(`${config}/clusters.yaml`, clustersYaml);
  await Deno.writeTextFile(`${config}/federation.yaml`, federationYaml);
  let configVersion = 0;
  await Deno.writeTextFile(`${config}/baseline.yaml`, baselineYaml(configVersion));

  const port = freePort();
  const serverArgs = [
    "--port",
    String(port),
    "--metrics-port",
    "0",
    "--secrets-dir",
    secrets,
    "--config-dir",
    config,
    "--tls-reload-interval",
    "1s",
    "--warmup",
    "2s",
  ];
  const slots: AgentSlot[] = [];
  let server: Proc | undefined;
  const unexpected: string[] = [];
  let serverKills = 0;
  try {
    server = (await startServer(serverArgs, "chaos-server")).proc;
    const startSlot = (s: AgentSlot) => {
      s.proc = startAgent(
        localAgentArgs({
          cluster: s.cluster,
          serverAddress: `127.0.0.1:${s.proxy.port}`,
          serverSecrets: secrets,
          agentDir: `${tmp}/${s.cluster}`,
        }),
        `agent-${s.cluster}`,
      );
    };
    for (const cluster of CLUSTERS) {
      const dirs = {
        secrets: `${tmp}/${cluster}/secrets`,
        discovery: `${tmp}/${cluster}/discovery`,
        apply: `${tmp}/${cluster}/applied`,
      };
      await Deno.mkdir(dirs.discovery, { recursive: true });
      await Deno.mkdir(dirs.secrets, { recursive: true });
      await Deno.writeTextFile(`${dirs.discovery}/objects.yaml`, discoveryYaml(cluster, 0));
      const slot: AgentSlot = {
        cluster,
        proxy: await FaultProxy.start({ targetPort: port, slowSliceBytes: 256, slowDelayMs: 5 }),
        dirs,
        version: 0,
      };
      slots.push(slot);
      startSlot(slot);
    }
    for (const s of slots) {
      await s.proc!.waitForLine((l) => l.msg === "in sync with the server", `${s.cluster} in sync`, 30_000);
    }

    /** A new server certificate from the signing CA, written as cert-manager would; returns its serial. */
    const rotateServerCert = async (): Promise<string> => {
      const now = new Date();
      const signing = await loadIssuer(
        await Deno.readTextFile(`${secrets}/relay-tls-signing-secret/tls.crt`),
        await Deno.readTextFile(`${secrets}/relay-tls-signing-secret/tls.key`),
        { now },
      );
      const kp = await generateKeyPair();
      const cert = await issueCertificate({
        profile: "server",
        subject: "CN=meshrelay-server",
        dnsNames: ["localhost"],
        ipAddresses: ["127.0.0.1", "::1"],
        publicKey: kp.publicKey,
        issuer: signing,
        now,
        validityMs: 86_400_000,
      });
      const enc = new TextEncoder();
      const store = new FileSecretStore(secrets);
      const cur = await store.get("relay-server-tls-secret");
      await store.put("relay-server-tls-secret", {
        ...cur?.data,
        "tls.crt": enc.encode(certificateToPem(cert) + certificatesToPem([signing.certificate])),
        "tls.key": enc.encode(await privateKeyToPem(kp)),
      });
      return normalSerial(cert.serialNumber);
    };
    /** Until `s` holds a session through its proxy (welcomed by the server, not yet cut). */
    const waitLive = (s: AgentSlot) =>
      waitFor(`${s.cluster} in a session`, () => {
        const last = s.proc!.lines.findLast((l) => SESSION_LINES.has(l.msg))?.msg;
        return (last === "connected" || last === "in sync with the server") && s.proxy.connections > 0;
      }, 30_000);
    /** Until `s`'s session, cut after line `from`, is replaced by a new one in sync. */
    const waitResynced = async (s: AgentSlot, from: number, what: string) => {
      const cut = await s.proc!.waitForLine(
        (l) => l.msg === "sync session ended; retrying",
        `${s.cluster} session cut ${what}`,
        30_000,
        from,
      );
      await s.proc!.waitForLine(
        (l) => l.msg === "in sync with the server",
        `${s.cluster} in sync ${what}`,
        30_000,
        s.proc!.lines.indexOf(cut) + 1,
      );
    };

    // ------------------------------------------------------------------ the chaos
    // A fixed plan, shuffled with the seed: every kind of fault happens however fast this machine is,
    // and every agent gets each agent-side fault once (not whichever cluster the dice liked).
    const r = seeded(20261123);
    const plan: Planned[] = [
      ...AGENT_FAULTS.flatMap((kind) => slots.map((slot) => ({ kind, slot }))),
      { kind: "server kill -9" },
      { kind: "server kill -9" },
      { kind: "server cert rotation" },
      { kind: "server cert rotation" },
      { kind: "config change" },
      { kind: "config change" },
    ];
    for (let i = plan.length - 1; i > 0; i--) {
      const j = r.int(i + 1);
      [plan[i], plan[j]] = [plan[j], plan[i]];
    }
    const events: string[] = [];
    const rootPem = await Deno.readTextFile(`${secrets}/relay-root-tls-secret/ca.crt`);
    const changeDiscovery = async (s: AgentSlot, why: string) => {
      events.push(`discovery ${s.cluster} v${s.version + 1}${why}`);
      await writeAtomic(`${s.dirs.discovery}/objects.yaml`, discoveryYaml(s.cluster, ++s.version));
    };
    for (const { kind, slot: s } of plan) {
      if (kind === "server kill -9") {
        events.push("kill -9 server");
        const st = await server!.kill9();
        if (st.signal !== "SIGKILL") unexpected.push(`server ended before our kill: ${JSON.stringify(st)}`);
        serverKills++;
        await sleep(100 + r.int(600));
        server = (await startServer(serverArgs, `chaos-server-${serverKills}`)).proc;
      } else if (kind === "agent kill -9") {
        events.push(`kill -9 agent ${s!.cluster}`);
        const st = await s!.proc!.kill9();
        if (st.signal !== "SIGKILL") {
          unexpected.push(`${s!.cluster} ended before our kill: ${JSON.stringify(st)}`);
        }
        await sleep(r.int(500));
        startSlot(s!);
      } else if (kind === "drop") {
        // A fault on a link with no session on it tests nothing: wait for one.
        await waitLive(s!);
        events.push(`drop ${s!.cluster}`);
        const mark = s!.proc!.mark;
        s!.proxy.drop();
        // It took effect when the agent saw its session cut and came back on a new connection.
        await waitResynced(s!, mark, "after drop");
      } else if (kind === "stall") {
        await waitLive(s!);
        events.push(`stall ${s!.cluster}`);
        s!.proxy.mode = "stall";
        // Counted from a moment later: a slice already being forwarded when the mode changed may land.
        await sleep(50);
        const before = s!.proxy.forwarded;
        // A change the agent must push while its link is black-holed: it waits behind the stall.
        await changeDiscovery(s!, " (stalled)");
        await sleep(300 + r.int(1200));
        const held = { connections: s!.proxy.connections, forwarded: s!.proxy.forwarded - before };
        s!.proxy.mode = "pass";
        // Held: a session was on the link and not a byte of it went through meanwhile; and what was held
        // (at least the change) goes through once the link works again.
        assertEquals(held.forwarded, 0, `stall ${s!.cluster}: bytes went through the stalled link`);
        assert(held.connections > 0, `stall ${s!.cluster}: no connection on the link to stall`);
        await waitFor(
          `stall ${s!.cluster}: the held bytes go through`,
          () => s!.proxy.forwarded > before,
          10_000,
        );
      } else if (kind === "slow") {
        await waitLive(s!);
        events.push(`slow ${s!.cluster}`);
        s!.proxy.mode = "slow";
        const before = s!.proxy.forwarded;
        await changeDiscovery(s!, " (slow)");
        await sleep(500 + r.int(1000));
        const slowed = s!.proxy.forwarded - before;
        s!.proxy.mode = "pass";
        assert(slowed > 0, `slow ${s!.cluster}: nothing went through the slow link`);
      } else if (kind === "server cert rotation") {
        const serial = await rotateServerCert();
        events.push(`rotate server certificate (${serial})`);
        // Served, not just written: a new handshake (straight to the server) gets the new leaf.
        let served = "";
        await waitFor(`the server serving the rotated certificate ${serial}`, async () => {
          served = await servedSerial(port, rootPem).catch((e) => `${e}`);
          return served === serial;
        }, 15_000).catch((e) => {
          throw new Error(`${e.message}; last served: ${served}`);
        });
        // And the agents work with it: every session cut, every agent back in sync on a new handshake.
        await Promise.all(slots.map(waitLive));
        const marks = slots.map((x) => x.proc!.mark);
        for (const x of slots) x.proxy.drop();
        await Promise.all(slots.map((x, i) => waitResynced(x, marks[i], `after rotation to ${serial}`)));
      } else {
        events.push(`config v${configVersion + 1}`);
        await writeAtomic(`${config}/baseline.yaml`, baselineYaml(++configVersion));
      }
      // A process that ended on its own is a crash.
      for (const x of slots) {
        if (x.proc?.exited) unexpected.push(`${x.cluster} exited: ${JSON.stringify(x.proc.exited)}`);
      }
      if (server?.exited) unexpected.push(`server exited: ${JSON.stringify(server.exited)}`);
      assertEquals(unexpected, [], `after ${events.join(", ")}`);
      await sleep(50 + r.int(350));
    }

    // ------------------------------------------------------------------ convergence
    for (const s of slots) s.proxy.mode = "pass";
    /** The server's view of `s` vs the truth, through the protocol; a list of differences. */
    const differences = async (s: AgentSlot): Promise<string[]> => {
      const crt = await Deno.readTextFile(`${s.dirs.secrets}/relay-client-tls-secret/tls.crt`);
      const key = await Deno.readTextFile(`${s.dirs.secrets}/relay-client-tls-secret/tls.key`);
      const applier = new DirectoryApplier({ root: s.dirs.apply, log: nullLogger });
      const held = new Map([...await applier.held()].map(([k, v]) => [k, v.version]));
      let p;
      try {
        p = await probe(port, rootPem, { certPem: crt, keyPem: key }, held, 5_000);
      } catch (e) {
        return [`probe: ${e instanceof Error ? e.message : e}`];
      }
      const truth = await new DirectoryDiscoverySource({
        root: s.dirs.discovery,
        clock: systemClock,
        log: nullLogger,
      }).snapshot();
      const want = new Map(truth.map((o) => [objectKey(o), resourceVersionOf(o)]));
      const out: string[] = [];
      const keys = p.inventory.map(([k]) => k);
      if (new Set(keys).size !== keys.length) out.push("a key twice in the server's inventory");
      const inv = new Map(p.inventory);
      for (const [k, v] of want) if (inv.get(k) !== v) out.push(`server inventory lacks ${k}@${v}`);
      for (const k of inv.keys()) if (!want.has(k)) out.push(`server inventory has stale ${k}`);
      for (const k of p.upserts) out.push(`applied lacks desired ${k}`);
      for (const k of p.deletes) out.push(`applied has undesired ${k}`);
      if (held.size === 0) out.push("nothing applied");
      const files = (await appliedFiles(s.dirs.apply)).length;
      if (files !== held.size) out.push(`${files} files for ${held.size} objects`);
      return out.map((d) => `${s.cluster}: ${d}`);
    };
    // Probing replaces the agent's stream; the agent reconnects and resyncs by difference, so
    // probing while agents run is safe, and converged means every probe found nothing.
    let last: string[] = [];
    await waitFor(`convergence after ${events.join(", ")}`, async () => {
      last = (await Promise.all(slots.map(differences))).flat();
      return last.length === 0;
    }, 40_000).catch((e) => {
      throw new Error(`${e.message}\n${last.join("\n")}`);
    });
    for (const s of slots) {
      // Convergence is read from disk and the server, so it can hold while an agent restarted by the last
      // chaos event is still loading: a SIGTERM before its handler exists is the default death (143), not
      // a graceful-stop failure. Stop it once it has started.
      await s.proc!.waitForLine((l) => l.msg === "relay agent started", `${s.cluster} started`, 30_000);
      const st = await s.proc!.stop("SIGTERM");
      assertEquals(st.code, 0, `${s.cluster} exit on SIGTERM: ${JSON.stringify(st)}`);
    }
    // Stopped agents change nothing: the same holds with nobody connected.
    assertEquals((await Promise.all(slots.map(differences))).flat(), []);
    const st = await server!.stop("SIGTERM");
    assertEquals(st.code, 0, `server exit on SIGTERM: ${JSON.stringify(st)}`);
    console.log(`chaos: ${events.length} events: ${events.join(", ")}`);
  } finally {
    for (const s of slots) {
      await s.proc?.kill9();
      await s.proxy.close();
    }
    await server?.kill9();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
});
