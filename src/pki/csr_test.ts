import { assert, assertEquals, assertRejects, assertStringIncludes } from "../testing/assert.ts";
import { InvalidInputError, PermissionDeniedError } from "../errors.ts";
import { createCsr, signCsr, type SignCsrOptions } from "./csr.ts";
import {
  EKU,
  KeyUsage,
  readAuthorityKeyId,
  readBasicConstraints,
  readExtKeyUsage,
  readKeyUsage,
  readSubjectAltNames,
  readSubjectKeyId,
} from "./extensions.ts";
import { exportSpki, generateKeyPair, type KeyAlgorithm } from "./keys.ts";
import { certificateToPem, decodeBase64, findPemBlocks } from "./pem.ts";
import { DAY, makeCaPair, NOW, opensslOk, withTempDir } from "./test_support.ts";

function derOf(pem: string): Uint8Array {
  return decodeBase64(findPemBlocks(pem)[0].body)!;
}

function pemOf(der: Uint8Array): string {
  const b64 = btoa(Array.from(der, (b) => String.fromCharCode(b)).join(""));
  return `-----BEGIN CERTIFICATE REQUEST-----\n${
    b64.match(/.{1,64}/g)!.join("\n")
  }\n-----END CERTIFICATE REQUEST-----\n`;
}

Deno.test("createCsr + signCsr issue a certificate with our extensions only", async (t) => {
  const { intermediate } = await makeCaPair();
  const opts = (profile: SignCsrOptions["profile"], names: string[]): SignCsrOptions => ({
    issuer: intermediate,
    profile,
    expectDnsNames: names,
    now: NOW,
    validityMs: 365 * DAY,
  });
  for (const alg of ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "ed25519"] as KeyAlgorithm[]) {
    await t.step(`client ${alg}`, async () => {
      const kp = await generateKeyPair(alg);
      const csr = await createCsr(kp, { dnsNames: ["cluster-1"] });
      assert(csr.startsWith("-----BEGIN CERTIFICATE REQUEST-----\n") && csr.endsWith("\n"));
      const cert = await signCsr(csr, opts("client", ["cluster-1"]));
      assertEquals(cert.subject, "CN=cluster-1");
      assertEquals(readSubjectAltNames(cert), [{ type: "dns", value: "cluster-1" }]);
      assertEquals(readExtKeyUsage(cert)?.oids, [EKU.clientAuth]);
      assertEquals(readBasicConstraints(cert)?.ca, false);
      assertEquals(new Uint8Array(cert.publicKey.rawData), await exportSpki(kp.publicKey));
      assertEquals(readAuthorityKeyId(cert), readSubjectKeyId(intermediate.certificate));
      const rsa = alg.startsWith("rsa-");
      assertEquals(
        readKeyUsage(cert)?.usages,
        KeyUsage.digitalSignature | (rsa ? KeyUsage.keyEncipherment : 0),
      );
    });
  }
  await t.step("commonName and subject options", async () => {
    const kp = await generateKeyPair();
    const csr = await createCsr(kp, { dnsNames: ["a.example", "b.example"], commonName: "b.example" });
    const cert = await signCsr(csr, {
      ...opts("server", ["b.example", "a.example"]),
      subject: "CN=relay,O=meshrelay",
    });
    assertEquals(cert.subject, "CN=relay, O=meshrelay");
    assertEquals(readSubjectAltNames(cert).map((n) => n.value), ["b.example", "a.example"]);
    assertEquals(readExtKeyUsage(cert)?.oids, [EKU.serverAuth]);
  });
  await t.step("names compare caselessly", async () => {
    const kp = await generateKeyPair();
    const csr = await createCsr(kp, { dnsNames: ["Cluster-1"] });
    const cert = await signCsr(csr, opts("client", ["cluster-1"]));
    assertEquals(readSubjectAltNames(cert).map((n) => n.value), ["cluster-1"]);
  });
  await t.step("createCsr needs a DNS name", async () => {
    const kp = await generateKeyPair();
    await assertRejects(() => createCsr(kp, { dnsNames: [] }), InvalidInputError);
  });
});

