import { Extension, type X509Certificate } from "@peculiar/x509";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { AuthenticationError } from "../errors.ts";
import { EKU, KeyUsage } from "./extensions.ts";
import { issueCertificate } from "./issue.ts";
import { generateKeyPair, type KeyPair } from "./keys.ts";
import { ExtendedKeyUsageExtension, SubjectAlternativeNameExtension } from "@peculiar/x509";
import { VerificationError, type VerificationReason, verifyChain, type VerifyOptions } from "./verify.ts";
import { DAY, makeCaPair, NOW, rawCert, type RawCertOptions } from "./test_support.ts";

interface Case {
  name: string;
  leaf: X509Certificate;
  opts: VerifyOptions;
  reason?: VerificationReason;
  chainLength?: number;
}

async function serverLeaf(
  issuer: { certificate: X509Certificate; keyPair: KeyPair },
  names = ["relay.gloo-mesh"],
) {
  const kp = await generateKeyPair();
  return await issueCertificate({
    profile: "server",
    subject: "CN=relay",
    dnsNames: names,
    publicKey: kp.publicKey,
    issuer,
    now: NOW,
    validityMs: 30 * DAY,
  });
}

Deno.test("verifyChain accepts good chains and names the reason for every failure", async (t) => {
  const { root, intermediate } = await makeCaPair({ rootAlg: "ecdsa-p384" });
  const other = await makeCaPair();
  const leaf = await serverLeaf(intermediate, ["relay.gloo-mesh", "*.gloo-mesh"]);
  const good: VerifyOptions = {
    roots: [root.certificate],
    intermediates: [intermediate.certificate],
    now: NOW,
  };
  const k = await generateKeyPair();
  const k2 = await generateKeyPair();
  const raw = (o: Omit<RawCertOptions, "publicKey" | "signer"> & Partial<RawCertOptions>) =>
    rawCert({
      publicKey: k.publicKey,
      signer: intermediate.keyPair,
      issuerCert: intermediate.certificate,
      ...o,
    });
  const rawUnderRoot = (o: Omit<RawCertOptions, "publicKey" | "signer"> & Partial<RawCertOptions>) =>
    rawCert({ publicKey: k2.publicKey, signer: root.keyPair, issuerCert: root.certificate, ...o });

  // An intermediate with pathLen 0 under which another CA sits.
  const subCa = await rawCert({
    subject: "CN=sub-ca",
    publicKey: k2.publicKey,
    signer: intermediate.keyPair,
    issuerCert: intermediate.certificate,
    ca: true,
  });
  const underSubCa = await rawCert({
    subject: "CN=deep-leaf",
    publicKey: k.publicKey,
    signer: { ...intermediate.keyPair, privateKey: k2.privateKey, publicKey: k2.publicKey },
    issuerCert: subCa,
  });
  // Intermediate without keyCertSign, and one without keyUsage at all.
  const noCertSign = await rawUnderRoot({
    subject: "CN=no-certsign",
    ca: true,
    keyUsage: KeyUsage.digitalSignature,
  });
  const noKu = await rawUnderRoot({ subject: "CN=no-ku", ca: true, keyUsage: null });
  const signerK2 = {
    ...root.keyPair,
    algorithm: "ecdsa-p256" as const,
    privateKey: k2.privateKey,
    publicKey: k2.publicKey,
  };
  const underNoCertSign = await rawCert({
    subject: "CN=l1",
    publicKey: k.publicKey,
    signer: signerK2,
    issuerCert: noCertSign,
  });
  const underNoKu = await rawCert({
    subject: "CN=l2",
    publicKey: k.publicKey,
    signer: signerK2,
    issuerCert: noKu,
  });
  // A leaf "issued" by another leaf.
  const notCa = await rawUnderRoot({ subject: "CN=not-ca", ca: false });
  const underNotCa = await rawCert({
    subject: "CN=l3",
    publicKey: k.publicKey,
    signer: signerK2,
    issuerCert: notCa,
  });
  // Same names and key ids as the intermediate, signed by another key.
  const forged = await rawCert({
    subject: "CN=relay",
    publicKey: k.publicKey,
    signer: { ...intermediate.keyPair, privateKey: other.intermediate.keyPair.privateKey },
    issuerCert: intermediate.certificate,
  });
  // EKU restriction on an intermediate.
  const clientOnlyCa = await rawUnderRoot({
    subject: "CN=client-only-ca",
    ca: true,
    pathLength: 0,
    extraExtensions: [new ExtendedKeyUsageExtension([EKU.clientAuth])],
  });
  const underClientOnly = await rawCert({
    subject: "CN=l4",
    publicKey: k.publicKey,
    signer: signerK2,
    issuerCert: clientOnlyCa,
    extraExtensions: [new ExtendedKeyUsageExtension([EKU.serverAuth])],
  });
  // Loop: X issued by Y, Y issued by X; leaf issued by X.
  const loopX = await rawCert({
    subject: "CN=loop-x",
    issuerName: "CN=loop-y",
    publicKey: k.publicKey,
    signer: signerK2,
    ca: true,
  });
  const loopY = await rawCert({
    subject: "CN=loop-y",
    issuerName: "CN=loop-x",
    publicKey: k2.publicKey,
    signer: { ...signerK2, privateKey: k.privateKey, publicKey: k.publicKey },
    ca: true,
  });
  const underLoop = await rawCert({
    subject: "CN=loop-leaf",
    publicKey: k2.publicKey,
    signer: { ...signerK2, privateKey: k.privateKey, publicKey: k.publicKey },
    issuerCert: loopX,
  });
  // Too long: root → 8 intermediates → leaf (10 certificates).
  const longChain: X509Certificate[] = [];
  let parent = { certificate: root.certificate, keyPair: root.keyPair };
  for (let i = 0; i < 8; i++) {
    const kp = await generateKeyPair();
    const c = await rawCert({
      subject: `CN=long-${i}`,
      publicKey: kp.publicKey,
      signer: parent.keyPair,
      issuerCert: parent.certificate,
      ca: true,
    });
    longChain.push(c);
    parent = { certificate: c, keyPair: kp };
  }
  const longLeaf = await rawCert({
    subject: "CN=long-leaf",
    publicKey: k.publicKey,
    signer: parent.keyPair,
    issuerCert: parent.certificate,
  });
  // Weak algorithms.
  const weakRsa = await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 1024,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  ) as CryptoKeyPair;
  const weakKeyLeaf = await raw({ subject: "CN=weak", publicKey: weakRsa.publicKey });
  const sha1Leaf = await raw({
    subject: "CN=sha1",
    signingAlgorithm: { name: "ECDSA", hash: "SHA-1" } as EcdsaParams,
  });
  // Unknown critical extension; malformed basicConstraints.
  const critLeaf = await raw({
    subject: "CN=crit",
    extraExtensions: [new Extension("1.2.3.4.5", true, new Uint8Array([5, 0]))],
  });
  const malformedLeaf = await raw({
    subject: "CN=malformed",
    noBasicConstraints: true,
    extraExtensions: [new Extension("2.5.29.19", true, new Uint8Array([0x04, 0x01, 0xff]))],
  });
  // Leaf with keyUsage that does not allow TLS; leaf with IP SAN.
  const kuLeaf = await raw({ subject: "CN=ku", keyUsage: KeyUsage.cRLSign });
  const ipLeaf = await raw({
    subject: "CN=ip",
    extraExtensions: [
      new SubjectAlternativeNameExtension([{ type: "ip", value: "10.1.2.3" }, { type: "ip", value: "::1" }]),
    ],
  });
  // A root-level trust anchor without keyUsage (like the prerequisites script's root), and a v1-style anchor.
  const rk = await generateKeyPair();
  const rootNoKu = await rawCert({
    subject: "CN=legacy-root",
    publicKey: rk.publicKey,
    signer: rk,
    ca: true,
    keyUsage: null,
  });
  const underRootNoKu = await rawCert({
    subject: "CN=l5",
    publicKey: k.publicKey,
    signer: rk,
    issuerCert: rootNoKu,
  });
  const rootNoExt = await (async () => {
    const { X509CertificateGenerator } = await import("@peculiar/x509");
    return await X509CertificateGenerator.create({
      subject: "CN=v1-root",
      issuer: "CN=v1-root",
      notBefore: new Date(NOW.getTime() - DAY),
      notAfter: new Date(NOW.getTime() + DAY),
      publicKey: rk.publicKey,
      signingKey: rk.privateKey,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" } as EcdsaParams,
    });
  })();
  const underRootNoExt = await rawCert({
    subject: "CN=l6",
    publicKey: k.publicKey,
    signer: rk,
    issuerCert: rootNoExt,
  });
  // Rotation: two intermediates with the same name; the first one offered is not the real issuer.
  const rotatedKey = await generateKeyPair();
  const rotated = await rawCert({
    subject: intermediate.certificate.subject.replaceAll(", ", ","),
    publicKey: rotatedKey.publicKey,
    signer: root.keyPair,
    issuerCert: root.certificate,
    ca: true,
    pathLength: 0,
  });
  const leafNoAki = await raw({ subject: "CN=no-aki", noKeyIds: true });

  const cases: Case[] = [
    {
      name: "good chain",
      leaf,
      opts: { ...good, purpose: "serverAuth", dnsName: "relay.gloo-mesh" },
      chainLength: 3,
    },
    {
      name: "wildcard matches one label",
      leaf,
      opts: { ...good, dnsName: "enterprise-networking.GLOO-MESH." },
      chainLength: 3,
    },
    {
      name: "wildcard does not match two labels",
      leaf,
      opts: { ...good, dnsName: "a.b.gloo-mesh" },
      reason: "hostname",
    },
    {
      name: "wildcard does not match the bare domain",
      leaf,
      opts: { ...good, dnsName: "gloo-mesh" },
      reason: "hostname",
    },
    { name: "hostname mismatch", leaf, opts: { ...good, dnsName: "evil.example" }, reason: "hostname" },
    { name: "IP SAN matches", leaf: ipLeaf, opts: { ...good, dnsName: "0:0::1" }, chainLength: 3 },
    { name: "IP SAN mismatch", leaf: ipLeaf, opts: { ...good, dnsName: "10.1.2.4" }, reason: "hostname" },
    { name: "wrong purpose", leaf, opts: { ...good, purpose: "clientAuth" }, reason: "eku" },
    {
      name: "intermediate restricts purpose",
      leaf: underClientOnly,
      opts: { ...good, intermediates: [clientOnlyCa], purpose: "serverAuth" },
      reason: "eku",
    },
    {
      name: "expired leaf",
      leaf,
      opts: { ...good, now: new Date(NOW.getTime() + 31 * DAY) },
      reason: "expired",
    },
    {
      name: "expired intermediate",
      leaf: await raw({ subject: "CN=long-lived", notAfter: new Date(NOW.getTime() + 900 * DAY) }),
      opts: { ...good, now: new Date(NOW.getTime() + 400 * DAY) },
      reason: "expired",
    },
    {
      name: "not yet valid",
      leaf,
      opts: { ...good, now: new Date(NOW.getTime() - DAY) },
      reason: "not_yet_valid",
    },
    {
      name: "unknown issuer",
      leaf,
      opts: { roots: [other.root.certificate], intermediates: [], now: NOW },
      reason: "unknown_issuer",
    },
    {
      name: "intermediate missing",
      leaf,
      opts: { roots: [root.certificate], now: NOW },
      reason: "unknown_issuer",
    },
    {
      name: "no roots",
      leaf,
      opts: { roots: [], intermediates: [intermediate.certificate], now: NOW },
      reason: "unknown_issuer",
    },
    { name: "forged signature", leaf: forged, opts: good, reason: "bad_signature" },
    {
      name: "path length exceeded",
      leaf: underSubCa,
      opts: { ...good, intermediates: [intermediate.certificate, subCa] },
      reason: "path_length",
    },
    {
      name: "issuer is not a CA",
      leaf: underNotCa,
      opts: { ...good, intermediates: [notCa] },
      reason: "not_a_ca",
    },
    {
      name: "intermediate without keyCertSign",
      leaf: underNoCertSign,
      opts: { ...good, intermediates: [noCertSign] },
      reason: "key_usage",
    },
    {
      name: "intermediate without keyUsage",
      leaf: underNoKu,
      opts: { ...good, intermediates: [noKu] },
      reason: "key_usage",
    },
    {
      name: "leaf keyUsage without TLS use",
      leaf: kuLeaf,
      opts: { ...good, purpose: "serverAuth" },
      reason: "key_usage",
    },
    { name: "loop", leaf: underLoop, opts: { ...good, intermediates: [loopX, loopY] }, reason: "loop" },
    {
      name: "too long",
      leaf: longLeaf,
      opts: { roots: [root.certificate], intermediates: longChain, now: NOW },
      reason: "chain_too_long",
    },
    { name: "weak RSA key", leaf: weakKeyLeaf, opts: good, reason: "weak_algorithm" },
    { name: "SHA-1 signature", leaf: sha1Leaf, opts: good, reason: "weak_algorithm" },
    {
      name: "unknown critical extension",
      leaf: critLeaf,
      opts: good,
      reason: "unsupported_critical_extension",
    },
    { name: "malformed extension", leaf: malformedLeaf, opts: good, reason: "malformed" },
    {
      name: "anchor without keyUsage is accepted",
      leaf: underRootNoKu,
      opts: { roots: [rootNoKu], now: NOW },
      chainLength: 2,
    },
    {
      name: "anchor without extensions is accepted",
      leaf: underRootNoExt,
      opts: { roots: [rootNoExt], now: NOW },
      chainLength: 2,
    },
    {
      name: "a trusted root verifies alone",
      leaf: root.certificate,
      opts: { roots: [root.certificate], now: NOW },
      chainLength: 1,
    },
    { name: "self-signed but untrusted", leaf: other.root.certificate, opts: good, reason: "unknown_issuer" },
    {
      name: "same-named intermediate from a rotation is skipped",
      leaf,
      opts: { ...good, intermediates: [rotated, intermediate.certificate] },
      chainLength: 3,
    },
    {
      name: "without AKI, a same-named wrong intermediate is tried and the right one found",
      leaf: leafNoAki,
      opts: { ...good, intermediates: [rotated, intermediate.certificate] },
      chainLength: 3,
    },
    {
      name: "without AKI and only the wrong intermediate: bad signature",
      leaf: leafNoAki,
      opts: { ...good, intermediates: [rotated] },
      reason: "bad_signature",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      if (c.reason) {
        const e = await assertRejects(
          () => verifyChain(c.leaf, c.opts),
          VerificationError,
        ) as VerificationError;
        assertEquals(e.reason, c.reason, e.message);
        assert(e instanceof AuthenticationError);
        assert(!e.message.includes("\n"));
      } else {
        const r = await verifyChain(c.leaf, c.opts);
        assertEquals(r.chain.length, c.chainLength);
        assertEquals(r.chain[0], c.leaf);
        assert(c.opts.roots.includes(r.chain[r.chain.length - 1]));
      }
    });
  }
});
