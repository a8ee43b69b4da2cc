import { assert, assertEquals, assertRejects, assertStringIncludes } from "../testing/assert.ts";
import { InvalidInputError } from "../errors.ts";
import { KeyUsage } from "./extensions.ts";
import { issueCertificate } from "./issue.ts";
import { keyMatchesCertificate, loadIssuer } from "./issuer.ts";
import { generateKeyPair, privateKeyToPem } from "./keys.ts";
import { certificatesToPem, certificateToPem } from "./pem.ts";
import { DAY, makeCaPair, NOW, opensslOk, rawCert, withTempDir } from "./test_support.ts";

Deno.test("loadIssuer accepts a CA with its key and keeps the chain above it", async (t) => {
  const { root, intermediate } = await makeCaPair({ intAlg: "ed25519" });
  await t.step("intermediate + root bundle", async () => {
    const iss = await loadIssuer(
      certificatesToPem([intermediate.certificate, root.certificate]),
      await privateKeyToPem(intermediate.keyPair),
      { now: NOW, what: "--signing" },
    );
    assertEquals(iss.certificate.subject, intermediate.certificate.subject);
    assertEquals(iss.chain?.map((c) => c.subject), [root.certificate.subject]);
    assertEquals(iss.keyPair.algorithm, "ed25519");
  });
  await t.step("certWhat/keyWhat name the flags", async () => {
    const leafKeyPem = await privateKeyToPem(await generateKeyPair());
    const e1 = await assertRejects(
      () =>
        loadIssuer(certificateToPem(root.certificate), certificateToPem(root.certificate), {
          now: NOW,
          certWhat: "--ca-cert",
          keyWhat: "--ca-key",
        }),
      InvalidInputError,
    );
    assert(e1.message.startsWith("--ca-key: contains a certificate"), e1.message);
    const e2 = await assertRejects(
      () =>
        loadIssuer(certificateToPem(root.certificate), leafKeyPem, {
          now: NOW,
          what: "--ca",
          certWhat: "--ca-cert",
          keyWhat: "--ca-key",
        }),
      InvalidInputError,
    );
    assertEquals(e2.message, "--ca-key: the key does not belong to the certificate in --ca-cert");
  });
  await t.step("encrypted key with passphrase", async () => {
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/k.pem`, await privateKeyToPem(root.keyPair));
      await opensslOk([
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-in",
        "k.pem",
        "-passout",
        "pass:pw",
        "-out",
        "e.pem",
      ], {
        cwd: dir,
      });
      const iss = await loadIssuer(
        certificateToPem(root.certificate),
        await Deno.readTextFile(`${dir}/e.pem`),
        {
          now: NOW,
          passphrase: "pw",
        },
      );
      assertEquals(iss.keyPair.algorithm, "ecdsa-p256");
    });
  });
});

Deno.test("loadIssuer refuses what cannot or must not sign", async (t) => {
  const { root, intermediate } = await makeCaPair();
  const other = await generateKeyPair();
  const leafKey = await generateKeyPair();
  const leaf = await issueCertificate({
    profile: "client",
    subject: "CN=c",
    dnsNames: ["c"],
    publicKey: leafKey.publicKey,
    issuer: intermediate,
    now: NOW,
    validityMs: DAY,
  });
  const noCertSign = await rawCert({
    subject: "CN=odd",
    publicKey: leafKey.publicKey,
    signer: root.keyPair,
    issuerCert: root.certificate,
    ca: true,
    keyUsage: KeyUsage.digitalSignature,
  });
  const rootPem = certificateToPem(root.certificate);
  const rootKey = await privateKeyToPem(root.keyPair);
  const cases: { name: string; cert: string; key: string; now?: Date; expect: string }[] = [
    {
      name: "leaf used as issuer",
      cert: certificateToPem(leaf),
      key: await privateKeyToPem(leafKey),
      expect: "not a CA",
    },
    {
      name: "CA without keyCertSign",
      cert: certificateToPem(noCertSign),
      key: await privateKeyToPem(leafKey),
      expect: "keyCertSign",
    },
    {
      name: "key does not match",
      cert: rootPem,
      key: await privateKeyToPem(other),
      expect: "does not belong",
    },
    { name: "key where the certificate goes", cert: rootKey, key: rootKey, expect: "contains a private key" },
    { name: "certificate where the key goes", cert: rootPem, key: rootPem, expect: "contains a certificate" },
    {
      name: "expired",
      cert: rootPem,
      key: rootKey,
      now: new Date(NOW.getTime() + 4000 * DAY),
      expect: "expired",
    },
    {
      name: "not yet valid",
      cert: rootPem,
      key: rootKey,
      now: new Date(NOW.getTime() - DAY),
      expect: "not valid before",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const e = await assertRejects(
        () => loadIssuer(c.cert, c.key, { now: c.now ?? NOW, what: "--ca" }),
        InvalidInputError,
      );
      assert(e.message.startsWith("--ca"), e.message);
      assertStringIncludes(e.message, c.expect);
    });
  }
});

Deno.test("keyMatchesCertificate proves possession", async (t) => {
  const { root, intermediate } = await makeCaPair({ rootAlg: "rsa-2048" });
  await t.step("own key", async () => assert(await keyMatchesCertificate(root.keyPair, root.certificate)));
  await t.step("other key, same type", async () => {
    assertEquals(await keyMatchesCertificate(intermediate.keyPair, root.certificate), false);
  });
  await t.step("other key type", async () => {
    assertEquals(await keyMatchesCertificate(root.keyPair, intermediate.certificate), false);
  });
});
