import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsageExtension,
  type Extension,
  KeyUsagesExtension,
  PublicKey,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  type X509Certificate,
  X509CertificateGenerator,
} from "@peculiar/x509";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../testing/assert.ts";
import { InvalidInputError } from "../errors.ts";
import {
  EKU,
  KeyUsage,
  OID,
  readAuthorityKeyId,
  readBasicConstraints,
  readExtKeyUsage,
  readKeyUsage,
  readSubjectAltNames,
  readSubjectKeyId,
} from "./extensions.ts";
import {
  BACKDATE_MS,
  issueCertificate,
  type IssueOptions,
  keyIdOf,
  type Profile,
  randomSerialHex,
  toHex,
} from "./issue.ts";
import { exportSpki, generateKeyPair, type KeyAlgorithm, signatureParams } from "./keys.ts";
import { canonicalIp } from "./names.ts";
import { DAY, makeCaPair, NOW, rawCert } from "./test_support.ts";

Deno.test("randomSerialHex: 128-bit, positive, never zero, unique", async (t) => {
  await t.step("shape", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const s = randomSerialHex();
      assert(/^[0-9a-f]{32}$/.test(s), s);
      const first = parseInt(s.slice(0, 2), 16);
      assert(first >= 1 && first <= 0x7f, s);
      seen.add(s);
    }
    assertEquals(seen.size, 200);
  });
  await t.step("an all-zero or high-bit random source still gives a valid serial", () => {
    assertEquals(randomSerialHex((b) => b.fill(0)), "01" + "00".repeat(15));
    assertEquals(randomSerialHex((b) => b.fill(0xff)), "7f" + "ff".repeat(15));
  });
});

