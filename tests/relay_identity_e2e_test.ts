/**
 * Identity end to end with real processes: per-cluster tokens, wrong tokens and the rate limit, the
 * cluster identity coming only from the certificate, expired certificates and recovery, and rotation
 * with a short client certificate lifetime.
 */
import { assert, assertEquals } from "../src/testing/assert.ts";
import {
  appliedFiles,
  EXAMPLES,
  localServerArgs,
  metricValue,
  rawSyncFirstMessage,
  readToken,
  runCli,
  sleep,
  waitFor,
  withRelay,
} from "./relay_e2e_harness.ts";

const UNAUTHENTICATED = 16;

function agentArgs(
  ws: string,
  cluster: string,
  port: number,
  secrets: string,
  extra: string[] = [],
): string[] {
  return [
    "--cluster",
    cluster,
    "--server-address",
    `127.0.0.1:${port}`,
    "--secrets-dir",
    secrets,
    "--root-ca",
    `${ws}/server/relay-root-tls-secret/ca.crt`,
    "--discovery-dir",
    `${EXAMPLES}/clusters/${cluster}`,
    "--apply-dir",
    `${ws}/apply-${cluster}-${secrets.split("/").pop()}`,
    ...extra,
  ];
}

function serverArgs(ws: string, config: string, extra: string[] = []): string[] {
  return [
    "--secrets-dir",
    `${ws}/server`,
    ...localServerArgs(config, { metrics: true }),
    ...extra,
  ];
}

const isError = (needle: string) => (l: { level: string; msg: string }) =>
  l.level === "error" && l.msg.includes(needle);

Deno.test("per-cluster bootstrap token: bound to its cluster, single use", async () => {
  await withRelay("token", async (ws) => {
    const s = await ws.server(serverArgs(ws.dir, ws.config, ["--disable-token-generation"]));
    const created = await runCli("server", [
      "token",
      "create",
      "--cluster",
      "cluster-1",
      "--ttl",
      "10m",
      "--secrets-dir",
      `${ws.dir}/server`,
    ]);
    assertEquals(created.code, 0, created.stderr);
    const token = created.stdout.trim();
    assert(token.startsWith("mrbt."), token);

    // Another cluster cannot use it.
    const thief = ws.agent(agentArgs(ws.dir, "cluster-2", s.port, `${ws.dir}/a2`), "cluster-2", {
      MESHRELAY_TOKEN: token,
    });
    await thief.waitForLine(isError("bound to another cluster"), "token bound to another cluster");

    const first = ws.agent(agentArgs(ws.dir, "cluster-1", s.port, `${ws.dir}/a1`), "first", {
      MESHRELAY_TOKEN: token,
    });
    await first.waitForLine((l) => l.msg === "bootstrapped: client certificate issued", "bootstrapped");
    await waitFor(
      "cluster-1 applied",
      async () => (await appliedFiles(`${ws.dir}/apply-cluster-1-a1`)).length >= 3,
    );

    const second = ws.agent(agentArgs(ws.dir, "cluster-1", s.port, `${ws.dir}/b1`), "second", {
      MESHRELAY_TOKEN: token,
    });
    await second.waitForLine(isError("was already used"), "token already used");
    assert(
      await metricValue(s.metricsPort!, "meshrelay_bootstrap_failures_total", {
        reason: "unauthenticated",
      }) >= 1,
    );
    assert(
      await metricValue(s.metricsPort!, "meshrelay_bootstrap_failures_total", {
        reason: "permission_denied",
      }) >= 1,
    );
    const list = await runCli("server", ["token", "list", "--secrets-dir", `${ws.dir}/server`]);
    assert(list.stdout.includes("cluster-1") && list.stdout.includes("used "), list.stdout);
    assert(!list.stdout.includes(token.split(".")[2]), "token list never shows the token");
    // The expiry `create` printed is the one stored.
    const printed = /valid until (\S+),/.exec(created.stderr)?.[1];
    assert(printed && list.stdout.includes(`expires ${printed}`), `${created.stderr}\n${list.stdout}`);
  });
});

Deno.test("wrong token: refused, counted, then rate limited per peer address", async () => {
  await withRelay("wrong-token", async (ws) => {
    const s = await ws.server(
      serverArgs(ws.dir, ws.config, [
        "--bootstrap-failure-burst",
        "2",
        "--bootstrap-failures-per-minute",
        "1",
      ]),
    );
    const agent = ws.agent(agentArgs(ws.dir, "cluster-1", s.port, `${ws.dir}/a1`), "agent", {
      MESHRELAY_TOKEN: "not-the-token",
    });
    await agent.waitForLine(isError("invalid bootstrap token"), "invalid token");
    await agent.waitForLine(isError("too many failed attempts"), "rate limited", 30_000);
    assert(
      await metricValue(s.metricsPort!, "meshrelay_bootstrap_failures_total", {
        reason: "unauthenticated",
      }) >= 2,
    );
    assert(
      await metricValue(s.metricsPort!, "meshrelay_bootstrap_failures_total", {
        reason: "resource_exhausted",
      }) >= 1,
    );
    assert(!agent.raw.some((l) => l.includes("not-the-token")), "the token is never logged");
    assert(!s.proc.raw.some((l) => l.includes("not-the-token")), "the token is never logged");
  });
});

