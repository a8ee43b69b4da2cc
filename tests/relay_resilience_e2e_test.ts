/**
 * Revocation and failure handling end to end with real processes: deregistration and explicit revocation
 * cut streams at once and keep the old certificate out; a server killed with -9 comes back and agents
 * converge with no re-bootstrap; agents killed abruptly again and again never take the server down.
 */
import { assert, assertEquals } from "../src/testing/assert.ts";
import {
  appliedFiles,
  EXAMPLES,
  freePort,
  localServerArgs,
  rawSyncFirstMessage,
  runCli,
  sleep,
  waitFor,
  withRelay,
} from "./relay_e2e_harness.ts";

const PERMISSION_DENIED = 7;

function agentArgs(ws: string, cluster: string, port: number, extra: string[] = []): string[] {
  return [
    "--cluster",
    cluster,
    "--server-address",
    `127.0.0.1:${port}`,
    "--secrets-dir",
    `${ws}/agent-${cluster}`,
    "--root-ca",
    `${ws}/server/relay-root-tls-secret/ca.crt`,
    "--token-file",
    `${ws}/server/relay-identity-token-secret/token`,
    "--discovery-dir",
    `${EXAMPLES}/clusters/${cluster}`,
    "--apply-dir",
    `${ws}/apply-${cluster}`,
    ...extra,
  ];
}

async function clientPem(ws: string, cluster: string) {
  return {
    certPem: await Deno.readTextFile(`${ws}/agent-${cluster}/relay-client-tls-secret/tls.crt`),
    keyPem: await Deno.readTextFile(`${ws}/agent-${cluster}/relay-client-tls-secret/tls.key`),
  };
}

async function serialOf(pem: string): Promise<string> {
  const out = await new Deno.Command("openssl", {
    args: ["x509", "-noout", "-serial"],
    stdin: "piped",
    stdout: "piped",
  })
    .spawn();
  const w = out.stdin.getWriter();
  await w.write(new TextEncoder().encode(pem));
  await w.close();
  const text = new TextDecoder().decode((await out.output()).stdout);
  return text.trim().replace(/^serial=/, "").toLowerCase().replace(/^0+/, "");
}

Deno.test("revocation: deregistering a cluster cuts its stream at once and its certificate stays refused", async () => {
  await withRelay("deregister", async (ws) => {
    const s = await ws.server([
      "--secrets-dir",
      `${ws.dir}/server`,
      ...localServerArgs(ws.config),
      "--tls-reload-interval",
      "500ms",
      "--bootstrap-failure-burst",
      "1000",
    ]);
    const rootPem = await Deno.readTextFile(`${ws.dir}/server/relay-root-tls-secret/ca.crt`);
    const a1 = ws.agent(agentArgs(ws.dir, "cluster-1", s.port), "cluster-1");
    await a1.waitForLine((l) => l.msg === "in sync with the server", "in sync");
    const oldCert = await clientPem(ws.dir, "cluster-1");

    // Deregister: remove cluster-1's KubernetesCluster document.
    const clusters = await Deno.readTextFile(`${ws.config}/clusters.yaml`);
    const mark = a1.mark;
    await Deno.writeTextFile(`${ws.config}/clusters.yaml`, clusters.split("---")[1]);
    await a1.waitForLine(
      (l) => l.msg === "sync session ended; retrying" && l.code === PERMISSION_DENIED,
      "stream closed with PERMISSION_DENIED",
      15_000,
      mark,
    );
    await s.proc.waitForLine(
      (l) => l.msg === "cluster deregistered: its certificates are revoked",
      "revocation recorded",
    );
    assertEquals(
      (await rawSyncFirstMessage({ port: s.port, rootPem, client: oldCert })).code,
      PERMISSION_DENIED,
    );

    // Registered again: the old certificate is still refused; the agent gets a new one with its token.
    await Deno.writeTextFile(`${ws.config}/clusters.yaml`, clusters);
    const back = a1.mark;
    await a1.waitForLine(
      (l) => l.msg === "bootstrapped: client certificate issued",
      "new certificate",
      60_000,
      back,
    );
    await a1.waitForLine((l) => l.msg === "in sync with the server", "in sync again", 30_000, back);
    assertEquals(
      (await rawSyncFirstMessage({ port: s.port, rootPem, client: oldCert })).code,
      PERMISSION_DENIED,
    );
    const fresh = await clientPem(ws.dir, "cluster-1");
    assertEquals((await rawSyncFirstMessage({ port: s.port, rootPem, client: fresh })).welcome, "cluster-1");
  });
});

