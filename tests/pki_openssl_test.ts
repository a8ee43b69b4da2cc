/**
 * openssl as the independent verifier of every chain src/pki produces, and the prerequisites doc's
 * openssl script (tests/fixtures/seed_relay_certs.sh) as the source of bring-your-own material.
 */
import * as pki from "../src/pki/mod.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../src/testing/assert.ts";
import { InvalidInputError } from "../src/errors.ts";

const DAY = 24 * 60 * 60 * 1000;
const SEED_SCRIPT = new URL("./fixtures/seed_relay_certs.sh", import.meta.url).pathname;

async function run(cmd: string, args: string[], cwd: string): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(cmd, { args, cwd, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-pki-openssl-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** `openssl verify -x509_strict` of `leaf` against `root` with `untrusted` intermediates. */
async function opensslVerify(
  dir: string,
  files: { root: string; untrusted?: string; leaf: string },
  extra: string[] = [],
): Promise<{ ok: boolean; out: string }> {
  const args = ["verify", "-x509_strict", ...extra, "-CAfile", files.root];
  if (files.untrusted) args.push("-untrusted", files.untrusted);
  args.push(files.leaf);
  const r = await run("openssl", args, dir);
  return { ok: r.code === 0 && r.out.includes(": OK"), out: r.out };
}

async function opensslText(dir: string, file: string): Promise<string> {
  const r = await run("openssl", ["x509", "-in", file, "-noout", "-text"], dir);
  assertEquals(r.code, 0, r.out);
  return r.out;
}

function assertHasSecurityExtensions(text: string, what: string) {
  for (
    const part of [
      "X509v3 Subject Key Identifier",
      "X509v3 Authority Key Identifier",
      "X509v3 Basic Constraints: critical",
      "X509v3 Key Usage: critical",
    ]
  ) assertStringIncludes(text, part, `${what}: missing ${part}`);
  const serial = /Serial Number:\s*\n\s*([0-9a-f:]+)/.exec(text);
  assert(serial, `${what}: a 128-bit serial prints on its own line`);
  assertEquals(serial[1].split(":").length, 16, `${what}: 16-byte serial`);
}

const VARIANTS: { name: string; root: pki.KeyAlgorithm; int: pki.KeyAlgorithm; leaf: pki.KeyAlgorithm }[] = [
  {
    name: "ECDSA defaults (P-384 root, P-256 below)",
    root: "ecdsa-p384",
    int: "ecdsa-p256",
    leaf: "ecdsa-p256",
  },
  { name: "RSA-2048", root: "rsa-2048", int: "rsa-2048", leaf: "rsa-2048" },
  { name: "RSA-3072 root", root: "rsa-3072", int: "rsa-2048", leaf: "ecdsa-p256" },
  { name: "Ed25519", root: "ed25519", int: "ed25519", leaf: "ed25519" },
  {
    name: "mixed RSA root, P-384 intermediate, Ed25519 leaves",
    root: "rsa-2048",
    int: "ecdsa-p384",
    leaf: "ed25519",
  },
];

Deno.test("openssl -x509_strict accepts every relay chain src/pki issues", async (t) => {
  const now = new Date();
  await withTempDir(async (dir) => {
    for (const v of VARIANTS) {
      await t.step(v.name, async () => {
        const rk = await pki.generateKeyPair(v.root);
        const root = await pki.issueCertificate({
          profile: "root-ca",
          subject: "CN=relay-root,O=meshrelay",
          publicKey: rk.publicKey,
          selfSignKey: rk,
          now,
          validityMs: 3650 * DAY,
        });
        const ik = await pki.generateKeyPair(v.int);
        const intermediate = await pki.issueCertificate({
          profile: "intermediate-ca",
          subject: "CN=relay-tls-signing,O=meshrelay",
          publicKey: ik.publicKey,
          issuer: { certificate: root, keyPair: rk },
          now,
          validityMs: 365 * DAY,
        });
        const signing = await pki.loadIssuer(
          pki.certificatesToPem([intermediate, root]),
          await pki.privateKeyToPem(ik),
          { now },
        );
        const sk = await pki.generateKeyPair(v.leaf);
        const server = await pki.issueCertificate({
          profile: "server",
          subject: "CN=enterprise-networking.gloo-mesh",
          dnsNames: ["enterprise-networking.gloo-mesh", "*.gloo-mesh"],
          ipAddresses: ["127.0.0.1"],
          publicKey: sk.publicKey,
          issuer: signing,
          now,
          validityMs: 365 * DAY,
        });
        const ck = await pki.generateKeyPair(v.leaf);
        const client = await pki.signCsr(await pki.createCsr(ck, { dnsNames: ["cluster-1"] }), {
          issuer: signing,
          profile: "client",
          expectDnsNames: ["cluster-1"],
          now,
          validityMs: 365 * DAY,
        });
        const p = (f: string) => `${v.root}-${v.int}-${v.leaf}-${f}`;
        await Deno.writeTextFile(`${dir}/${p("root.pem")}`, pki.certificateToPem(root));
        await Deno.writeTextFile(`${dir}/${p("int.pem")}`, pki.certificateToPem(intermediate));
        await Deno.writeTextFile(`${dir}/${p("server.pem")}`, pki.certificateToPem(server));
        await Deno.writeTextFile(`${dir}/${p("client.pem")}`, pki.certificateToPem(client));
        const files = (leaf: string) => ({ root: p("root.pem"), untrusted: p("int.pem"), leaf: p(leaf) });

        const srv = await opensslVerify(dir, files("server.pem"), [
          "-purpose",
          "sslserver",
          "-verify_hostname",
          "enterprise-networking.gloo-mesh",
        ]);
        assert(srv.ok, srv.out);
        const cli = await opensslVerify(dir, files("client.pem"), ["-purpose", "sslclient"]);
        assert(cli.ok, cli.out);
        // The same check fails for the wrong purpose, so it is not vacuous.
        const wrong = await opensslVerify(dir, files("server.pem"), ["-purpose", "sslclient"]);
        assert(!wrong.ok, "a server certificate must not verify as a client");

        for (const f of ["root.pem", "int.pem", "server.pem", "client.pem"]) {
          assertHasSecurityExtensions(await opensslText(dir, p(f)), `${v.name} ${f}`);
        }
        assertStringIncludes(await opensslText(dir, p("root.pem")), "CA:TRUE, pathlen:1");
        assertStringIncludes(await opensslText(dir, p("int.pem")), "CA:TRUE, pathlen:0");
        assertStringIncludes(await opensslText(dir, p("int.pem")), "Certificate Sign, CRL Sign");

        // Our own validation agrees with openssl.
        const ours = await pki.verifyChain(server, {
          roots: [root],
          intermediates: [intermediate],
          now,
          purpose: "serverAuth",
          dnsName: "enterprise-networking.gloo-mesh",
        });
        assertEquals(ours.chain.length, 3);
        await pki.verifyChain(client, {
          roots: [root],
          intermediates: [intermediate],
          now,
          purpose: "clientAuth",
        });
      });
    }
  });
});

Deno.test("openssl -x509_strict accepts the Istio plug-in CA material in every architecture", async (t) => {
  const now = new Date();
  await withTempDir(async (dir) => {
    const write = (f: string, certs: pki.X509Certificate[]) =>
      Deno.writeTextFile(`${dir}/${f}`, pki.certificatesToPem(certs));
    const makeRoot = async (subject: string) => {
      const kp = await pki.generateKeyPair("ecdsa-p384");
      const certificate = await pki.issueCertificate({
        profile: "root-ca",
        subject,
        publicKey: kp.publicKey,
        selfSignKey: kp,
        now,
        validityMs: 3650 * DAY,
      });
      return { certificate, keyPair: kp };
    };
    const istioIntermediate = async (root: pki.Issuer, cluster: string, alg: pki.KeyAlgorithm) => {
      const kp = await pki.generateKeyPair(alg);
      const certificate = await pki.issueCertificate({
        profile: "istio-intermediate-ca",
        subject: `O=Istio,CN=Intermediate CA,L=${cluster}`,
        dnsNames: ["istiod.istio-system.svc"],
        publicKey: kp.publicKey,
        issuer: root,
        now,
        validityMs: 730 * DAY,
      });
      return { certificate, keyPair: kp };
    };
    const checkCacerts = async (name: string, root: pki.Issuer, inter: pki.Issuer) => {
      // cacerts: ca-cert.pem, root-cert.pem, cert-chain.pem = intermediate + root.
      await write(`${name}-root-cert.pem`, [root.certificate]);
      await write(`${name}-ca-cert.pem`, [inter.certificate]);
      await write(`${name}-cert-chain.pem`, [inter.certificate, root.certificate]);
      const r = await opensslVerify(dir, { root: `${name}-root-cert.pem`, leaf: `${name}-ca-cert.pem` });
      assert(r.ok, r.out);
      const text = await opensslText(dir, `${name}-ca-cert.pem`);
      assertHasSecurityExtensions(text, name);
      assertStringIncludes(text, "CA:TRUE, pathlen:0");
      assertStringIncludes(text, "DNS:istiod.istio-system.svc");
      assertStringIncludes(text, "Subject: O = Istio, CN = Intermediate CA, L = ");
      // A workload certificate istiod would issue verifies through cert-chain.pem.
      const wk = await pki.generateKeyPair();
      const workload = await pki.issueCertificate({
        profile: "client",
        subject: "O=Istio",
        dnsNames: ["workload.default.svc"],
        publicKey: wk.publicKey,
        issuer: inter,
        now,
        validityMs: DAY,
      });
      await write(`${name}-workload.pem`, [workload]);
      const w = await opensslVerify(
        dir,
        { root: `${name}-root-cert.pem`, untrusted: `${name}-cert-chain.pem`, leaf: `${name}-workload.pem` },
        ["-purpose", "sslclient"],
      );
      assert(w.ok, w.out);
    };

    await t.step("Istio root with per-cluster intermediates (P-256 and RSA)", async () => {
      const root = await makeRoot("O=Istio,CN=Root CA");
      await checkCacerts("istio-c1", root, await istioIntermediate(root, "cluster-1", "ecdsa-p256"));
      await checkCacerts("istio-c2", root, await istioIntermediate(root, "cluster-2", "rsa-2048"));
    });
    await t.step("one root with separate relay and Istio intermediates", async () => {
      const root = await makeRoot("CN=shared-root,O=meshrelay");
      await checkCacerts("shared-istio", root, await istioIntermediate(root, "cluster-1", "ecdsa-p256"));
      const rk = await pki.generateKeyPair();
      const relayInt = await pki.issueCertificate({
        profile: "intermediate-ca",
        subject: "CN=relay-tls-signing",
        publicKey: rk.publicKey,
        issuer: root,
        now,
        validityMs: 365 * DAY,
      });
      await write("shared-root.pem", [root.certificate]);
      await write("shared-relay-int.pem", [relayInt]);
      const r = await opensslVerify(dir, { root: "shared-root.pem", leaf: "shared-relay-int.pem" });
      assert(r.ok, r.out);
    });
    await t.step("Ed25519 is refused for Istio", async () => {
      const root = await makeRoot("O=Istio,CN=Root CA");
      await assertRejects(() => istioIntermediate(root, "cluster-1", "ed25519"), InvalidInputError);
    });
  });
});

Deno.test("the prerequisites doc's openssl script output imports as bring-your-own material", async (t) => {
  await withTempDir(async (dir) => {
    const r = await run("bash", [SEED_SCRIPT], dir);
    assertEquals(r.code, 0, r.out);
    const read = (f: string) => Deno.readTextFile(`${dir}/${f}`);
    const now = new Date();
    // The script's flaws are real: serial 0 and a root without keyUsage, which -x509_strict rejects.
    const strict = await opensslVerify(dir, { root: "relay-root.crt", leaf: "relay-server-tls.crt" });
    assert(!strict.ok, "openssl -x509_strict rejects the script's own chain");
    assertStringIncludes(strict.out, "key usage");

    await t.step("keys: PKCS#8 as written, and as PKCS#1 and encrypted", async () => {
      for (const f of ["relay-root.key", "relay-tls-signing.key", "relay-server-tls.key"]) {
        const kp = await pki.importPrivateKey(await read(f), { what: f });
        assert(kp.algorithm === "rsa-2048" || kp.algorithm === "rsa-4096");
      }
      assertEquals(
        (await run(
          "openssl",
          ["rsa", "-in", "relay-tls-signing.key", "-traditional", "-out", "pkcs1.key"],
          dir,
        )).code,
        0,
      );
      assertStringIncludes(await read("pkcs1.key"), "BEGIN RSA PRIVATE KEY");
      assertEquals((await pki.importPrivateKey(await read("pkcs1.key"))).algorithm, "rsa-2048");
      const enc = [
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-in",
        "relay-tls-signing.key",
        "-passout",
        "pass:pw",
        "-out",
        "enc.key",
      ];
      assertEquals((await run("openssl", enc, dir)).code, 0);
      assertEquals(
        (await pki.importPrivateKey(await read("enc.key"), { passphrase: "pw" })).algorithm,
        "rsa-2048",
      );
    });
    await t.step("certificates parse, including serial 0", async () => {
      for (const f of ["relay-root.crt", "relay-tls-signing.crt", "relay-server-tls.crt"]) {
        const [c] = pki.parseCertificates(await read(f), f);
        assert(c.subject.includes("gloo-mesh"));
      }
      const [server] = pki.parseCertificates(await read("relay-server-tls.crt"));
      assertEquals((await pki.describeCertificate(server)).serialNumber, "00");
    });
    await t.step(
      "the signing cert (CA:TRUE, keyCertSign) is accepted as issuer and issues agents",
      async () => {
        const signing = await pki.loadIssuer(await read("relay-tls-signing.crt"), await read("pkcs1.key"), {
          now,
          what: "--signing",
        });
        const ck = await pki.generateKeyPair();
        const client = await pki.signCsr(await pki.createCsr(ck, { dnsNames: ["cluster-1"] }), {
          issuer: signing,
          profile: "client",
          expectDnsNames: ["cluster-1"],
          now,
          validityMs: 365 * DAY,
        });
        const [root] = pki.parseCertificates(await read("relay-root.crt"));
        // Lenient for the trust anchor only: the root has no keyUsage, RFC 5280 leaves anchors to us.
        await pki.verifyChain(client, {
          roots: [root],
          intermediates: [signing.certificate],
          now,
          purpose: "clientAuth",
        });
        await Deno.writeTextFile(`${dir}/client.pem`, pki.certificateToPem(client));
        // openssl without -x509_strict agrees (strict mode only objects to the script's root).
        const loose = await run(
          "openssl",
          [
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            "relay-root.crt",
            "-untrusted",
            "relay-tls-signing.crt",
            "client.pem",
          ],
          dir,
        );
        assertEquals(loose.code, 0, loose.out);
      },
    );
    await t.step("the root (no keyUsage) is accepted as --ca issuer", async () => {
      const root = await pki.loadIssuer(await read("relay-root.crt"), await read("relay-root.key"), { now });
      assertEquals(root.keyPair.algorithm, "rsa-4096");
    });
    await t.step("verifyChain accepts the script's server cert for the relay host name", async () => {
      const [root] = pki.parseCertificates(await read("relay-root.crt"));
      const [server] = pki.parseCertificates(await read("relay-server-tls.crt"));
      const r = await pki.verifyChain(server, {
        roots: [root],
        now,
        purpose: "serverAuth",
        dnsName: "enterprise-networking.gloo-mesh",
      });
      assertEquals(r.chain.length, 2);
    });
    await t.step("the server cert (CA:FALSE) is refused as issuer, and a mismatched key too", async () => {
      const e1 = await assertRejects(
        () =>
          pki.loadIssuer(
            Deno.readTextFileSync(`${dir}/relay-server-tls.crt`),
            Deno.readTextFileSync(`${dir}/relay-server-tls.key`),
            { now, what: "--signing" },
          ),
        InvalidInputError,
      );
      assertStringIncludes(e1.message, "not a CA");
      const e2 = await assertRejects(
        () =>
          pki.loadIssuer(
            Deno.readTextFileSync(`${dir}/relay-tls-signing.crt`),
            Deno.readTextFileSync(`${dir}/relay-server-tls.key`),
            { now, what: "--signing" },
          ),
        InvalidInputError,
      );
      assertStringIncludes(e2.message, "does not belong");
    });
  });
});
