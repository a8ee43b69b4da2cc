import { assert, assertEquals, assertRejects, assertStringIncludes } from "../testing/assert.ts";
import { InvalidInputError } from "../errors.ts";
import {
  classifyPublicKey,
  exportSpki,
  generateKeyPair,
  importPrivateKey,
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  privateKeyToPem,
  signatureParams,
} from "./keys.ts";
import { opensslOk, withTempDir } from "./test_support.ts";

async function signsAndVerifies(
  kp: { algorithm: KeyAlgorithm; privateKey: CryptoKey; publicKey: CryptoKey },
) {
  const data = new TextEncoder().encode("meshrelay");
  const params = signatureParams(kp.algorithm);
  const sig = await crypto.subtle.sign(params, kp.privateKey, data);
  return await crypto.subtle.verify(params, kp.publicKey, sig, data);
}

Deno.test("generateKeyPair makes every algorithm, exportable as PKCS#8 and re-importable", async (t) => {
  for (const alg of KEY_ALGORITHMS.filter((a) => a !== "rsa-4096" && a !== "rsa-3072")) {
    await t.step(alg, async () => {
      const kp = await generateKeyPair(alg);
      assertEquals(kp.algorithm, alg);
      assert(kp.privateKey.extractable);
      const pem = await privateKeyToPem(kp);
      assert(pem.startsWith("-----BEGIN PRIVATE KEY-----\n"));
      assert(pem.endsWith("-----END PRIVATE KEY-----\n"));
      const back = await importPrivateKey(pem);
      assertEquals(back.algorithm, alg);
      assertEquals(await exportSpki(back.publicKey), await exportSpki(kp.publicKey));
      assert(await signsAndVerifies(back));
    });
  }
  await t.step("default is ecdsa-p256", async () => {
    assertEquals((await generateKeyPair()).algorithm, "ecdsa-p256");
  });
  await t.step("unknown algorithm is refused", async () => {
    await assertRejects(() => generateKeyPair("rsa-1024" as KeyAlgorithm), InvalidInputError);
  });
});