Deno.test("the cluster identity is the certificate's SAN: cluster-2's certificate only ever reads cluster-2", async () => {
  await withRelay("other-cluster", async (ws) => {
    const s = await ws.server(serverArgs(ws.dir, ws.config));
    const token = await readToken(`${ws.dir}/server`);
    const a2 = ws.agent(agentArgs(ws.dir, "cluster-2", s.port, `${ws.dir}/a2`), "cluster-2", {
      MESHRELAY_TOKEN: token,
    });
    await a2.waitForLine((l) => l.msg === "in sync with the server", "cluster-2 in sync");
    const files2 = await appliedFiles(`${ws.dir}/apply-cluster-2-a2`);
    assert(
      !files2.includes("apps/ConfigMap.v1.region-settings.yaml"),
      "cluster-1's config never reaches cluster-2",
    );

    const rootPem = await Deno.readTextFile(`${ws.dir}/server/relay-root-tls-secret/ca.crt`);
    const c2 = {
      certPem: await Deno.readTextFile(`${ws.dir}/a2/relay-client-tls-secret/tls.crt`),
      keyPem: await Deno.readTextFile(`${ws.dir}/a2/relay-client-tls-secret/tls.key`),
    };
    // Claiming cluster-1 in metadata changes nothing: the stream is cluster-2's.
    const r = await rawSyncFirstMessage({
      port: s.port,
      rootPem,
      client: c2,
      metadata: { "x-meshrelay-cluster": "cluster-1" },
    });
    assertEquals(r.welcome, "cluster-2");
    // Without a certificate, no Sync at all.
    const anon = await rawSyncFirstMessage({
      port: s.port,
      rootPem,
      metadata: { "x-meshrelay-cluster": "cluster-1" },
    });
    assertEquals(anon.code, UNAUTHENTICATED);

    // An agent for cluster-1 handed cluster-2's secret does not use it (and has no token to get its own).
    await Deno.mkdir(`${ws.dir}/a1`);
    await Deno.rename(`${ws.dir}/a2/relay-client-tls-secret`, `${ws.dir}/a1/relay-client-tls-secret`);
    const a1 = ws.agent(agentArgs(ws.dir, "cluster-1", s.port, `${ws.dir}/a1`), "cluster-1");
    await a1.waitForLine(
      (l) => l.level === "error" && String(l.error ?? "").includes("not for cluster"),
      "foreign cert refused",
    );
    await a1.waitForLine(isError("no bootstrap token"), "waiting for credentials");
    assertEquals(await appliedFiles(`${ws.dir}/apply-cluster-1-a1`), []);
  });
});

Deno.test("expired certificate: refused by the server; the agent says so without a token and recovers with one", async () => {
  await withRelay("expired", async (ws) => {
    const s = await ws.server(serverArgs(ws.dir, ws.config, ["--client-cert-ttl", "4s"]));
    const token = await readToken(`${ws.dir}/server`);
    const first = ws.agent(agentArgs(ws.dir, "cluster-1", s.port, `${ws.dir}/a1`), "first", {
      MESHRELAY_TOKEN: token,
    });
    await first.waitForLine((l) => l.msg === "bootstrapped: client certificate issued", "bootstrapped");
    await first.kill9(); // offline before it could renew
    const certPem = await Deno.readTextFile(`${ws.dir}/a1/relay-client-tls-secret/tls.crt`);
    const keyPem = await Deno.readTextFile(`${ws.dir}/a1/relay-client-tls-secret/tls.key`);
    await sleep(4500);
    const rootPem = await Deno.readTextFile(`${ws.dir}/server/relay-root-tls-secret/ca.crt`);
    const r = await rawSyncFirstMessage({ port: s.port, rootPem, client: { certPem, keyPem } });
    assertEquals(r.code, UNAUTHENTICATED, JSON.stringify(r));

    const noToken = ws.agent(agentArgs(ws.dir, "cluster-1", s.port, `${ws.dir}/a1`), "no-token");
    await noToken.waitForLine(isError("expired"), "expired and no token");
    await noToken.kill9();

    const withToken = ws.agent(agentArgs(ws.dir, "cluster-1", s.port, `${ws.dir}/a1`), "with-token", {
      MESHRELAY_TOKEN: token,
    });
    await withToken.waitForLine(
      (l) => l.msg === "client certificate expired; bootstrapping again",
      "re-bootstrap",
    );
    await withToken.waitForLine((l) => l.msg === "in sync with the server", "in sync again");
  });
});

