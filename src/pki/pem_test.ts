import { assert, assertEquals, assertStringIncludes, assertThrows } from "../testing/assert.ts";
import { InvalidInputError } from "../errors.ts";
import { certificatesToPem, certificateToPem, findPemBlocks, parseCertificates } from "./pem.ts";
import { makeCaPair } from "./test_support.ts";

Deno.test("parseCertificates round-trips bundles in order", async (t) => {
  const { root, intermediate } = await makeCaPair();
  await t.step("one certificate", () => {
    const pem = certificateToPem(root.certificate);
    assert(pem.startsWith("-----BEGIN CERTIFICATE-----\n") && pem.endsWith("-----END CERTIFICATE-----\n"));
    assert(pem.split("\n").every((l) => l.length <= 64));
    const [back] = parseCertificates(pem);
    assertEquals(new Uint8Array(back.rawData), new Uint8Array(root.certificate.rawData));
  });
  await t.step("bundle keeps order, ignores text around blocks and CRLF", () => {
    const pem = "Bag Attributes\n" +
      certificatesToPem([intermediate.certificate, root.certificate]).replaceAll("\n", "\r\n");
    const certs = parseCertificates(pem);
    assertEquals(certs.map((c) => c.subject), [intermediate.certificate.subject, root.certificate.subject]);
  });
  await t.step("legacy encrypted key headers are skipped in the body", () => {
    const [b] = findPemBlocks(
      "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nQUJD\n-----END RSA PRIVATE KEY-----\n",
    );
    assertEquals(b.body, "QUJD");
  });
});

Deno.test("parseCertificates refuses garbage with one line naming the input", async (t) => {
  const cases: { name: string; pem: string; expect: string }[] = [
    { name: "empty", pem: "", expect: "no PEM certificate found" },
    { name: "text", pem: "not a certificate", expect: "no PEM certificate found" },
    {
      name: "private key instead",
      pem: "-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n",
      expect: "contains a private key",
    },
    {
      name: "CSR instead",
      pem: "-----BEGIN CERTIFICATE REQUEST-----\nQUJD\n-----END CERTIFICATE REQUEST-----\n",
      expect: "certificate request",
    },
    {
      name: "bad base64",
      pem: "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
      expect: "base64",
    },
    {
      name: "base64 of garbage DER",
      pem: "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
      expect: "not a valid X.509 certificate",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const err = assertThrows(() => parseCertificates(c.pem, "--ca-cert"), InvalidInputError);
      assert(err.message.startsWith("--ca-cert"), err.message);
      assertStringIncludes(err.message, c.expect);
      assert(!err.message.includes("\n"));
    });
  }
  await t.step("the second certificate of a bundle is named", async () => {
    const { root } = await makeCaPair();
    const pem = certificateToPem(root.certificate) +
      "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
    const err = assertThrows(() => parseCertificates(pem, "ca.crt"), InvalidInputError);
    assertStringIncludes(err.message, "ca.crt (certificate 2)");
  });
});