Deno.test("issueCertificate sets the profile's extensions, SKI and AKI", async (t) => {
  const { root, intermediate } = await makeCaPair({ rootAlg: "ecdsa-p384" });
  const cases: {
    profile: Profile;
    keyAlg: KeyAlgorithm;
    ca: boolean;
    pathLength?: number;
    ku: number;
    eku?: string;
    dnsNames?: string[];
    ipAddresses?: string[];
    issuer: "root" | "intermediate";
  }[] = [
    {
      profile: "intermediate-ca",
      keyAlg: "ecdsa-p256",
      ca: true,
      pathLength: 0,
      ku: KeyUsage.keyCertSign | KeyUsage.cRLSign,
      issuer: "root",
    },
    {
      profile: "istio-intermediate-ca",
      keyAlg: "ecdsa-p256",
      ca: true,
      pathLength: 0,
      ku: KeyUsage.keyCertSign | KeyUsage.cRLSign | KeyUsage.digitalSignature,
      dnsNames: ["istiod.istio-system.svc"],
      issuer: "root",
    },
    {
      profile: "server",
      keyAlg: "ecdsa-p256",
      ca: false,
      ku: KeyUsage.digitalSignature,
      eku: EKU.serverAuth,
      dnsNames: ["*.gloo-mesh", "relay.example.com"],
      ipAddresses: ["127.0.0.1", "::1"],
      issuer: "intermediate",
    },
    {
      profile: "server",
      keyAlg: "rsa-2048",
      ca: false,
      ku: KeyUsage.digitalSignature | KeyUsage.keyEncipherment,
      eku: EKU.serverAuth,
      dnsNames: ["relay"],
      issuer: "intermediate",
    },
    {
      profile: "client",
      keyAlg: "ed25519",
      ca: false,
      ku: KeyUsage.digitalSignature,
      eku: EKU.clientAuth,
      dnsNames: ["cluster-1"],
      issuer: "intermediate",
    },
  ];
  for (const c of cases) {
    await t.step(`${c.profile} ${c.keyAlg}`, async () => {
      const kp = await generateKeyPair(c.keyAlg);
      const issuer = c.issuer === "root" ? root : intermediate;
      const cert = await issueCertificate({
        profile: c.profile,
        subject: "CN=x,O=meshrelay",
        dnsNames: c.dnsNames,
        ipAddresses: c.ipAddresses,
        publicKey: kp.publicKey,
        issuer,
        now: NOW,
        validityMs: 30 * DAY,
      });
      const bc = readBasicConstraints(cert)!;
      assertEquals(bc, { ca: c.ca, pathLength: c.pathLength, critical: true });
      assertEquals(readKeyUsage(cert), { usages: c.ku, critical: true });
      assertEquals(readExtKeyUsage(cert)?.oids, c.eku ? [c.eku] : undefined);
      const sans = readSubjectAltNames(cert);
      assertEquals(sans.filter((n) => n.type === "dns").map((n) => n.value), c.dnsNames ?? []);
      assertEquals(sans.filter((n) => n.type === "ip").length, c.ipAddresses?.length ?? 0);
      assertEquals(readSubjectKeyId(cert), await keyIdOf(await exportSpki(kp.publicKey)));
      assertEquals(readAuthorityKeyId(cert), readSubjectKeyId(issuer.certificate));
      assertEquals(cert.issuer, issuer.certificate.subject);
      assert(await cert.verify({ publicKey: issuer.certificate.publicKey, signatureOnly: true }));
    });
  }
  await t.step("root-ca: self-signed, pathLen 1, AKI = own SKI", async () => {
    const c = root.certificate;
    assertEquals(readBasicConstraints(c), { ca: true, pathLength: 1, critical: true });
    assertEquals(readKeyUsage(c), { usages: KeyUsage.keyCertSign | KeyUsage.cRLSign, critical: true });
    assertEquals(readAuthorityKeyId(c), readSubjectKeyId(c));
    assertEquals(c.subject, c.issuer);
    assert(await c.verify({ signatureOnly: true }));
  });
  await t.step("explicit pathLength", async () => {
    const kp = await generateKeyPair();
    const cert = await issueCertificate({
      profile: "root-ca",
      subject: "CN=deep-root",
      publicKey: kp.publicKey,
      selfSignKey: kp,
      now: NOW,
      validityMs: DAY,
      pathLength: 3,
    });
    assertEquals(readBasicConstraints(cert)?.pathLength, 3);
  });
});