Deno.test("rotation with a short client certificate lifetime: renewed over mTLS, reconnected, still in sync", async () => {
  await withRelay("rotation", async (ws) => {
    const s = await ws.server(serverArgs(ws.dir, ws.config, ["--client-cert-ttl", "5s"]));
    const token = await readToken(`${ws.dir}/server`);
    const agent = ws.agent(agentArgs(ws.dir, "cluster-1", s.port, `${ws.dir}/a1`), "agent", {
      MESHRELAY_TOKEN: token,
    });
    await agent.waitForLine((l) => l.msg === "bootstrapped: client certificate issued", "bootstrapped");
    await waitFor(
      "two renewals",
      () => agent.lines.filter((l) => l.msg === "client certificate renewed").length >= 2,
      30_000,
    );
    const serials = agent.lines.filter((l) => l.msg === "using new client certificate").map((l) => l.serial);
    assert(new Set(serials).size >= 3, JSON.stringify(serials));
    const mark = agent.mark;
    await agent.waitForLine(
      (l) => l.msg === "in sync with the server",
      "in sync after a renewal",
      15_000,
      mark,
    );
    assert(
      await metricValue(s.metricsPort!, "meshrelay_client_certificates_issued_total", { rpc: "renew" }) >= 2,
    );
    // Renewal never needed the token again: only one bootstrap.
    assertEquals(agent.lines.filter((l) => l.msg === "bootstrapped: client certificate issued").length, 1);
    assertEquals(
      s.proc.lines.filter((l) => l.msg === "issued client certificate" && l.rpc === "bootstrap").length,
      1,
    );
    // The certificate the server now sees is the newest.
    const last = String(serials[serials.length - 1]);
    await waitFor(
      "server saw the newest certificate",
      () => s.proc.lines.some((l) => l.msg === "issued client certificate" && l.serial === last),
    );
  });
});

Deno.test("after bootstrapping, an agent holds one connection to the server, not one per channel it made", async () => {
  // The agent makes a channel for Bootstrap and, while its certificate arrives, abandons a Sync channel
  // that was still connecting; grpc-js leaked such a channel's connection (src/relay/close_client.ts).
  await withRelay("one-connection", async (ws) => {
    const s = await ws.server(serverArgs(ws.dir, ws.config));
    const token = await readToken(`${ws.dir}/server`);
    const agent = ws.agent(agentArgs(ws.dir, "cluster-1", s.port, `${ws.dir}/a1`), "agent", {
      MESHRELAY_TOKEN: token,
    });
    await agent.waitForLine((l) => l.msg === "in sync with the server", "in sync");
    // Its first certificate is not a reason to drop the Sync stream it was dialing for it.
    const reconnects = agent.lines.filter((l) => l.msg === "reconnecting");
    assertEquals(reconnects, [], "no reconnect on the first certificate");
    const open = () => metricValue(s.metricsPort!, "meshrelay_connections_open");
    // Channels are closed once they settle, a moment after the agent is in sync.
    await waitFor("one open connection", async () => await open() === 1, 10_000).catch(async (e) => {
      throw new Error(`${e.message}: ${await open()} open`);
    });
    // And only one ever: Bootstrap and the first Sync stream shared it through a session binding
    // (closed connections stay in the server's memory on the pinned Deno).
    const m = (name: string, labels?: Record<string, string>) => metricValue(s.metricsPort!, name, labels);
    assertEquals(await m("meshrelay_connections_accepted_total"), 1, "connections accepted");
    assertEquals(await m("meshrelay_session_bindings_total", { result: "issued" }), 1);
    assertEquals(await m("meshrelay_session_bindings_total", { result: "redeemed" }), 1);

    // Restarted with its certificate, the agent dials mTLS: no Bootstrap, no binding.
    await agent.kill9();
    const again = ws.agent(agentArgs(ws.dir, "cluster-1", s.port, `${ws.dir}/a1`), "agent-again", {
      MESHRELAY_TOKEN: token,
    });
    await again.waitForLine((l) => l.msg === "in sync with the server", "in sync again");
    assertEquals(await m("meshrelay_client_certificates_issued_total"), 1, "no second certificate");
    assertEquals(await m("meshrelay_session_bindings_total", { result: "issued" }), 1);
    assertEquals(await m("meshrelay_connections_accepted_total"), 2);
  });
});
