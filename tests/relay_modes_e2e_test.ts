/**
 * Every security mode of the seeds, end to end with real processes on 127.0.0.1: a server and an agent
 * started the way users start them, the agent's applier ending up with cluster-1's desired state.
 */
import { assert, assertEquals } from "../src/testing/assert.ts";
import {
  appliedFiles,
  EXAMPLES,
  localServerArgs,
  metricValue,
  readToken,
  runCli,
  waitFor,
  withRelay,
} from "./relay_e2e_harness.ts";

/** What cluster-1 must end up with from examples/config (prod-baseline + eu-settings). */
const CLUSTER_1_DESIRED = [
  "_cluster/Namespace.v1.mesh-config.yaml",
  "apps/ConfigMap.v1.region-settings.yaml",
  "istio-system/PeerAuthentication.security.istio.io_v1.default.yaml",
];

async function converged(applyDir: string): Promise<void> {
  await waitFor(`cluster-1's desired state in ${applyDir}`, async () => {
    const files = await appliedFiles(applyDir);
    return CLUSTER_1_DESIRED.every((f) => files.includes(f));
  });
}

const agentCommon = (ws: string) => [
  "--cluster",
  "cluster-1",
  "--discovery-dir",
  `${EXAMPLES}/clusters/cluster-1`,
  "--apply-dir",
  `${ws}/apply-1`,
];

Deno.test("insecure mode: plaintext, loud warnings on both sides, config applied", async () => {
  await withRelay("insecure", async (ws) => {
    const s = await ws.server([
      "--insecure",
      ...localServerArgs(ws.config),
    ]);
    const server = s.proc;
    assert(server.lines.some((l) => l.level === "warn" && l.msg.startsWith("INSECURE MODE")));
    const agent = ws.agent(["--insecure", "--server-address", `127.0.0.1:${s.port}`, ...agentCommon(ws.dir)]);
    await converged(`${ws.dir}/apply-1`);
    assert(agent.lines.some((l) => l.level === "warn" && l.msg.startsWith("INSECURE MODE")));
  });
});

Deno.test("simple TLS with a generated server certificate and the shared token", async () => {
  await withRelay("tls", async (ws) => {
    const s = await ws.server([
      "--tls-mode",
      "tls",
      "--secrets-dir",
      `${ws.dir}/server`,
      ...localServerArgs(ws.config),
    ]);
    const server = s.proc;
    assert(server.lines.some((l) => l.level === "warn" && l.msg.includes("any holder of the token")));
    ws.agent([
      "--tls-mode",
      "tls",
      "--server-address",
      `127.0.0.1:${s.port}`,
      "--root-ca",
      `${ws.dir}/server/relay-root-tls-secret/ca.crt`,
      "--token-file",
      `${ws.dir}/server/relay-identity-token-secret/token`,
      ...agentCommon(ws.dir),
    ]);
    await converged(`${ws.dir}/apply-1`);
    // No client certificate exists in this mode.
    assertEquals(
      await Deno.stat(`${ws.dir}/server/relay-tls-signing-secret`).then(() => true, () => false),
      false,
    );
  });
});

