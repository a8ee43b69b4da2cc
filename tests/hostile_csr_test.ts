/**
 * Hostile CSRs through Identity.Bootstrap of a real `meshrelay server` process, with a valid token for
 * a registered cluster, so only the CSR decides. The CSRs are made by openssl (independent of our
 * pki code): random DER, mutated DER, a broken signature, SHA-1, CA:true, names other than the
 * cluster (another cluster, extra DNS names, IP/URI/email SANs, a wildcard, none), weak or unsupported
 * keys (RSA-1024, secp256k1, brainpool, explicit-parameter P-256, Ed448). Each is refused with
 * INVALID_ARGUMENT or PERMISSION_DENIED, logs one warning line, and issues nothing; the well-formed
 * controls are issued, and openssl verifies what came back as a client certificate for the cluster
 * and nothing more.
 *
 * The same for Identity.SignMeshCa (the Istio intermediate CA of the caller's cluster, over mTLS), whose
 * policy differs: it signs a CA (CA:true, pathLen 0, whatever pathLen the CSR asks for), so a CSR asking
 * for CA:true is a control there; the CSR must ask for exactly `istiod.istio-system.svc`; the subject
 * names the caller's cluster; and the key must be one Istio's plug-in CA takes (RSA >= 2048, P-256,
 * P-384: Ed25519, which client certificates may use, is refused). "Signed what it should not" there
 * means: for no client certificate, for other names, a weak or unusable key, a bad signature, or with
 * anything but pathLen 0 — each counted exactly by meshrelay_istio_ca_certificates_issued_total.
 */
import { Buffer } from "node:buffer";
import { GrpcStatus } from "../src/errors.ts";
import { parseCertificates } from "../src/pki/mod.ts";
import { decodeBase64, findPemBlocks } from "../src/pki/pem.ts";
import { opensslOk } from "../src/pki/test_support.ts";
import { readBasicConstraints, readExtKeyUsage } from "../src/pki/extensions.ts";
import { IdentityService } from "../src/proto/mod.ts";
import { ISTIOD_SAN } from "../src/relay/mesh_ca.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";
import { metricValue } from "./relay_e2e_harness.ts";
import {
  bootstrapPair,
  mutate,
  rawClient,
  type RawResult,
  rawUnary,
  seeded,
  withHostileServer,
} from "./support/hostile.ts";

const CLUSTER = "cluster-2";

/** A CSR made by openssl with a fresh key of `keyArgs` (genpkey arguments) and `extra` req arguments. */
async function opensslCsr(dir: string, name: string, keyArgs: string[], extra: string[]): Promise<string> {
  await opensslOk(["genpkey", ...keyArgs, "-out", `${name}.key`], { cwd: dir });
  await opensslOk([
    "req",
    "-new",
    "-key",
    `${name}.key`,
    "-subj",
    `/CN=${CLUSTER}`,
    ...extra,
    "-out",
    `${name}.csr`,
  ], { cwd: dir });
  return await Deno.readTextFile(`${dir}/${name}.csr`);
}

function pemOf(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString("base64").replace(/(.{64})/g, "$1\n");
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;
}

function derOf(pem: string): Uint8Array {
  return decodeBase64(findPemBlocks(pem)[0].body)!;
}

/**
 * `[name, pem]` inputs made from the good CSR `goodPem`, none of which may be signed: its signature
 * broken, random DER, mutations of its DER (seeded by `seed`), and text that is not PEM at all.
 */
function* brokenCsrs(goodPem: string, seed: number): Generator<[string, string]> {
  const good = derOf(goodPem);
  const broken = Uint8Array.from(good);
  broken[broken.length - 5] ^= 0x40;
  yield ["broken signature", pemOf(broken)];
  const r = seeded(seed);
  for (let i = 0; i < 40; i++) yield [`random DER #${i}`, pemOf(r.bytes(1 + r.int(600)))];
  for (let i = 0; i < 60; i++) {
    const m = mutate(good, r);
    // A mutation that changes nothing would be the control itself.
    if (m.length === good.length && m.every((b, j) => b === good[j])) continue;
    yield [`mutated DER #${i}`, pemOf(m)];
  }
  yield ["not PEM", "hello, I am a certificate request"];
}

