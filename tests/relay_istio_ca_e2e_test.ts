/**
 * Istio federated trust with the directory backends and real processes on 127.0.0.1 (no Kubernetes): a
 * RootTrustPolicy in the server's config folder, an agent with `--istio-ca --istio-cacerts-dir`, and
 * openssl as the judge of what lands in the folder. The Kubernetes variant (cacerts in istio-system) is in
 * tests/kube/full_flow_test.ts.
 */
import { assert, assertEquals } from "../src/testing/assert.ts";
import {
  EXAMPLES,
  localServerArgs,
  metricValue,
  readToken,
  waitFor,
  withRelay,
} from "./relay_e2e_harness.ts";

const dec = new TextDecoder();

async function openssl(args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command("openssl", { args, stdout: "piped", stderr: "piped" }).output();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

Deno.test("Istio cacerts through the relay into a folder, signed by the RootTrustPolicy's own root", async (t) => {
  await withRelay("istio-ca", async (ws) => {
    // The user's own Istio root, made with openssl (the seeds' root-ca.conf essentials).
    const own = `${ws.dir}/server/my-istio-root`;
    await Deno.mkdir(own, { recursive: true });
    const made = await openssl([
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-days",
      "30",
      "-subj",
      "/O=Istio/CN=Root CA",
      "-addext",
      "basicConstraints=critical,CA:true",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
      "-keyout",
      `${own}/key.pem`,
      "-out",
      `${own}/root-cert.pem`,
    ]);
    assertEquals(made.code, 0, made.out);
    await Deno.writeTextFile(
      `${ws.config}/root-trust.yaml`,
      [
        "apiVersion: meshrelay.io/v1alpha1",
        "kind: RootTrustPolicy",
        "metadata:",
        "  name: own-root",
        "spec:",
        "  clusters: [cluster-1]",
        "  mgmtServerCa:",
        "    secretRef: { name: my-istio-root }",
        "  intermediateCertOptions: { ttlDays: 7 }",
        "",
      ].join("\n"),
    );

    const s = await ws.server([
      "--secrets-dir",
      `${ws.dir}/server`,
      ...localServerArgs(ws.config, { metrics: true }),
    ]);
    const token = await readToken(`${ws.dir}/server`);
    const agent = (cluster: string) =>
      ws.agent(
        [
          "--cluster",
          cluster,
          "--server-address",
          `localhost:${s.port}`,
          "--root-ca",
          `${ws.dir}/server/relay-root-tls-secret/ca.crt`,
          "--secrets-dir",
          `${ws.dir}/agent-${cluster}`,
          "--discovery-dir",
          `${EXAMPLES}/clusters/${cluster}`,
          "--apply-dir",
          `${ws.dir}/apply-${cluster}`,
          "--istio-ca",
          "--istio-cacerts-dir",
          `${ws.dir}/istio-${cluster}/cacerts`,
        ],
        cluster,
        { MESHRELAY_TOKEN: token },
      );

    await t.step(
      "cluster-1: cacerts written as files, verified by openssl against the own root",
      async () => {
        agent("cluster-1");
        const dir = `${ws.dir}/istio-cluster-1/cacerts`;
        await waitFor("cacerts files", () => exists(`${dir}/cert-chain.pem`), 60_000);
        const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
        assertEquals(files, ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]);
        assertEquals(
          await Deno.readTextFile(`${dir}/root-cert.pem`),
          await Deno.readTextFile(`${own}/root-cert.pem`),
        );
        const v = await openssl([
          "verify",
          "-x509_strict",
          "-CAfile",
          `${own}/root-cert.pem`,
          `${dir}/ca-cert.pem`,
        ]);
        assertEquals(v.code, 0, v.out);
        const chain = await openssl([
          "verify",
          "-x509_strict",
          "-CAfile",
          `${own}/root-cert.pem`,
          "-untrusted",
          `${dir}/cert-chain.pem`,
          `${dir}/ca-cert.pem`,
        ]);
        assertEquals(chain.code, 0, chain.out);
        const text = await openssl([
          "x509",
          "-in",
          `${dir}/ca-cert.pem`,
          "-noout",
          "-subject",
          "-ext",
          "subjectAltName,basicConstraints",
        ]);
        assert(/L = cluster-1/.test(text.out) && /DNS:istiod\.istio-system\.svc/.test(text.out), text.out);
        assert(/CA:TRUE, pathlen:0/.test(text.out), text.out);
        const key = await openssl(["pkey", "-in", `${dir}/ca-key.pem`, "-pubout"]);
        const pub = await openssl(["x509", "-in", `${dir}/ca-cert.pem`, "-noout", "-pubkey"]);
        assertEquals(key.out, pub.out);
        assertEquals(await metricValue(s.metricsPort!, "meshrelay_istio_ca_certificates_issued_total"), 1);
      },
    );

    await t.step("cluster-2, which no policy serves: no cacerts, the agent says why", async () => {
      const a2 = agent("cluster-2");
      await a2.waitForLine(
        (l) => typeof l.msg === "string" && /no RootTrustPolicy serves cluster "cluster-2"/.test(l.msg),
        "no policy for cluster-2",
        60_000,
      );
      assert(!(await exists(`${ws.dir}/istio-cluster-2/cacerts`)), "nothing written");
    });
  });
});