Deno.test("simple TLS with a bring-your-own server certificate (certs init output, custom secret name, --authority)", async () => {
  await withRelay("tls-byo", async (ws) => {
    const pki = `${ws.dir}/pki`;
    const init = await runCli("certs", ["init", "--out", pki, "--server-dns", "relay.example.test"]);
    assertEquals(init.code, 0, init.stderr);
    // cert-manager style: the server certificate under a custom secret name, issued for the ingress name.
    const custom = await runCli("certs", [
      "server",
      "--pki",
      pki,
      "--out",
      pki,
      "--dns",
      "relay.example.test",
      "--secret-name",
      "relay-server-tls-secret-custom",
    ]);
    assertEquals(custom.code, 0, custom.stderr);
    await Deno.remove(`${pki}/relay-server-tls-secret`, { recursive: true });
    const s = await ws.server([
      "--tls-mode",
      "tls",
      "--secrets-dir",
      pki,
      "--server-secret",
      "relay-server-tls-secret-custom",
      "--disable-ca-generation",
      "--disable-token-generation",
      ...localServerArgs(ws.config),
    ]);
    const server = s.proc;
    assert(!server.lines.some((l) => l.msg === "created secret"), "nothing generated");
    ws.agent(
      [
        "--tls-mode",
        "tls",
        "--server-address",
        `127.0.0.1:${s.port}`,
        "--authority",
        "relay.example.test",
        "--root-ca",
        `${pki}/relay-root-tls-secret/ca.crt`,
        ...agentCommon(ws.dir),
      ],
      "agent",
      { MESHRELAY_TOKEN: await readToken(pki) },
    );
    await converged(`${ws.dir}/apply-1`);
  });
});

