import { assert, assertEquals, assertStringIncludes } from "../testing/assert.ts";
import {
  daysLeft,
  describeCertificate,
  lifetimeFraction,
  lifetimeStatus,
  renderCertificateText,
  RENEW_AT_FRACTION,
} from "./describe.ts";
import { issueCertificate } from "./issue.ts";
import { generateKeyPair } from "./keys.ts";
import { DAY, makeCaPair, NOW, opensslOk, withTempDir } from "./test_support.ts";
import { certificateToPem } from "./pem.ts";

Deno.test("describeCertificate reports what openssl reports", async (t) => {
  const { root, intermediate } = await makeCaPair({ rootAlg: "ecdsa-p384" });
  const kp = await generateKeyPair("rsa-2048");
  const leaf = await issueCertificate({
    profile: "server",
    subject: "CN=relay,O=meshrelay",
    dnsNames: ["relay.gloo-mesh"],
    ipAddresses: ["127.0.0.1"],
    publicKey: kp.publicKey,
    issuer: intermediate,
    now: NOW,
    validityMs: 90 * DAY,
  });
  await t.step("leaf fields", async () => {
    const info = await describeCertificate(leaf);
    assertEquals(info.subject, "CN=relay, O=meshrelay");
    assertEquals(info.issuer, intermediate.certificate.subject);
    assertEquals(info.publicKey, { algorithm: "RSA", size: 2048, keyAlgorithm: "rsa-2048" });
    assertEquals(info.signatureAlgorithm, "ECDSA-SHA256");
    assertEquals(info.dnsNames, ["relay.gloo-mesh"]);
    assertEquals(info.ipAddresses, ["127.0.0.1"]);
    assertEquals(info.isCA, false);
    assertEquals(info.keyUsage, ["digitalSignature", "keyEncipherment"]);
    assertEquals(info.extKeyUsage, ["serverAuth"]);
    assertEquals(info.notBefore, new Date(NOW.getTime() - 5 * 60 * 1000).toISOString());
    assert(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/.test(info.fingerprintSha256));
    // JSON-friendly: survives a round trip unchanged.
    assertEquals(JSON.parse(JSON.stringify(info)), info);
  });
  await t.step("matches openssl's serial, fingerprint, SKI and AKI", async () => {
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/c.pem`, certificateToPem(leaf));
      const out = await opensslOk([
        "x509",
        "-in",
        "c.pem",
        "-noout",
        "-serial",
        "-fingerprint",
        "-sha256",
        "-text",
      ], {
        cwd: dir,
      });
      const info = await describeCertificate(leaf);
      assertStringIncludes(out, `serial=${info.serialNumber.toUpperCase()}`);
      assertStringIncludes(out, `Fingerprint=${info.fingerprintSha256}`);
      assertStringIncludes(out, info.subjectKeyId!);
      assertStringIncludes(out, info.authorityKeyId!);
    });
  });
  await t.step("root fields and text rendering", async () => {
    const info = await describeCertificate(root.certificate);
    assertEquals(info.selfIssued, true);
    assertEquals(info.isCA, true);
    assertEquals(info.pathLength, 1);
    assertEquals(info.publicKey.curve, "P-384");
    assertEquals(info.keyUsage, ["keyCertSign", "cRLSign"]);
    const text = renderCertificateText(info);
    for (
      const part of [
        "Certificate:",
        "Signature Algorithm: ECDSA-SHA384",
        "Curve: P-384",
        "X509v3 Key Usage: critical",
        "Certificate Sign, CRL Sign",
        "CA:TRUE, MaxPathLen:1",
        `Subject: ${root.certificate.subject}`,
        "SHA256 Fingerprint:",
      ]
    ) assertStringIncludes(text, part);
  });
});

Deno.test("lifetime helpers for certs check", async (t) => {
  const kp = await generateKeyPair();
  const cert = await issueCertificate({
    profile: "root-ca",
    subject: "CN=r",
    publicKey: kp.publicKey,
    selfSignKey: kp,
    now: NOW,
    validityMs: 30 * DAY,
  });
  const start = cert.notBefore.getTime();
  const span = cert.notAfter.getTime() - start;
  const at = (f: number) => new Date(start + f * span);
  const cases: { name: string; now: Date; fraction: number; status: string }[] = [
    { name: "before", now: new Date(start - 1000), fraction: -1000 / span, status: "not_yet_valid" },
    { name: "start", now: at(0), fraction: 0, status: "ok" },
    { name: "half", now: at(0.5), fraction: 0.5, status: "ok" },
    { name: "two thirds", now: at(RENEW_AT_FRACTION), fraction: RENEW_AT_FRACTION, status: "renew" },
    { name: "end", now: at(1), fraction: 1, status: "renew" },
    {
      name: "after",
      now: new Date(cert.notAfter.getTime() + 1000),
      fraction: 1 + 1000 / span,
      status: "expired",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      assert(Math.abs(lifetimeFraction(cert, c.now) - c.fraction) < 1e-9);
      assertEquals(lifetimeStatus(cert, c.now), c.status);
    });
  }
  await t.step("daysLeft", () => {
    assertEquals(daysLeft(cert, NOW), 30);
    assertEquals(daysLeft(cert, new Date(NOW.getTime() + 29.5 * DAY)), 0);
    assertEquals(daysLeft(cert, new Date(NOW.getTime() + 30.5 * DAY)), -1);
  });
});