Deno.test("issueCertificate signs with the algorithm matching the issuer key", async (t) => {
  const cases: { alg: KeyAlgorithm; name: string; hash?: string }[] = [
    { alg: "ecdsa-p256", name: "ECDSA", hash: "SHA-256" },
    { alg: "ecdsa-p384", name: "ECDSA", hash: "SHA-384" },
    { alg: "rsa-2048", name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    { alg: "ed25519", name: "Ed25519" },
  ];
  for (const c of cases) {
    await t.step(c.alg, async () => {
      const kp = await generateKeyPair(c.alg);
      const cert = await issueCertificate({
        profile: "root-ca",
        subject: "CN=r",
        publicKey: kp.publicKey,
        selfSignKey: kp,
        now: NOW,
        validityMs: DAY,
      });
      const sa = cert.signatureAlgorithm as unknown as { name: string; hash?: { name: string } };
      assertEquals(sa.name, c.name);
      assertEquals(sa.hash?.name, c.hash);
    });
  }
});

Deno.test("issueCertificate validity: backdated 5 minutes, never outside the issuer's window", async (t) => {
  const { root, intermediate } = await makeCaPair();
  const kp = await generateKeyPair();
  const base = { profile: "server" as const, subject: "CN=s", dnsNames: ["s"], publicKey: kp.publicKey };
  await t.step("backdated start, requested end", async () => {
    const cert = await issueCertificate({ ...base, issuer: intermediate, now: NOW, validityMs: 10 * DAY });
    assertEquals(cert.notBefore.getTime(), NOW.getTime() - BACKDATE_MS);
    assertEquals(cert.notAfter.getTime(), NOW.getTime() + 10 * DAY);
    assertEquals(BACKDATE_MS, 5 * 60 * 1000);
  });
  await t.step("clamped to the issuer's notAfter", async () => {
    const cert = await issueCertificate({ ...base, issuer: intermediate, now: NOW, validityMs: 5000 * DAY });
    assertEquals(cert.notAfter.getTime(), intermediate.certificate.notAfter.getTime());
  });
  await t.step("not before the issuer's notBefore", async () => {
    const justAfter = new Date(intermediate.certificate.notBefore.getTime() + 1000);
    const cert = await issueCertificate({ ...base, issuer: intermediate, now: justAfter, validityMs: DAY });
    assertEquals(cert.notBefore.getTime(), intermediate.certificate.notBefore.getTime());
  });
  await t.step("an expired issuer is refused", async () => {
    const later = new Date(intermediate.certificate.notAfter.getTime() + 1000);
    const e = await assertRejects(
      () => issueCertificate({ ...base, issuer: intermediate, now: later, validityMs: DAY }),
      InvalidInputError,
    );
    assertStringIncludes(e.message, "expired");
  });
  await t.step("the root's window also bounds the intermediate", async () => {
    const ik = await generateKeyPair();
    const cert = await issueCertificate({
      profile: "intermediate-ca",
      subject: "CN=i2",
      publicKey: ik.publicKey,
      issuer: root,
      now: NOW,
      validityMs: 99999 * DAY,
    });
    assertEquals(cert.notAfter.getTime(), root.certificate.notAfter.getTime());
  });
});

Deno.test("issueCertificate refuses what would make a broken or unsafe certificate", async (t) => {
  const { root, intermediate } = await makeCaPair();
  const kp = await generateKeyPair();
  const ed = await generateKeyPair("ed25519");
  const weak = await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 1024,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  ) as CryptoKeyPair;
  const leaf = await issueCertificate({
    profile: "server",
    subject: "CN=leaf",
    dnsNames: ["leaf"],
    publicKey: kp.publicKey,
    issuer: intermediate,
    now: NOW,
    validityMs: DAY,
  });
  const caNoCertSign = await rawCert({
    subject: "CN=odd-ca",
    publicKey: kp.publicKey,
    signer: root.keyPair,
    issuerCert: root.certificate,
    ca: true,
    keyUsage: KeyUsage.digitalSignature,
  });
  const base: IssueOptions = {
    profile: "server",
    subject: "CN=s",
    dnsNames: ["s"],
    publicKey: kp.publicKey,
    issuer: intermediate,
    now: NOW,
    validityMs: DAY,
  };
  const cases: { name: string; opts: IssueOptions; expect: string }[] = [
    {
      name: "CA below a pathLen 0 intermediate",
      opts: { ...base, profile: "intermediate-ca", dnsNames: [] },
      expect: "does not allow a CA below it",
    },
    {
      name: "pathLength larger than the issuer allows",
      opts: { ...base, profile: "intermediate-ca", issuer: root, pathLength: 1 },
      expect: "at most 0",
    },
    {
      name: "leaf as issuer",
      opts: { ...base, issuer: { certificate: leaf, keyPair: kp } },
      expect: "not a CA",
    },
    {
      name: "CA without keyCertSign as issuer",
      opts: { ...base, issuer: { certificate: caNoCertSign, keyPair: kp } },
      expect: "keyCertSign",
    },
    {
      name: "Istio intermediate with an Ed25519 key",
      opts: { ...base, profile: "istio-intermediate-ca", issuer: root, publicKey: ed.publicKey },
      expect: "Istio",
    },
    { name: "server without names", opts: { ...base, dnsNames: [] }, expect: "at least one DNS name" },
    { name: "bad DNS name", opts: { ...base, dnsNames: ["bad name"] }, expect: "not a valid DNS name" },
    {
      name: "wildcard not left-most",
      opts: { ...base, dnsNames: ["a.*.b"] },
      expect: "not a valid DNS name",
    },
    { name: "bad IP", opts: { ...base, ipAddresses: ["300.1.1.1"] }, expect: "not a valid IP" },
    { name: "empty subject", opts: { ...base, subject: "" }, expect: "subject" },
    { name: "subject not a DN", opts: { ...base, subject: "just words" }, expect: "subject" },
    { name: "weak RSA subject key", opts: { ...base, publicKey: weak.publicKey }, expect: "too weak" },
    { name: "zero validity", opts: { ...base, validityMs: 0 }, expect: "validity" },
    { name: "no issuer for a leaf", opts: { ...base, issuer: undefined }, expect: "needs an issuer" },
    {
      name: "root with someone else's key",
      opts: { ...base, profile: "root-ca", issuer: undefined, selfSignKey: root.keyPair },
      expect: "not the selfSignKey",
    },
    { name: "root given an issuer", opts: { ...base, profile: "root-ca" }, expect: "takes no issuer" },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const e = await assertRejects(() => issueCertificate(c.opts), InvalidInputError);
      assertStringIncludes(e.message, c.expect);
    });
  }
});

