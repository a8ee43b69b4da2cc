/**
 * `meshrelay certs register` / `deregister` against two real API servers (management and workload), without
 * a relay server: what they refuse, what they write, that they are idempotent, and the CLI's exit codes.
 * The path through a running server and agent is in full_flow_test.ts.
 */
import { parse } from "yaml";
import { FakeClock } from "../../src/clock.ts";
import { silentProgress } from "../../src/certs/mod.ts";
import { deregisterCluster, registerCluster } from "../../src/certs/register.ts";
import { PreconditionError, UnavailableError } from "../../src/errors.ts";
import { createKubeClient, KubeSecretStore } from "../../src/kube/mod.ts";
import { certificateToPem, generateKeyPair, issueCertificate, privateKeyToPem } from "../../src/pki/mod.ts";
import { TokenAuthority } from "../../src/relay/mod.ts";
import type { KubeObject } from "../../src/state/mod.ts";
import { assert, assertEquals, assertRejects } from "../../src/testing/assert.ts";
import { runCli } from "../relay_e2e_harness.ts";
import { TestKube } from "./backend_helpers.ts";
import { kubeAvailable, startTestCluster } from "./harness.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const V = "meshrelay.io/v1alpha1";
const enc = new TextEncoder();
const dec = new TextDecoder();

async function shippedCrds(): Promise<KubeObject[]> {
  const out: KubeObject[] = [];
  for await (const e of Deno.readDir(`${REPO}deploy/crds`)) {
    if (e.name.endsWith(".yaml")) out.push(parse(await Deno.readTextFile(`${REPO}deploy/crds/${e.name}`)));
  }
  return out;
}

/** A relay root and client certificates under it (what the server's CA would issue an agent). */
async function testPki(now: Date) {
  const rootKey = await generateKeyPair();
  const root = await issueCertificate({
    profile: "root-ca",
    subject: "CN=relay-root",
    publicKey: rootKey.publicKey,
    selfSignKey: rootKey,
    now,
    validityMs: 30 * 86_400_000,
  });
  return {
    rootPem: certificateToPem(root),
    client: async (cluster: string) => {
      const key = await generateKeyPair();
      const cert = await issueCertificate({
        profile: "client",
        subject: `CN=${cluster}`,
        dnsNames: [cluster],
        publicKey: key.publicKey,
        issuer: { certificate: root, keyPair: rootKey },
        now,
        validityMs: 86_400_000,
      });
      return {
        certPem: certificateToPem(cert),
        keyPem: await privateKeyToPem(key),
        serial: cert.serialNumber.toLowerCase(),
      };
    },
  };
}

