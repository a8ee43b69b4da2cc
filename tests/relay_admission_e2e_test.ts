/**
 * Signing admission control against a real `meshrelay server` process started with one signing slot and
 * one queue place (`--max-concurrent-signing 1 --signing-queue 1`):
 *
 * - a burst of concurrent Bootstraps on one connection: some are issued, the rest are refused at once with
 *   RESOURCE_EXHAUSTED and the clear message, counted in meshrelay_admission_refused_total, and not charged
 *   to the per-peer failure limit (the same address is served right after);
 * - agents (the agent's identity manager over its real gRPC transport) that start while the server is kept
 *   busy are refused as busy, retry with their backoff, and all end up with certificates;
 * - bad admission flags are refused with one clear line.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { systemClock } from "../src/clock.ts";
import { GrpcStatus, ResourceExhaustedError } from "../src/errors.ts";
import { nullLogger } from "../src/log.ts";
import { createCsr, generateKeyPair } from "../src/pki/mod.ts";
import { type BootstrapRequest, type CertificateResponse, IdentityClient } from "../src/proto/mod.ts";
import type { IdentityTransport } from "../src/relay/agent_identity.ts";
import { grpcIdentityTransport } from "../src/relay/identity_transport.ts";
import { AgentIdentity, SIGNING_BUSY_MESSAGE } from "../src/relay/mod.ts";
import { MemorySecretStore } from "../src/store/mod.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";
import { localServerArgs, metricValue, readToken, runCli, waitFor, withRelay } from "./relay_e2e_harness.ts";

type Outcome = { code: number; details: string };

function bootstrapOnce(c: IdentityClient, req: BootstrapRequest): Promise<Outcome> {
  return new Promise((resolve) => {
    c.bootstrap(
      req,
      new grpc.Metadata(),
      { deadline: Date.now() + 20_000 },
      (e, _r?: CertificateResponse) => {
        resolve(e ? { code: e.code, details: e.details } : { code: GrpcStatus.OK, details: "" });
      },
    );
  });
}

async function csrFor(cluster: string): Promise<string> {
  return await createCsr(await generateKeyPair(), { dnsNames: [cluster] });
}

/** An Identity client on a connection of its own (not shared with other clients of the same target). */
function identityClient(port: number, rootPem: string): IdentityClient {
  return new IdentityClient(`localhost:${port}`, grpc.credentials.createSsl(Buffer.from(rootPem)), {
    "grpc.use_local_subchannel_pool": 1,
  });
}

const AGENTS = 30;