Deno.test("issueCertificate encodes what @peculiar/x509's generator does for the same fields", async (t) => {
  // An independent encoder as the reference: same serial, dates, names, key and extensions must give
  // byte-identical to-be-signed bytes (the signature differs only by ECDSA's randomness).
  const tbsOf = (c: X509Certificate) => new Uint8Array((c as unknown as { tbs: ArrayBuffer }).tbs);
  const subjectKeys = {
    "ecdsa-p256": await generateKeyPair(),
    "rsa-2048": await generateKeyPair("rsa-2048"),
  };
  const profiles: Profile[] = ["root-ca", "intermediate-ca", "istio-intermediate-ca", "server", "client"];
  for (const issuerAlg of ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "ed25519"] as KeyAlgorithm[]) {
    const rk = await generateKeyPair(issuerAlg);
    const root = await issueCertificate({
      profile: "root-ca",
      subject: "CN=ref-root,O=meshrelay",
      publicKey: rk.publicKey,
      selfSignKey: rk,
      now: NOW,
      // Past 2049, so notAfter is a GeneralizedTime.
      validityMs: 40 * 365 * DAY,
    });
    for (const profile of profiles) {
      for (const [subjectAlg, sk] of Object.entries(subjectKeys)) {
        if (profile === "root-ca" && subjectAlg !== "ecdsa-p256") continue;
        if (profile === "istio-intermediate-ca" && issuerAlg === "ed25519") continue;
        await t.step(`${profile} ${subjectAlg} under ${issuerAlg}`, async () => {
          const key = profile === "root-ca" ? rk : sk;
          const cert = await issueCertificate({
            profile,
            subject: "CN=ref, O=meshrelay",
            dnsNames: ["a.example", "*.b.example"],
            ipAddresses: ["10.0.0.1", "::1", "2001:db8::1"],
            publicKey: key.publicKey,
            ...(profile === "root-ca" ? { selfSignKey: rk } : { issuer: { certificate: root, keyPair: rk } }),
            now: NOW,
            validityMs: 30 * 365 * DAY,
          });
          const spki = await exportSpki(key.publicKey);
          const ca = profile.endsWith("-ca");
          const ext: Extension[] = ca
            ? [
              new BasicConstraintsExtension(true, profile === "root-ca" ? 1 : 0, true),
              new KeyUsagesExtension(
                KeyUsage.keyCertSign | KeyUsage.cRLSign |
                  (profile === "istio-intermediate-ca" ? KeyUsage.digitalSignature : 0),
                true,
              ),
            ]
            : [
              new BasicConstraintsExtension(false, undefined, true),
              new KeyUsagesExtension(
                KeyUsage.digitalSignature | (subjectAlg === "rsa-2048" ? KeyUsage.keyEncipherment : 0),
                true,
              ),
              new ExtendedKeyUsageExtension([profile === "server" ? EKU.serverAuth : EKU.clientAuth], false),
            ];
          ext.push(
            new SubjectAlternativeNameExtension([
              { type: "dns", value: "a.example" },
              { type: "dns", value: "*.b.example" },
              { type: "ip", value: "10.0.0.1" },
              { type: "ip", value: "::1" },
              { type: "ip", value: "2001:db8::1" },
            ], false),
            new SubjectKeyIdentifierExtension(toHex(new Uint8Array(await refKeyId(spki))), false),
            new AuthorityKeyIdentifierExtension(
              toHex(new Uint8Array(await refKeyId(new Uint8Array(root.publicKey.rawData)))),
              false,
            ),
          );
          const ref = await X509CertificateGenerator.create({
            serialNumber: cert.serialNumber,
            subject: "CN=ref, O=meshrelay",
            issuer: profile === "root-ca" ? "CN=ref, O=meshrelay" : root.subjectName,
            notBefore: cert.notBefore,
            notAfter: cert.notAfter,
            publicKey: spki,
            signingKey: rk.privateKey,
            signingAlgorithm: signatureParams(rk.algorithm),
            extensions: ext,
          });
          assertEquals(toHex(tbsOf(cert)), toHex(tbsOf(ref)));
          assert(await cert.verify({ publicKey: profile === "root-ca" ? cert : root, signatureOnly: true }));
        });
      }
    }
  }
  await t.step("an IPv6 SAN with an IPv4 tail is the literal's 16 bytes", async () => {
    const kp = await generateKeyPair();
    const cert = await issueCertificate({
      profile: "server",
      subject: "CN=s",
      ipAddresses: ["::ffff:10.0.0.1"],
      publicKey: kp.publicKey,
      issuer: (await makeCaPair()).intermediate,
      now: NOW,
      validityMs: DAY,
    });
    const san = new SubjectAlternativeNameExtension(cert.getExtension(OID.subjectAltName)!.rawData);
    assertEquals(san.names.items.map((n) => canonicalIp(n.value)), [canonicalIp("::ffff:a00:1")]);
  });
});