Deno.test("signCsr is safe against hostile CSRs", async (t) => {
  const { root, intermediate } = await makeCaPair();
  const base: SignCsrOptions = {
    issuer: intermediate,
    profile: "client",
    expectDnsNames: ["cluster-1"],
    now: NOW,
    validityMs: DAY,
  };
  await withTempDir(async (dir) => {
    const o = (args: string[]) => opensslOk(args, { cwd: dir });
    await o(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.pem"]);
    await o(["ecparam", "-name", "secp256k1", "-genkey", "-noout", "-out", "k1.pem"]);
    await o(["genrsa", "-out", "rsa1024.pem", "1024"]);
    const req = async (key: string, exts: string[], extra: string[] = []) => {
      const args = ["req", "-new", "-key", key, "-subj", "/CN=cluster-1/O=system:masters", ...extra];
      for (const e of exts) args.push("-addext", e);
      return await opensslOk(args, { cwd: dir });
    };
    const good = await createCsr(await generateKeyPair(), { dnsNames: ["cluster-1"] });
    const goodDer = derOf(good);
    const flipped = (at: number) => {
      const d = goodDer.slice();
      d[at] ^= 0x01;
      return pemOf(d);
    };
    // The subject's CN value sits well inside the signed part; the last byte is inside the signature.
    const cnAt = goodDer.findIndex((_, i) =>
      new TextDecoder().decode(goodDer.slice(i, i + 9)) === "cluster-1"
    );
    const cases: {
      name: string;
      csr: () => Promise<string>;
      err: typeof InvalidInputError;
      expect: string;
      opts?: Partial<SignCsrOptions>;
    }[] = [
      {
        name: "signature bytes altered",
        csr: () => Promise.resolve(flipped(goodDer.length - 1)),
        err: InvalidInputError,
        expect: "signature",
      },
      {
        name: "signed content altered",
        csr: () => Promise.resolve(flipped(cnAt)),
        err: InvalidInputError,
        expect: "signature",
      },
      {
        name: "garbage DER",
        csr: () => Promise.resolve(pemOf(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]))),
        err: InvalidInputError,
        expect: "not a valid PKCS#10",
      },
      {
        name: "not PEM",
        csr: () => Promise.resolve("hello"),
        err: InvalidInputError,
        expect: "no PEM certificate request",
      },
      {
        name: "a certificate instead",
        csr: () => Promise.resolve(certificateToPem(root.certificate)),
        err: InvalidInputError,
        expect: "no PEM certificate request",
      },
      {
        name: "huge",
        csr: () => Promise.resolve(pemOf(new Uint8Array(40000))),
        err: InvalidInputError,
        expect: "too large",
      },
      {
        name: "asks for CA:TRUE",
        csr: () => req("ec.pem", ["subjectAltName=DNS:cluster-1", "basicConstraints=critical,CA:TRUE"]),
        err: PermissionDeniedError,
        expect: "CA",
      },
      {
        name: "extra SAN",
        csr: () => req("ec.pem", ["subjectAltName=DNS:cluster-1,DNS:cluster-2"]),
        err: PermissionDeniedError,
        expect: "other than the authorised",
      },
      {
        name: "different SAN",
        csr: () => req("ec.pem", ["subjectAltName=DNS:cluster-2"]),
        err: PermissionDeniedError,
        expect: "other than the authorised",
      },
      { name: "no SAN", csr: () => req("ec.pem", []), err: PermissionDeniedError, expect: "no DNS names" },
      {
        name: "IP SAN",
        csr: () => req("ec.pem", ["subjectAltName=DNS:cluster-1,IP:10.0.0.1"]),
        err: PermissionDeniedError,
        expect: "other than DNS",
      },
      {
        name: "URI SAN",
        csr: () => req("ec.pem", ["subjectAltName=DNS:cluster-1,URI:spiffe://x/y"]),
        err: PermissionDeniedError,
        expect: "other than DNS",
      },
      {
        name: "weak RSA",
        csr: () => req("rsa1024.pem", ["subjectAltName=DNS:cluster-1"]),
        err: InvalidInputError,
        expect: "too weak",
      },
      {
        name: "unsupported curve",
        csr: () => req("k1.pem", ["subjectAltName=DNS:cluster-1"]),
        err: InvalidInputError,
        expect: "secp256k1",
      },
      {
        name: "SHA-1 signature",
        csr: () => req("ec.pem", ["subjectAltName=DNS:cluster-1"], ["-sha1"]),
        err: InvalidInputError,
        expect: "weak signature hash",
      },
    ];
    for (const c of cases) {
      await t.step(c.name, async () => {
        const pem = await c.csr();
        const e = await assertRejects(() => signCsr(pem, { ...base, ...c.opts }), c.err);
        assertStringIncludes(e.message, c.expect);
        assert(!e.message.includes("\n"));
      });
    }
    await t.step("requested extensions and subject are ignored", async () => {
      const pem = await req("ec.pem", [
        "subjectAltName=DNS:cluster-1",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "extendedKeyUsage=codeSigning,serverAuth",
        "basicConstraints=critical,CA:FALSE,pathlen:5",
        "1.2.3.4=critical,ASN1:NULL",
      ]);
      const cert = await signCsr(pem, base);
      assertEquals(cert.subject, "CN=cluster-1");
      assertEquals(readKeyUsage(cert)?.usages, KeyUsage.digitalSignature);
      assertEquals(readExtKeyUsage(cert)?.oids, [EKU.clientAuth]);
      assertEquals(readBasicConstraints(cert), { ca: false, pathLength: undefined, critical: true });
      assertEquals(Array.from(cert.extensions, (e) => e.type).sort(), [
        "2.5.29.14",
        "2.5.29.15",
        "2.5.29.17",
        "2.5.29.19",
        "2.5.29.35",
        "2.5.29.37",
      ]);
    });
    await t.step(
      "the key is re-encoded, not copied: a compressed point comes back uncompressed",
      async () => {
        await o(["ec", "-in", "ec.pem", "-conv_form", "compressed", "-out", "ec-compressed.pem"]);
        const pem = await req("ec-compressed.pem", ["subjectAltName=DNS:cluster-1"]);
        const cert = await signCsr(pem, base);
        const full = await o(["pkey", "-in", "ec.pem", "-pubout", "-outform", "DER", "-out", "ec-pub.der"])
          .then(() => Deno.readFile(`${dir}/ec-pub.der`));
        assertEquals(new Uint8Array(cert.publicKey.rawData), full);
      },
    );
    await t.step("other attributes (challengePassword) next to the extension request are fine", async () => {
      await Deno.writeTextFile(
        `${dir}/cp.cnf`,
        "[req]\ndistinguished_name=dn\nattributes=attrs\nprompt=no\n[dn]\nCN=cluster-1\n" +
          "[attrs]\nchallengePassword=secret12\n",
      );
      const pem = await opensslOk(
        ["req", "-new", "-key", "ec.pem", "-config", "cp.cnf", "-addext", "subjectAltName=DNS:cluster-1"],
        { cwd: dir },
      );
      const cert = await signCsr(pem, base);
      assertEquals(readSubjectAltNames(cert), [{ type: "dns", value: "cluster-1" }]);
      await assertRejects(
        () => signCsr(pem, { ...base, expectDnsNames: ["cluster-2"] }),
        PermissionDeniedError,
      );
    });
    await t.step("istio-intermediate-ca may ask for CA:TRUE and gets pathLen 0", async () => {
      const pem = await req("ec.pem", [
        "subjectAltName=DNS:istiod.istio-system.svc",
        "basicConstraints=critical,CA:TRUE",
      ]);
      const cert = await signCsr(pem, {
        ...base,
        issuer: root,
        profile: "istio-intermediate-ca",
        expectDnsNames: ["istiod.istio-system.svc"],
        subject: "O=Istio,CN=Intermediate CA,L=cluster-1",
      });
      assertEquals(readBasicConstraints(cert), { ca: true, pathLength: 0, critical: true });
      assertEquals(cert.subject, "O=Istio, CN=Intermediate CA, L=cluster-1");
    });
    await t.step("expectDnsNames must be given", async () => {
      await assertRejects(() => signCsr(good, { ...base, expectDnsNames: [] }), InvalidInputError);
    });
  });
});