Deno.test({
  name: "certs register/deregister on real API servers: refusals, what is written, idempotence, exit codes",
  ignore: !kubeAvailable(),
  fn: async (t) => {
    await using mgmtCluster = await startTestCluster({ name: "register-mgmt" });
    await using remoteCluster = await startTestCluster({ name: "register-remote" });
    const mgmt = createKubeClient(mgmtCluster.kubeConfig);
    const remote = createKubeClient(remoteCluster.kubeConfig);
    const m = new TestKube(mgmtCluster.kubeConfig);
    const w = new TestKube(remoteCluster.kubeConfig);
    const clock = new FakeClock(new Date());
    const base = {
      cluster: "cluster-1",
      mgmt,
      mgmtNamespace: "meshrelay",
      remote,
      remoteNamespace: "meshrelay",
      clusterDomain: "cluster.local",
      tokenTtlMs: 3600_000,
      clock,
      progress: silentProgress,
    };
    const mgmtStore = new KubeSecretStore({ client: mgmt, namespace: "meshrelay" });
    const remoteStore = new KubeSecretStore({ client: remote, namespace: "meshrelay" });
    const cli = (cmd: string, ...args: string[]) =>
      runCli("certs", [
        cmd,
        "--cluster",
        "cluster-1",
        "--mgmt-kubeconfig",
        mgmtCluster.kubeconfigPath,
        "--remote-kubeconfig",
        remoteCluster.kubeconfigPath,
        ...args,
      ]);

    await t.step("without the relay root in the management cluster: refused, nothing written", async () => {
      await m.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: "meshrelay" } });
      const e = await assertRejects(() => registerCluster(base), PreconditionError);
      assert(/no relay-root-tls-secret \(ca\.crt\) in namespace meshrelay/.test(e.message), e.message);
      const r = await cli("register");
      assertEquals(r.code, 1, r.stderr);
      assert(r.stderr.includes("meshrelay certs: no relay-root-tls-secret"), r.stderr);
      assertEquals(
        await w.get({ apiVersion: "v1", kind: "Namespace", metadata: { name: "meshrelay" } }),
        undefined,
      );
    });

    const pki = await testPki(clock.now());
    await mgmtStore.put("relay-root-tls-secret", { "ca.crt": enc.encode(pki.rootPem) });

    await t.step("without the CRDs: refused with the command that installs them", async () => {
      const e = await assertRejects(() => registerCluster(base), PreconditionError);
      assert(/apply the CRDs first \(kubectl apply -f deploy\/crds\/\)/.test(e.message), e.message);
    });
    await m.installCrds(await shippedCrds());

    let firstToken = "";
    await t.step(
      "register writes the KubernetesCluster, namespace, root, token and agent ConfigMap",
      async () => {
        const r = await registerCluster({
          ...base,
          labels: { env: "prod" },
          serverAddress: "relay.example.com:9900",
          authority: "meshrelay-server.meshrelay.svc",
        });
        assertEquals(r.wasRegistered, false);
        assertEquals(r.tokenSecretDeleted, false);
        const kc = await m.get({
          apiVersion: V,
          kind: "KubernetesCluster",
          metadata: { name: "cluster-1" },
        }) as {
          metadata: { labels: Record<string, string> };
          spec: unknown;
        };
        assertEquals(kc.metadata.labels, { env: "prod" });
        assertEquals(kc.spec, { clusterDomain: "cluster.local" });
        assertEquals(
          dec.decode((await remoteStore.get("relay-root-tls-secret"))!.data["ca.crt"]),
          pki.rootPem,
        );
        firstToken = dec.decode((await remoteStore.get("relay-identity-token-secret"))!.data.token);
        // The token is per-cluster and checks on the management side; the shared token is not involved.
        const grant = await new TokenAuthority({ store: mgmtStore }).check(firstToken, "cluster-1", {
          now: clock.now(),
          consume: false,
        });
        assertEquals(grant, { cluster: "cluster-1", kind: "cluster", tokenId: r.tokenId });
        const cm = await w.get({
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: { name: "meshrelay-agent", namespace: "meshrelay" },
        }) as { data: Record<string, string> };
        assertEquals(cm.data, {
          cluster: "cluster-1",
          "server-address": "relay.example.com:9900",
          authority: "meshrelay-server.meshrelay.svc",
        });
      },
    );

    await t.step("again while the agent has no certificate: a fresh token replaces the old one", async () => {
      const r = await registerCluster(base);
      assertEquals(r.wasRegistered, true);
      const token = dec.decode((await remoteStore.get("relay-identity-token-secret"))!.data.token);
      assert(token !== firstToken && token.startsWith(`mrbt.${r.tokenId}.`));
    });

    /** Drives the fake clock a second at a time while `p` runs (its polls read the real API server). */
    const drive = async <T>(p: Promise<T>): Promise<T> => {
      let settled = false;
      const watched = p.finally(() => settled = true);
      watched.catch(() => {});
      while (!settled) {
        if (clock.pending > 0) await clock.advance(1_000);
        else await new Promise((r) => setTimeout(r, 10));
      }
      return await watched;
    };

    await t.step("--wait gives up after its bound when no agent stores a certificate", async () => {
      const e = await assertRejects(
        () => drive(registerCluster({ ...base, waitMs: 5_000, pollMs: 1_000 })),
        UnavailableError,
      );
      assert(/did not store a client certificate/.test(e.message), e.message);
      assert(await remoteStore.get("relay-identity-token-secret"), "the token stays for the agent");
    });

    await t.step(
      "--wait returns once the agent's certificate is in place; the token secret goes",
      async () => {
        const waiting = registerCluster({ ...base, waitMs: 60_000, pollMs: 1_000 });
        while (clock.pending === 0) await new Promise((r) => setTimeout(r, 10));
        // What the agent stores after its Bootstrap: a certificate for its name under the current root.
        const client = await pki.client("cluster-1");
        await remoteStore.put("relay-client-tls-secret", {
          "tls.crt": enc.encode(client.certPem),
          "tls.key": enc.encode(client.keyPem),
          "ca.crt": enc.encode(pki.rootPem),
        });
        const r = await drive(waiting);
        assertEquals(r.clientSerial, client.serial);
        assertEquals(r.tokenSecretDeleted, true);
        assertEquals(await remoteStore.get("relay-identity-token-secret"), undefined);
        // The agent did not use this run's token: it must not stay usable.
        const tokens = await new TokenAuthority({ store: mgmtStore }).list();
        assert(!tokens.some((t) => t.id === r.tokenId), "unused token revoked");
      },
    );

    await t.step("registered with a valid certificate: no token at all (CLI, exit 0)", async () => {
      const before = (await new TokenAuthority({ store: mgmtStore }).list()).length;
      const r = await cli("register", "--wait");
      assertEquals(r.code, 0, r.stderr);
      assert(/cluster-1: registered; the agent holds client certificate/.test(r.stdout), r.stdout);
      assertEquals((await new TokenAuthority({ store: mgmtStore }).list()).length, before);
    });

    await t.step("bad input is exit 2 with one line", async () => {
      for (
        const args of [
          ["--server-address", "no-port"],
          ["--label", "novalue"],
          ["--mgmt-context", "nope"],
          ["--remote-namespace", "Bad_NS"],
        ]
      ) {
        const r = await cli("register", ...args);
        assertEquals(r.code, 2, `${args}: ${r.stderr}`);
        assertEquals(r.stderr.trim().split("\n").filter((l) => l.startsWith("meshrelay certs:")).length, 1);
      }
    });

    await t.step("deregister removes the registration on both sides and revokes unused tokens", async () => {
      // A second cluster (its agent namespace elsewhere), deregistered below without its workload side.
      await registerCluster({ ...base, cluster: "cluster-9", remoteNamespace: "cluster-9" });
      const r = await deregisterCluster({ ...base });
      assertEquals(r.wasRegistered, true);
      assertEquals(
        r.removed.sort(),
        ["configmap/meshrelay-agent", "secret/relay-client-tls-secret", "secret/relay-root-tls-secret"]
          .sort(),
      );
      assertEquals(
        await m.get({ apiVersion: V, kind: "KubernetesCluster", metadata: { name: "cluster-1" } }),
        undefined,
      );
      const again = await cli("deregister");
      assertEquals(again.code, 0, again.stderr);
      assert(again.stdout.startsWith("cluster-1: was not registered"), again.stdout);
    });

    await t.step("deregister --skip-remote for a cluster that is gone", async () => {
      const tokens = new TokenAuthority({ store: mgmtStore });
      assert((await tokens.list()).some((t) => t.cluster === "cluster-9" && !t.usedAt));
      const r = await runCli("certs", [
        "deregister",
        "--cluster",
        "cluster-9",
        "--mgmt-kubeconfig",
        mgmtCluster.kubeconfigPath,
        "--skip-remote",
      ]);
      assertEquals(r.code, 0, r.stderr);
      assert(/cluster-9: deregistered; revoked unused tokens/.test(r.stdout), r.stdout);
      assert(!(await tokens.list()).some((t) => t.cluster === "cluster-9"));
    });
  },
});