Deno.test("importPrivateKey accepts every PEM form openssl writes", async (t) => {
  await withTempDir(async (dir) => {
    const o = (args: string[]) => opensslOk(args, { cwd: dir });
    await o(["genrsa", "-traditional", "-out", "rsa_pkcs1.pem", "2048"]);
    await o(["pkcs8", "-topk8", "-nocrypt", "-in", "rsa_pkcs1.pem", "-out", "rsa_pkcs8.pem"]);
    await o(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec_sec1.pem"]);
    await o(["ecparam", "-name", "secp384r1", "-genkey", "-out", "ec384_with_params.pem"]);
    await o([
      "pkcs8",
      "-topk8",
      "-v2",
      "aes-256-cbc",
      "-in",
      "ec_sec1.pem",
      "-passout",
      "pass:s3cret",
      "-out",
      "ec_enc.pem",
    ]);
    await o([
      "rsa",
      "-in",
      "rsa_pkcs1.pem",
      "-traditional",
      "-aes256",
      "-passout",
      "pass:s3cret",
      "-out",
      "rsa_legacy.pem",
    ]);
    await o(["ec", "-in", "ec_sec1.pem", "-aes128", "-passout", "pass:s3cret", "-out", "ec_legacy.pem"]);
    await o(["genpkey", "-algorithm", "ed25519", "-out", "ed25519.pem"]);
    await o(["genrsa", "-out", "rsa3072.pem", "3072"]);
    const read = (f: string) => Deno.readTextFileSync(`${dir}/${f}`);
    const cases: { name: string; file: string; passphrase?: string; alg: KeyAlgorithm; label: string }[] = [
      { name: "PKCS#1 RSA", file: "rsa_pkcs1.pem", alg: "rsa-2048", label: "RSA PRIVATE KEY" },
      { name: "PKCS#8 RSA", file: "rsa_pkcs8.pem", alg: "rsa-2048", label: "PRIVATE KEY" },
      { name: "RSA 3072", file: "rsa3072.pem", alg: "rsa-3072", label: "PRIVATE KEY" },
      { name: "SEC1 P-256", file: "ec_sec1.pem", alg: "ecdsa-p256", label: "EC PRIVATE KEY" },
      {
        name: "SEC1 P-384 after EC PARAMETERS",
        file: "ec384_with_params.pem",
        alg: "ecdsa-p384",
        label: "EC PARAMETERS",
      },
      {
        name: "encrypted PKCS#8",
        file: "ec_enc.pem",
        passphrase: "s3cret",
        alg: "ecdsa-p256",
        label: "ENCRYPTED PRIVATE KEY",
      },
      {
        name: "legacy encrypted RSA",
        file: "rsa_legacy.pem",
        passphrase: "s3cret",
        alg: "rsa-2048",
        label: "Proc-Type",
      },
      {
        name: "legacy encrypted EC",
        file: "ec_legacy.pem",
        passphrase: "s3cret",
        alg: "ecdsa-p256",
        label: "Proc-Type",
      },
      { name: "Ed25519 PKCS#8", file: "ed25519.pem", alg: "ed25519", label: "PRIVATE KEY" },
    ];
    for (const c of cases) {
      await t.step(c.name, async () => {
        const pem = read(c.file);
        assertStringIncludes(pem, c.label);
        const kp = await importPrivateKey(pem, { passphrase: c.passphrase, what: "--ca-key" });
        assertEquals(kp.algorithm, c.alg);
        assert(kp.privateKey.extractable);
        assert(await signsAndVerifies(kp));
        // The derived public key is the one openssl derives.
        const pub = await opensslOk(
          [
            "pkey",
            "-in",
            c.file,
            "-pubout",
            "-outform",
            "DER",
            "-passin",
            `pass:${c.passphrase ?? ""}`,
            "-out",
            "pub.der",
          ],
          { cwd: dir },
        );
        void pub;
        assertEquals(await exportSpki(kp.publicKey), new Uint8Array(Deno.readFileSync(`${dir}/pub.der`)));
      });
    }
    await t.step("a key and certificate in one bundle: the key is used", async () => {
      await o(["req", "-x509", "-key", "ec_sec1.pem", "-subj", "/CN=x", "-days", "1", "-out", "c.pem"]);
      const kp = await importPrivateKey(read("c.pem") + read("ec_sec1.pem"));
      assertEquals(kp.algorithm, "ecdsa-p256");
    });
  });
});

Deno.test("importPrivateKey refuses bad input with one clear line naming the input, never its content", async (t) => {
  await withTempDir(async (dir) => {
    const o = (args: string[]) => opensslOk(args, { cwd: dir });
    await o(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.pem"]);
    await o([
      "pkcs8",
      "-topk8",
      "-v2",
      "aes-256-cbc",
      "-in",
      "ec.pem",
      "-passout",
      "pass:right",
      "-out",
      "enc.pem",
    ]);
    await o(["ec", "-in", "ec.pem", "-aes128", "-passout", "pass:right", "-out", "legacy.pem"]);
    await o([
      "ecparam",
      "-name",
      "prime256v1",
      "-genkey",
      "-noout",
      "-param_enc",
      "explicit",
      "-out",
      "explicit.pem",
    ]);
    await o(["pkcs8", "-topk8", "-nocrypt", "-in", "explicit.pem", "-out", "explicit8.pem"]);
    await o(["ecparam", "-name", "secp256k1", "-genkey", "-noout", "-out", "k1.pem"]);
    await o(["ecparam", "-name", "secp521r1", "-genkey", "-noout", "-out", "p521.pem"]);
    await o(["genrsa", "-out", "rsa1024.pem", "1024"]);
    await o(["dsaparam", "-out", "dsaparam.pem", "2048"]);
    await o(["gendsa", "-out", "dsa.pem", "dsaparam.pem"]);
    await o(["req", "-x509", "-key", "ec.pem", "-subj", "/CN=x", "-days", "1", "-out", "cert.pem"]);
    await o([
      "pkcs8",
      "-topk8",
      "-v1",
      "PBE-SHA1-3DES",
      "-in",
      "ec.pem",
      "-passout",
      "pass:right",
      "-out",
      "pbes1.pem",
    ]);
    const read = (f: string) => Deno.readTextFileSync(`${dir}/${f}`);
    const cases: { name: string; pem: () => string; passphrase?: string; expect: string }[] = [
      { name: "empty", pem: () => "", expect: "not a PEM private key" },
      { name: "garbage text", pem: () => "hello world", expect: "not a PEM private key" },
      {
        name: "garbage PEM body",
        pem: () => "-----BEGIN PRIVATE KEY-----\nAAAAbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        expect: "cannot decode",
      },
      {
        name: "certificate where a key is expected",
        pem: () => read("cert.pem"),
        expect: "contains a certificate",
      },
      { name: "encrypted PKCS#8 without passphrase", pem: () => read("enc.pem"), expect: "no passphrase" },
      {
        name: "encrypted PKCS#8 wrong passphrase",
        pem: () => read("enc.pem"),
        passphrase: "wrong",
        expect: "wrong passphrase",
      },
      { name: "legacy encrypted without passphrase", pem: () => read("legacy.pem"), expect: "no passphrase" },
      {
        name: "legacy encrypted wrong passphrase",
        pem: () => read("legacy.pem"),
        passphrase: "nope",
        expect: "wrong passphrase",
      },
      { name: "EC explicit parameters", pem: () => read("explicit.pem"), expect: "explicit" },
      { name: "EC explicit parameters in PKCS#8", pem: () => read("explicit8.pem"), expect: "explicit" },
      { name: "secp256k1", pem: () => read("k1.pem"), expect: "secp256k1 is not supported" },
      { name: "P-521", pem: () => read("p521.pem"), expect: "secp521r1 is not supported" },
      { name: "RSA 1024", pem: () => read("rsa1024.pem"), expect: "too weak" },
      { name: "DSA", pem: () => read("dsa.pem"), expect: "dsa keys are not supported" },
      {
        name: "PBES1 3DES encryption",
        pem: () => read("pbes1.pem"),
        passphrase: "right",
        expect: "unsupported encryption",
      },
      {
        name: "OpenSSH key",
        pem: () => "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n-----END OPENSSH PRIVATE KEY-----\n",
        expect: "OpenSSH",
      },
    ];
    for (const c of cases) {
      await t.step(c.name, async () => {
        const pem = c.pem();
        const err = await assertRejects(
          () => importPrivateKey(pem, { passphrase: c.passphrase, what: "--ca-key" }),
          InvalidInputError,
        );
        assert(err.message.startsWith("--ca-key: "), err.message);
        assertStringIncludes(err.message, c.expect);
        assert(!err.message.includes("\n"), "one line");
        assert(!err.message.includes("-----"), "no PEM in the message");
        const body = pem.split("\n").find((l) => l.length > 20 && !l.startsWith("-----"));
        if (body) assert(!err.message.includes(body.slice(0, 16)), "no key material in the message");
      });
    }
    await t.step(
      "every wrong passphrase of a legacy key says so, also one whose padding happens to check",
      async () => {
        // About one wrong passphrase in 256 decrypts to garbage with valid padding: 1,000 of them hit that
        // a few times, so the answer must not depend on which check failed.
        const pem = read("legacy.pem");
        const seen = new Set<string>();
        for (let i = 0; i < 1000; i++) {
          const err = await assertRejects(
            () => importPrivateKey(pem, { passphrase: `wrong-${i}`, what: "--ca-key" }),
            InvalidInputError,
          );
          seen.add(err.message);
          assertStringIncludes(err.message, "wrong passphrase", `passphrase wrong-${i}`);
        }
        console.log(`legacy key, 1,000 wrong passphrases: ${[...seen].join(" | ")}`);
      },
    );
  });
});

Deno.test("classifyPublicKey accepts our key types and names the problem with others", async (t) => {
  for (const alg of ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "ed25519"] as const) {
    await t.step(alg, async () => {
      const kp = await generateKeyPair(alg);
      assertEquals(classifyPublicKey(await exportSpki(kp.publicKey)), { algorithm: alg });
    });
  }
  await t.step("P-521", async () => {
    const kp = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-521" }, true, [
      "sign",
      "verify",
    ]);
    const r = classifyPublicKey(await exportSpki(kp.publicKey));
    assert("problem" in r && r.problem.includes("not supported"));
  });
  await t.step("garbage", () => {
    const r = classifyPublicKey(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]));
    assert("problem" in r);
  });
});
