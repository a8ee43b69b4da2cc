/**
 * Hostile CSRs through Identity.Bootstrap of a real `meshrelay server` process, with a valid token for
 * a registered cluster, so only the CSR decides. The CSRs are made by openssl (independent of our
 * pki code): random DER, mutated DER, a broken signature, SHA-1, CA:true, names other than the
 * cluster (another cluster, extra DNS names, IP/URI/email SANs, a wildcard, none), weak or unsupported
 * keys (RSA-1024, secp256k1, brainpool, explicit-parameter P-256, Ed448). Each is refused with
 * INVALID_ARGUMENT or PERMISSION_DENIED, logs one warning line, and issues nothing; the well-formed
 * controls are issued, and openssl verifies what came back as a client certificate for the cluster
 * and nothing more.
 */
import { Buffer } from "node:buffer";
import { GrpcStatus } from "../src/errors.ts";
import { IdentityService } from "../src/proto/mod.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";
import { localServerArgs, metricValue, startServer, workspace } from "./relay_e2e_harness.ts";
import { mutate, rawClient, rawUnary, secretText, seeded } from "./support/hostile.ts";

const CLUSTER = "cluster-2";

async function openssl(args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  if (out.code !== 0) throw new Error(`openssl ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

/** A CSR made by openssl with a fresh key of `keyArgs` (genpkey arguments) and `extra` req arguments. */
async function opensslCsr(dir: string, name: string, keyArgs: string[], extra: string[]): Promise<string> {
  await openssl(["genpkey", ...keyArgs, "-out", `${name}.key`], dir);
  await openssl([
    "req",
    "-new",
    "-key",
    `${name}.key`,
    "-subj",
    `/CN=${CLUSTER}`,
    ...extra,
    "-out",
    `${name}.csr`,
  ], dir);
  return await Deno.readTextFile(`${dir}/${name}.csr`);
}

function pemOf(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString("base64").replace(/(.{64})/g, "$1\n");
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;
}

function derOf(pem: string): Uint8Array {
  const b64 = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

const P256 = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
const SAN = (s: string) => ["-addext", `subjectAltName=${s}`];

Deno.test("hostile CSRs: refused with the right status, nothing signed that should not be", async (t) => {
  const ws = await workspace("hostile-csr");
  const secrets = `${ws.dir}/secrets`;
  const { proc, port, metricsPort } = await startServer([
    ...localServerArgs(ws.config, { metrics: true }),
    "--secrets-dir",
    secrets,
    "--bootstrap-failure-burst",
    "100000",
  ], "hostile-csr-server");
  const anon = { close() {} } as { close(): void };
  try {
    const rootPem = await secretText(secrets, "relay-root-tls-secret", "ca.crt");
    const token = await secretText(secrets, "relay-identity-token-secret", "token");
    const client = rawClient(port, rootPem);
    anon.close = () => client.close();
    const bootstrap = (csrPem: string) =>
      rawUnary(
        client,
        "bootstrap",
        IdentityService.bootstrap.requestSerialize({ token, cluster: CLUSTER, csrPem }),
      );
    const dir = `${ws.dir}/csr`;
    await Deno.mkdir(dir);

    // Independent keys and CSRs, made concurrently (openssl is the slow part).
    const specs: [string, string[], string[]][] = [
      ["control-p256", P256, SAN(`DNS:${CLUSTER}`)],
      ["control-rsa2048", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], SAN(`DNS:${CLUSTER}`)],
      ["control-p384", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], SAN(`DNS:${CLUSTER}`)],
      ["ca-true", P256, [...SAN(`DNS:${CLUSTER}`), "-addext", "basicConstraints=critical,CA:TRUE"]],
      ["other-cluster", P256, SAN("DNS:cluster-1")],
      ["extra-dns", P256, SAN(`DNS:${CLUSTER},DNS:evil.example.com`)],
      ["ip-san", P256, SAN(`DNS:${CLUSTER},IP:127.0.0.1`)],
      ["uri-san", P256, SAN(`DNS:${CLUSTER},URI:spiffe://cluster.local/ns/x/sa/y`)],
      ["email-san", P256, SAN(`DNS:${CLUSTER},email:root@example.com`)],
      ["wildcard", P256, SAN(`DNS:*.${CLUSTER}`)],
      ["no-san", P256, []],
      ["sha1", P256, [...SAN(`DNS:${CLUSTER}`), "-sha1"]],
      ["rsa1024", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], SAN(`DNS:${CLUSTER}`)],
      ["secp256k1", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1"], SAN(`DNS:${CLUSTER}`)],
      [
        "brainpool",
        ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:brainpoolP256r1"],
        SAN(`DNS:${CLUSTER}`),
      ],
      ["explicit-p256", [...P256, "-pkeyopt", "ec_param_enc:explicit"], SAN(`DNS:${CLUSTER}`)],
      ["ed448", ["-algorithm", "ED448"], SAN(`DNS:${CLUSTER}`)],
    ];
    const csrs = new Map(
      await Promise.all(specs.map(async ([n, k, e]) => [n, await opensslCsr(dir, n, k, e)] as const)),
    );
    const issuedBefore = await metricValue(metricsPort!, "meshrelay_client_certificates_issued_total");
    let refused = 0;
    const refuse = async (what: string, csrPem: string) => {
      const r = await bootstrap(csrPem);
      assert(
        r.code === GrpcStatus.INVALID_ARGUMENT || r.code === GrpcStatus.PERMISSION_DENIED,
        `${what}: ${r.code} ${r.details}`,
      );
      assert(!r.response, `${what}: got a response`);
      refused++;
    };

    await t.step("controls are issued: a client certificate for the cluster only", async () => {
      for (const name of ["control-p256", "control-rsa2048", "control-p384"]) {
        const r = await bootstrap(csrs.get(name)!);
        assertEquals(r.code, GrpcStatus.OK, `${name}: ${r.details}`);
        const resp = IdentityService.bootstrap.responseDeserialize(r.response!);
        await Deno.writeTextFile(`${dir}/${name}.crt`, resp.certificatePem);
        await Deno.writeTextFile(`${dir}/${name}.chain`, resp.chainPem);
        await Deno.writeTextFile(`${dir}/root.crt`, resp.caPem);
        const v = await openssl([
          "verify",
          "-x509_strict",
          "-purpose",
          "sslclient",
          "-CAfile",
          "root.crt",
          "-untrusted",
          `${name}.chain`,
          `${name}.crt`,
        ], dir);
        assert(v.includes("OK"), v);
        const ext = await openssl([
          "x509",
          "-in",
          `${name}.crt`,
          "-noout",
          "-ext",
          "basicConstraints,subjectAltName,extendedKeyUsage",
        ], dir);
        assert(/CA:FALSE/.test(ext), ext);
        assertEquals(ext.match(/DNS:[^,\s]+/g), [`DNS:${CLUSTER}`], ext);
        assert(!/IP Address|URI:|email:/.test(ext), ext);
        assert(/TLS Web Client Authentication/.test(ext), ext);
        // The issued key is the CSR's (possession proven by the CSR's signature).
        const certKey = await openssl(["x509", "-in", `${name}.crt`, "-noout", "-pubkey"], dir);
        const csrKey = await openssl(["req", "-in", `${name}.csr`, "-noout", "-pubkey"], dir);
        assertEquals(certKey, csrKey);
      }
    });

    await t.step("CA:true, foreign names, weak and unsupported keys, SHA-1: refused", async () => {
      for (const [name] of specs.filter(([n]) => !n.startsWith("control-"))) {
        await refuse(name, csrs.get(name)!);
      }
    });

    await t.step("broken signature, random and mutated DER, not PEM at all: refused", async () => {
      const good = derOf(csrs.get("control-p256")!);
      const broken = Uint8Array.from(good);
      broken[broken.length - 5] ^= 0x40;
      await refuse("broken signature", pemOf(broken));
      const r = seeded(11);
      for (let i = 0; i < 40; i++) await refuse(`random DER #${i}`, pemOf(r.bytes(1 + r.int(600))));
      for (let i = 0; i < 60; i++) {
        const m = mutate(good, r);
        // A mutation that changes nothing would be the control itself.
        if (m.length === good.length && m.every((b, j) => b === good[j])) continue;
        await refuse(`mutated DER #${i}`, pemOf(m));
      }
      await refuse("not PEM", "hello, I am a certificate request");
      await refuse("wrong label", csrs.get("control-p256")!.replaceAll("CERTIFICATE REQUEST", "CERTIFICATE"));
    });

    await t.step("nothing else was issued; one warning line per refusal", async () => {
      const issued = await metricValue(metricsPort!, "meshrelay_client_certificates_issued_total");
      assertEquals(issued - issuedBefore, 3);
      const lines = proc.lines.filter((l) => l.msg === "bootstrap refused");
      assertEquals(lines.length, refused);
      for (const l of lines) {
        assert(l.reason === "invalid_argument" || l.reason === "permission_denied", JSON.stringify(l));
        assert(String(l.error).length > 0 && !String(l.error).includes("-----BEGIN"), JSON.stringify(l));
      }
      assertEquals(proc.exited, undefined);
    });
  } finally {
    anon.close();
    const st = await proc.stop("SIGTERM");
    await ws.cleanup();
    assertEquals(st.code, 0);
  }
});