async function refKeyId(spki: Uint8Array<ArrayBuffer>): Promise<ArrayBuffer> {
  return await new PublicKey(spki).getKeyIdentifier("SHA-1");
}

Deno.test("issueCertificate: times X.509 cannot state are clamped or refused", async (t) => {
  const kp = await generateKeyPair();
  const root = (o: Partial<IssueOptions>) =>
    issueCertificate({
      profile: "root-ca",
      subject: "CN=r",
      publicKey: kp.publicKey,
      selfSignKey: kp,
      now: NOW,
      validityMs: DAY,
      ...o,
    });
  await t.step("a validity past the year 9999 ends at 99991231235959Z", async () => {
    const cert = await root({ validityMs: 1e16 });
    assertEquals(cert.notAfter.toISOString(), "9999-12-31T23:59:59.000Z");
  });
  await t.step("a start before the year 0000 is refused", async () => {
    const e = await assertRejects(
      () => root({ now: new Date("-000001-06-01T00:00:00Z") }),
      InvalidInputError,
    );
    assertStringIncludes(e.message, "now");
  });
});

Deno.test("keyIdOf is SHA-1 over the key bits, as @peculiar/x509 computes it", async (t) => {
  for (const alg of ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "ed25519"] as KeyAlgorithm[]) {
    await t.step(alg, async () => {
      const spki = await exportSpki((await generateKeyPair(alg)).publicKey);
      assertEquals(await keyIdOf(spki), toHex(new Uint8Array(await refKeyId(spki))));
    });
  }
  await t.step("malformed key info is refused", async () => {
    await assertRejects(() => keyIdOf(new Uint8Array([0x30, 0x00])), InvalidInputError);
  });
});