Deno.test("mTLS with generated CAs: bootstrap with the token, then mTLS; cluster cert chains to the root", async () => {
  await withRelay("mtls", async (ws) => {
    const s = await ws.server([
      "--secrets-dir",
      `${ws.dir}/server`,
      ...localServerArgs(ws.config, { metrics: true }),
    ]);
    const agent = ws.agent([
      "--server-address",
      `127.0.0.1:${s.port}`,
      "--secrets-dir",
      `${ws.dir}/agent`,
      "--root-ca",
      `${ws.dir}/server/relay-root-tls-secret/ca.crt`,
      "--token-file",
      `${ws.dir}/server/relay-identity-token-secret/token`,
      ...agentCommon(ws.dir),
    ]);
    await agent.waitForLine((l) => l.msg === "bootstrapped: client certificate issued", "bootstrapped");
    await converged(`${ws.dir}/apply-1`);
    const verify = await new Deno.Command("openssl", {
      args: [
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        `${ws.dir}/server/relay-root-tls-secret/ca.crt`,
        "-untrusted",
        `${ws.dir}/agent/relay-client-tls-secret/tls.crt`,
        `${ws.dir}/agent/relay-client-tls-secret/tls.crt`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(verify.code, 0, new TextDecoder().decode(verify.stderr));
    assertEquals(await metricValue(s.metricsPort!, "meshrelay_client_certificates_issued_total"), 1);
    assert(
      await metricValue(s.metricsPort!, "meshrelay_client_cert_expiry_seconds", { cluster: "cluster-1" }) >
        300 * 86400,
    );
    assertEquals(await metricValue(s.metricsPort!, "relay_push_clients_connected"), 1);
  });
});

Deno.test("bring-your-own CAs with automatic client certificates (certs init output as the server's store)", async () => {
  await withRelay("byo-ca", async (ws) => {
    const pki = `${ws.dir}/pki`;
    const init = await runCli("certs", [
      "init",
      "--out",
      pki,
      "--server-dns",
      "localhost",
      "--server-ip",
      "127.0.0.1",
    ]);
    assertEquals(init.code, 0, init.stderr);
    const s = await ws.server([
      "--secrets-dir",
      pki,
      "--disable-ca-generation",
      "--disable-token-generation",
      ...localServerArgs(ws.config),
    ]);
    const server = s.proc;
    assert(!server.lines.some((l) => l.msg === "created secret"), "the server used the given PKI as is");
    const agent = ws.agent([
      "--server-address",
      `localhost:${s.port}`,
      "--secrets-dir",
      `${ws.dir}/agent`,
      "--root-ca",
      `${pki}/relay-root-tls-secret/ca.crt`,
      "--token-file",
      `${pki}/relay-identity-token-secret/token`,
      ...agentCommon(ws.dir),
    ]);
    await agent.waitForLine((l) => l.msg === "bootstrapped: client certificate issued", "bootstrapped");
    await converged(`${ws.dir}/apply-1`);
    const issuer = await new Deno.Command("openssl", {
      args: ["x509", "-noout", "-issuer", "-in", `${ws.dir}/agent/relay-client-tls-secret/tls.crt`],
      stdout: "piped",
    }).output();
    assert(new TextDecoder().decode(issuer.stdout).includes("meshrelay relay signing CA"));
  });
});

Deno.test("bring-your-own CAs and client certificates, no token anywhere", async () => {
  await withRelay("byo-client", async (ws) => {
    const pki = `${ws.dir}/pki`;
    assertEquals((await runCli("certs", ["init", "--out", pki, "--server-dns", "localhost"])).code, 0);
    const client = await runCli("certs", [
      "agent",
      "--cluster",
      "cluster-1",
      "--pki",
      pki,
      "--out",
      `${ws.dir}/agent`,
    ]);
    assertEquals(client.code, 0, client.stderr);
    // No token on either side, and the server does not sign (--disable-ca).
    await Deno.remove(`${pki}/relay-identity-token-secret`, { recursive: true });
    const s = await ws.server([
      "--secrets-dir",
      pki,
      "--disable-ca",
      "--disable-ca-generation",
      "--disable-token-generation",
      ...localServerArgs(ws.config),
    ]);
    const agent = ws.agent([
      "--server-address",
      `localhost:${s.port}`,
      "--secrets-dir",
      `${ws.dir}/agent`,
      ...agentCommon(ws.dir),
    ]);
    await converged(`${ws.dir}/apply-1`);
    assert(!agent.lines.some((l) => String(l.msg).includes("bootstrap")), "never bootstrapped");
  });
});

Deno.test("agent: a wrong --root-ca, --apply-dir or --secrets-dir is refused at start with one clear line", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-agentflags-" });
  try {
    await Deno.writeTextFile(`${dir}/garbage.pem`, "not a certificate\n");
    await Deno.writeTextFile(
      `${dir}/key.pem`,
      "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n",
    );
    await Deno.writeTextFile(`${dir}/a-file`, "x");
    const cases: [string, Record<string, string>, RegExp][] = [
      [
        "garbage root CA",
        { "--root-ca": `${dir}/garbage.pem` },
        /--root-ca .*garbage\.pem: no PEM certificate found$/,
      ],
      [
        "a key as root CA",
        { "--root-ca": `${dir}/key.pem` },
        /--root-ca .*key\.pem: contains a private key, not a certificate$/,
      ],
      [
        "--apply-dir is a file",
        { "--apply-dir": `${dir}/a-file` },
        /--apply-dir: .*a-file exists and is not a directory$/,
      ],
      [
        "--secrets-dir is a file",
        { "--secrets-dir": `${dir}/a-file` },
        /--secrets-dir: .*a-file exists and is not a directory$/,
      ],
    ];
    for (const [name, override, re] of cases) {
      await t.step(name, async () => {
        const flags: Record<string, string> = {
          "--cluster": "cluster-1",
          "--server-address": "127.0.0.1:1",
          "--root-ca": `${dir}/garbage.pem`,
          "--token": "t",
          "--discovery-dir": `${EXAMPLES}/clusters/cluster-1`,
          "--apply-dir": `${dir}/applied`,
          ...override,
        };
        // Only the flag under test is wrong (no --root-ca at all is allowed: it may come later).
        if (!("--root-ca" in override)) delete flags["--root-ca"];
        const r = await runCli("agent", [...Object.entries(flags).flat(), "--no-metrics"], 20_000);
        assertEquals(r.code, 2, r.stderr);
        const ours = r.stderr.split("\n").filter((l) => l.startsWith("meshrelay agent:"));
        assertEquals(ours.length, 1, r.stderr);
        assert(re.test(ours[0]), ours[0]);
        assert(!/^\s+at /m.test(r.stderr) && !r.stderr.includes("BEGIN"), r.stderr);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