Deno.test("revocation: `meshrelay server revoke --serial` cuts the live stream and refuses that certificate", async () => {
  await withRelay("revoke-serial", async (ws) => {
    const s = await ws.server([
      "--secrets-dir",
      `${ws.dir}/server`,
      ...localServerArgs(ws.config),
      "--tls-reload-interval",
      "500ms",
    ]);
    const rootPem = await Deno.readTextFile(`${ws.dir}/server/relay-root-tls-secret/ca.crt`);
    const a2 = ws.agent(agentArgs(ws.dir, "cluster-2", s.port), "cluster-2");
    await a2.waitForLine((l) => l.msg === "in sync with the server", "in sync");
    const cert = await clientPem(ws.dir, "cluster-2");
    const serial = await serialOf(cert.certPem);
    const mark = a2.mark;
    const r = await runCli("server", [
      "revoke",
      "--serial",
      serial,
      "--reason",
      "laptop stolen",
      "--secrets-dir",
      `${ws.dir}/server`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    await a2.waitForLine(
      (l) => l.msg === "sync session ended; retrying" && l.code === PERMISSION_DENIED,
      "stream cut",
      15_000,
      mark,
    );
    const refused = await rawSyncFirstMessage({ port: s.port, rootPem, client: cert });
    assertEquals(refused.code, PERMISSION_DENIED);
    assert(String(refused.details).includes("laptop stolen"), JSON.stringify(refused));
    // The agent had a token: it bootstraps a new certificate and carries on.
    await a2.waitForLine(
      (l) => l.msg === "bootstrapped: client certificate issued",
      "re-bootstrapped",
      30_000,
      mark,
    );
    await a2.waitForLine((l) => l.msg === "in sync with the server", "in sync again", 30_000, mark);
  });
});

Deno.test("server kill -9 and restart: agents reconnect and converge, config changed meanwhile included", async () => {
  await withRelay("restart", async (ws) => {
    const port = freePort();
    const serverArgs = [
      "--secrets-dir",
      `${ws.dir}/server`,
      "--config-dir",
      ws.config,
      "--port",
      String(port),
      "--no-metrics",
    ];
    const s1 = await ws.server([...serverArgs, "--no-warmup"], "server-1");
    const a1 = ws.agent(agentArgs(ws.dir, "cluster-1", port), "cluster-1");
    const a2 = ws.agent(agentArgs(ws.dir, "cluster-2", port), "cluster-2");
    await a1.waitForLine((l) => l.msg === "in sync with the server", "cluster-1 in sync");
    await a2.waitForLine((l) => l.msg === "in sync with the server", "cluster-2 in sync");

    await s1.proc.kill9();
    await Deno.writeTextFile(
      `${ws.config}/late.yaml`,
      [
        "apiVersion: meshrelay.io/v1alpha1",
        "kind: ClusterConfig",
        "metadata:",
        "  name: late",
        "spec:",
        "  clusterSelector:",
        "    matchLabels:",
        "      env: prod",
        "  objects:",
        "    - apiVersion: v1",
        "      kind: ConfigMap",
        "      metadata:",
        "        name: added-while-down",
        "        namespace: apps",
        "      data:",
        "        when: restart",
        "",
      ].join("\n"),
    );
    await sleep(500);
    // Same port, same secrets, warm-up on (desired state waits for both agents' pushes).
    await ws.server(serverArgs, "server-2");
    for (const c of ["cluster-1", "cluster-2"]) {
      await waitFor(
        `${c} got the new config`,
        async () =>
          (await appliedFiles(`${ws.dir}/apply-${c}`)).includes("apps/ConfigMap.v1.added-while-down.yaml"),
        60_000,
      );
    }
    for (const a of [a1, a2]) {
      assertEquals(a.exited, undefined, `${a.name} survived the server's death`);
      assertEquals(a.lines.filter((l) => l.msg === "bootstrapped: client certificate issued").length, 1);
    }
    // Nothing pruned that should stay.
    assert(
      (await appliedFiles(`${ws.dir}/apply-cluster-1`)).includes("apps/ConfigMap.v1.region-settings.yaml"),
    );
  });
});

Deno.test("agents killed abruptly many times never crash the server", async () => {
  await withRelay("churn", async (ws) => {
    const s = await ws.server([
      "--secrets-dir",
      `${ws.dir}/server`,
      ...localServerArgs(ws.config, { metrics: true }),
    ]);
    const rounds = 12;
    for (let i = 0; i < rounds; i++) {
      const cluster = i % 2 === 0 ? "cluster-1" : "cluster-2";
      const a = ws.agent(agentArgs(ws.dir, cluster, s.port), `${cluster}-${i}`);
      // Kill at different moments: while starting, while bootstrapping or syncing, once in sync.
      if (i % 3 === 0) await sleep(200 + i * 20);
      else if (i % 3 === 1) {
        await a.waitForLine((l) => l.msg === "connected" || l.msg === "in sync with the server", "connected");
      } else await a.waitForLine((l) => l.msg === "in sync with the server", "in sync");
      await a.kill9();
      assertEquals(s.proc.exited, undefined, `server alive after round ${i}`);
    }
    // Still serving: health, and a fresh agent converges.
    assertEquals((await fetch(`http://127.0.0.1:${s.metricsPort}/healthz`)).status, 200);
    const last = ws.agent(agentArgs(ws.dir, "cluster-1", s.port), "final");
    await last.waitForLine((l) => l.msg === "in sync with the server", "final agent in sync");
    assertEquals(s.proc.exited, undefined);
    // And it stops cleanly.
    const st = await s.proc.stop("SIGTERM");
    assertEquals(st.code, 0);
    assert(s.proc.lines.some((l) => l.msg === "relay server stopped"));
  });
});