/** `<name>.crt` in `dir` carries the public key of `<name>.csr`, as openssl reads them. */
async function assertSameKey(dir: string, name: string): Promise<void> {
  const certKey = await opensslOk(["x509", "-in", `${name}.crt`, "-noout", "-pubkey"], { cwd: dir });
  const csrKey = await opensslOk(["req", "-in", `${name}.csr`, "-noout", "-pubkey"], { cwd: dir });
  assertEquals(certKey, csrKey, `${name}: the certificate's key is the CSR's`);
}

const P256 = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
const SAN = (s: string) => ["-addext", `subjectAltName=${s}`];

Deno.test("hostile CSRs: refused with the right status, nothing signed that should not be", async (t) => {
  await withHostileServer({
    name: "hostile-csr",
    rootTrustPolicy: true,
    args: ["--bootstrap-failure-burst", "100000"],
  }, async ({ proc, port, metricsPort, rootPem, token, dir: wsDir, held }) => {
    const client = rawClient(port, rootPem);
    // SignMeshCa takes the cluster from a client certificate: cluster-2's, bootstrapped the agent's way.
    const authed = rawClient(port, rootPem, await bootstrapPair(port, rootPem, token, CLUSTER));
    held.push(client, authed);
    const bootstrap = (csrPem: string) =>
      rawUnary(
        client,
        "bootstrap",
        IdentityService.bootstrap.requestSerialize({ token, cluster: CLUSTER, csrPem }),
      );
    const signMeshCa = (csrPem: string, anonymous = false) =>
      rawUnary(
        anonymous ? client : authed,
        "signMeshCa",
        IdentityService.signMeshCa.requestSerialize({ csrPem }),
      );
    const dir = `${wsDir}/csr`;
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
    // SignMeshCa's: "mesh-control-*" are signed, every other "mesh-*" refused.
    const ISTIOD = SAN(`DNS:${ISTIOD_SAN}`);
    const meshSpecs: [string, string[], string[]][] = [
      ["mesh-control-p256", P256, ISTIOD],
      ["mesh-control-rsa2048", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], ISTIOD],
      ["mesh-control-p384", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], ISTIOD],
      ["mesh-control-ca-true", P256, [...ISTIOD, "-addext", "basicConstraints=critical,CA:TRUE"]],
      ["mesh-control-pathlen-5", P256, [...ISTIOD, "-addext", "basicConstraints=critical,CA:TRUE,pathlen:5"]],
      ["mesh-cluster-name", P256, SAN(`DNS:${CLUSTER}`)],
      ["mesh-other-istiod", P256, SAN("DNS:istiod.other.svc")],
      ["mesh-extra-dns", P256, SAN(`DNS:${ISTIOD_SAN},DNS:evil.example.com`)],
      ["mesh-ip-san", P256, SAN(`DNS:${ISTIOD_SAN},IP:127.0.0.1`)],
      ["mesh-uri-san", P256, SAN(`DNS:${ISTIOD_SAN},URI:spiffe://cluster.local/ns/x/sa/y`)],
      ["mesh-email-san", P256, SAN(`DNS:${ISTIOD_SAN},email:root@example.com`)],
      ["mesh-wildcard", P256, SAN("DNS:*.istio-system.svc")],
      ["mesh-no-san", P256, []],
      ["mesh-sha1", P256, [...ISTIOD, "-sha1"]],
      ["mesh-rsa1024", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], ISTIOD],
      ["mesh-secp256k1", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1"], ISTIOD],
      ["mesh-brainpool", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:brainpoolP256r1"], ISTIOD],
      ["mesh-explicit-p256", [...P256, "-pkeyopt", "ec_param_enc:explicit"], ISTIOD],
      ["mesh-ed448", ["-algorithm", "ED448"], ISTIOD],
      // Fine for a client certificate, not for Istio's plug-in CA.
      ["mesh-ed25519", ["-algorithm", "ED25519"], ISTIOD],
    ];
    const csrs = new Map(
      await Promise.all(
        [...specs, ...meshSpecs].map(async ([n, k, e]) => [n, await opensslCsr(dir, n, k, e)] as const),
      ),
    );
    const issuedBefore = await metricValue(metricsPort, "meshrelay_client_certificates_issued_total");
    const meshIssuedBefore = await metricValue(metricsPort, "meshrelay_istio_ca_certificates_issued_total");
    let refused = 0;
    let meshRefused = 0;
    const refusedWith = (what: string, r: RawResult, codes: number[]) => {
      assert(codes.includes(r.code), `${what}: ${r.code} ${r.details}`);
    };
    const refuse = async (what: string, csrPem: string) => {
      refusedWith(what, await bootstrap(csrPem), [GrpcStatus.INVALID_ARGUMENT, GrpcStatus.PERMISSION_DENIED]);
      refused++;
    };
    const refuseMesh = async (what: string, csrPem: string, codes: number[]) => {
      refusedWith(what, await signMeshCa(csrPem), codes);
      meshRefused++;
    };

    await t.step("controls are issued: a client certificate for the cluster only", async () => {
      for (const name of ["control-p256", "control-rsa2048", "control-p384"]) {
        const r = await bootstrap(csrs.get(name)!);
        assertEquals(r.code, GrpcStatus.OK, `${name}: ${r.details}`);
        const resp = IdentityService.bootstrap.responseDeserialize(r.response!);
        await Deno.writeTextFile(`${dir}/${name}.crt`, resp.certificatePem);
        await Deno.writeTextFile(`${dir}/${name}.chain`, resp.chainPem);
        await Deno.writeTextFile(`${dir}/root.crt`, resp.caPem);
        const v = await opensslOk([
          "verify",
          "-x509_strict",
          "-purpose",
          "sslclient",
          "-CAfile",
          "root.crt",
          "-untrusted",
          `${name}.chain`,
          `${name}.crt`,
        ], { cwd: dir });
        assert(v.includes("OK"), v);
        const ext = await opensslOk([
          "x509",
          "-in",
          `${name}.crt`,
          "-noout",
          "-ext",
          "basicConstraints,subjectAltName,extendedKeyUsage",
        ], { cwd: dir });
        assert(/CA:FALSE/.test(ext), ext);
        assertEquals(ext.match(/DNS:[^,\s]+/g), [`DNS:${CLUSTER}`], ext);
        assert(!/IP Address|URI:|email:/.test(ext), ext);
        assert(/TLS Web Client Authentication/.test(ext), ext);
        // The issued key is the CSR's (possession proven by the CSR's signature).
        await assertSameKey(dir, name);
      }
    });

    await t.step("CA:true, foreign names, weak and unsupported keys, SHA-1: refused", async () => {
      for (const [name] of specs.filter(([n]) => !n.startsWith("control-"))) {
        await refuse(name, csrs.get(name)!);
      }
    });

    await t.step("broken signature, random and mutated DER, not PEM at all: refused", async () => {
      for (const [name, pem] of brokenCsrs(csrs.get("control-p256")!, 11)) await refuse(name, pem);
      await refuse("wrong label", csrs.get("control-p256")!.replaceAll("CERTIFICATE REQUEST", "CERTIFICATE"));
    });

    await t.step(
      "SignMeshCa controls: an Istio intermediate for the caller's cluster, pathLen 0",
      async () => {
        for (const [name] of meshSpecs.filter(([n]) => n.startsWith("mesh-control-"))) {
          const r = await signMeshCa(csrs.get(name)!);
          assertEquals(r.code, GrpcStatus.OK, `${name}: ${r.details}`);
          const resp = IdentityService.signMeshCa.responseDeserialize(r.response!);
          const [cert] = parseCertificates(resp.certificatePem, name);
          const [istioRoot] = parseCertificates(resp.caPem, `${name} root`);
          // The subject is ours, naming the caller's cluster (the CSR's says CN=cluster-2).
          assertEquals(cert.subject, `O=Istio, CN=Intermediate CA, L=${CLUSTER}`);
          assertEquals(istioRoot.subject, "O=Istio, CN=Root CA");
          assertEquals(cert.issuer, istioRoot.subject, `${name}: signed by the RootTrustPolicy's root`);
          assert(resp.caPem.trim() !== rootPem.trim(), `${name}: signed by the relay's own CA`);
          const bc = readBasicConstraints(cert);
          assertEquals([bc?.ca, bc?.pathLength, bc?.critical], [true, 0, true], `${name}: basicConstraints`);
          assertEquals(readExtKeyUsage(cert), undefined, `${name}: an intermediate CA has no EKU`);
          await Deno.writeTextFile(`${dir}/${name}.crt`, resp.certificatePem);
          await Deno.writeTextFile(`${dir}/${name}.root`, resp.caPem);
          const v = await opensslOk(["verify", "-x509_strict", "-CAfile", `${name}.root`, `${name}.crt`], {
            cwd: dir,
          });
          assert(v.includes("OK"), v);
          const ext = await opensslOk(["x509", "-in", `${name}.crt`, "-noout", "-ext", "subjectAltName"], {
            cwd: dir,
          });
          assertEquals(ext.match(/DNS:[^,\s]+/g), [`DNS:${ISTIOD_SAN}`], ext);
          assert(!/IP Address|URI:|email:/.test(ext), ext);
          await assertSameKey(dir, name);
        }
      },
    );

    await t.step("SignMeshCa: foreign names, weak and unusable keys, SHA-1: refused", async () => {
      for (const [name] of meshSpecs.filter(([n]) => !n.startsWith("mesh-control-"))) {
        await refuseMesh(name, csrs.get(name)!, [GrpcStatus.INVALID_ARGUMENT, GrpcStatus.PERMISSION_DENIED]);
      }
    });

    await t.step(
      "SignMeshCa: broken signature, random and mutated DER, no client certificate: refused",
      async () => {
        const bad = [GrpcStatus.INVALID_ARGUMENT, GrpcStatus.PERMISSION_DENIED];
        for (const [name, pem] of brokenCsrs(csrs.get("mesh-control-p256")!, 12)) {
          await refuseMesh(name, pem, bad);
        }
        // A valid CSR without a client certificate: there is no cluster to sign for.
        const anon = await signMeshCa(csrs.get("mesh-control-p256")!, true);
        refusedWith("anonymous", anon, [GrpcStatus.UNAUTHENTICATED]);
        meshRefused++;
      },
    );

    await t.step("nothing else was issued; one warning line per refusal", async () => {
      const issued = await metricValue(metricsPort, "meshrelay_client_certificates_issued_total");
      assertEquals(issued - issuedBefore, 3);
      const meshIssued = await metricValue(metricsPort, "meshrelay_istio_ca_certificates_issued_total");
      assertEquals(
        meshIssued - meshIssuedBefore,
        meshSpecs.filter(([n]) => n.startsWith("mesh-control-")).length,
      );
      for (
        const [msg, count] of [["bootstrap refused", refused], ["sign_mesh_ca refused", meshRefused]] as const
      ) {
        const lines = proc.lines.filter((l) => l.msg === msg);
        assertEquals(lines.length, count, msg);
        for (const l of lines) {
          assert(
            ["invalid_argument", "permission_denied", "unauthenticated"].includes(String(l.reason)),
            JSON.stringify(l),
          );
          assert(String(l.error).length > 0 && !String(l.error).includes("-----BEGIN"), JSON.stringify(l));
        }
      }
      // Only the anonymous call may be unauthenticated.
      const unauthenticated = proc.lines.filter((l) => l.reason === "unauthenticated");
      assertEquals(unauthenticated.map((l) => l.msg), ["sign_mesh_ca refused"]);
    });
  });
});