Deno.test("signing admission: a burst is partly refused as busy, and busy agents still get certificates", async (t) => {
  await withRelay("admission", async (ws) => {
    const secrets = `${ws.dir}/server`;
    const s = await ws.server([
      ...localServerArgs(ws.config, { metrics: true }),
      "--secrets-dir",
      secrets,
      "--max-concurrent-signing",
      "1",
      "--signing-queue",
      "1",
      "--bootstrap-failure-burst",
      "2",
      "--bootstrap-failures-per-minute",
      "1",
    ], "admission-server");
    const token = await readToken(secrets);
    const rootPem = await Deno.readTextFile(`${secrets}/relay-root-tls-secret/ca.crt`);
    const client = identityClient(s.port, rootPem);
    const refused = () =>
      metricValue(s.metricsPort!, "meshrelay_admission_refused_total", { gate: "signing" });
    try {
      await t.step(
        "40 concurrent Bootstraps on one connection: some issued, the rest refused as busy",
        async () => {
          const csrs = await Promise.all(Array.from({ length: 40 }, () => csrFor("cluster-1")));
          const outcomes = await Promise.all(
            csrs.map((csrPem) => bootstrapOnce(client, { token, cluster: "cluster-1", csrPem })),
          );
          const ok = outcomes.filter((o) => o.code === GrpcStatus.OK).length;
          const busy = outcomes.filter((o) =>
            o.code === GrpcStatus.RESOURCE_EXHAUSTED && o.details === SIGNING_BUSY_MESSAGE
          ).length;
          assertEquals(
            ok + busy,
            outcomes.length,
            JSON.stringify(
              outcomes.filter((o) =>
                o.code !== 0
              ).slice(0, 3),
            ),
          );
          assert(ok >= 2, `issued ${ok}`);
          // More busy answers than the failure burst (2): had they been charged, the next call would be limited.
          assert(busy > 2, `refused as busy ${busy}`);
          assertEquals(await refused(), busy);
          assertEquals(
            await metricValue(s.metricsPort!, "meshrelay_client_certificates_issued_total", {
              rpc: "bootstrap",
            }),
            ok,
          );
          const after = await bootstrapOnce(client, {
            token,
            cluster: "cluster-1",
            csrPem: await csrFor("cluster-1"),
          });
          assertEquals(
            after,
            { code: GrpcStatus.OK, details: "" },
            "busy answers are not charged as failures",
          );
        },
      );

      await t.step(
        `${AGENTS} agents starting while the server is busy: refused, retried, all issued`,
        async () => {
          // Keep the slot and the queue place taken: 24 calls always in flight, each re-sent when it ends.
          let flooding = true;
          const floodCsr = await csrFor("cluster-1");
          const flood = Promise.all(Array.from({ length: 24 }, async () => {
            while (flooding) await bootstrapOnce(client, { token, cluster: "cluster-1", csrPem: floodCsr });
          }));
          // One transport per agent, as in `meshrelay agent`: its retries reuse its connection.
          const transports = Array.from({ length: AGENTS }, () =>
            grpcIdentityTransport({
              serverAddress: `localhost:${s.port}`,
              rootCaPem: () => Promise.resolve(rootPem),
            }));
          const attempts = Array.from({ length: AGENTS }, () => ({ busy: 0, other: [] as string[] }));
          const stop = new AbortController();
          const agents = attempts.map((seen, i) => {
            // The agent's own transport, recording what the server answered.
            const real = transports[i];
            const transport: IdentityTransport = {
              bootstrap: async (req, signal) => {
                try {
                  return await real.bootstrap(req, signal);
                } catch (e) {
                  if (e instanceof ResourceExhaustedError && e.message === SIGNING_BUSY_MESSAGE) seen.busy++;
                  else seen.other.push(String(e));
                  throw e;
                }
              },
              renew: (req, cur, signal) => real.renew(req, cur, signal),
            };
            return new AgentIdentity({
              cluster: i % 2 ? "cluster-1" : "cluster-2",
              store: new MemorySecretStore(),
              transport,
              token: () => Promise.resolve(token),
              clock: systemClock,
              random: Math.random,
              log: nullLogger,
            });
          });
          const loops: Promise<void>[] = [];
          const accepted = () => metricValue(s.metricsPort!, "meshrelay_connections_accepted_total");
          let acceptedBefore = 0;
          try {
            await waitFor("the flood keeps the server busy", async () => await refused() > 200, 30_000);
            acceptedBefore = await accepted();
            loops.push(...agents.map((a) => a.run(stop.signal)));
            await waitFor("every agent tried once", () =>
              agents.every((a, i) => a.current() || attempts[i].busy), 60_000);
          } finally {
            flooding = false;
            await flood;
          }
          try {
            const busyAgents = attempts.filter((a) =>
              a.busy > 0
            ).length;
            assert(busyAgents >= 1, "at least one agent was refused as busy");
            await waitFor("every agent has a certificate", () => agents.every((a) => a.current()), 90_000);
            assertEquals(attempts.flatMap((a) => a.other), [], "no answer but busy and issued");
            assert(agents.every((a) => a.status().state === "ready"));
            // A busy answer comes on a working connection: the retry reuses it (each closed connection
            // costs the server memory, docs/relay.md "Known limits").
            const busy = attempts.reduce((n, a) => n + a.busy, 0);
            const made = await accepted() - acceptedBefore;
            assert(made <= AGENTS, `${made} connections for ${AGENTS} agents and ${busy} busy retries`);
          } finally {
            stop.abort();
            await Promise.all(loops);
            for (const tr of transports) tr.close();
          }
        },
      );
    } finally {
      client.close();
    }
  });
});

Deno.test("signing admission flags: bad values are refused with one clear line", async (t) => {
  const cases: [string[], RegExp][] = [
    [["--max-concurrent-signing", "0"], /--max-concurrent-signing.*at least 1/],
    [["--signing-queue", "-1"], /--signing-queue .*whole number/],
    [["--signing-queue-wait", "soon"], /--signing-queue-wait.*duration/],
    [["--secret-cache-max-age", "-5s"], /--secret-cache-max-age.*duration/],
  ];
  for (const [args, re] of cases) {
    await t.step(args.join(" "), async () => {
      const r = await runCli("server", ["--config-dir", "examples/config", "--no-metrics", ...args]);
      assertEquals(r.code, 2, r.stderr);
      // Deno itself may add a warning line (permissions in the config file); ours is one line, no stack.
      const ours = r.stderr.split("\n").filter((l) => l.startsWith("meshrelay server:"));
      assertEquals(ours.length, 1, r.stderr);
      assert(re.test(ours[0]), ours[0]);
      assert(!/^\s+at /m.test(r.stderr), r.stderr);
    });
  }
});
