import { InvalidInputError } from "../errors.ts";
import { assertEquals, assertRejects } from "../testing/assert.ts";
import { isEncryptedKeyPem, passphraseFor, readPemFile } from "./inputs.ts";

const ENC = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
const LEGACY =
  "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nMIIB\n-----END RSA PRIVATE KEY-----\n";
const PLAIN = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";

Deno.test("passphraseFor: env first, then the prompt, else a clear refusal", async (t) => {
  assertEquals([ENC, LEGACY, PLAIN].map(isEncryptedKeyPem), [true, true, false]);
  const cases: { name: string; pem: string; env?: string; typed?: string; want?: string }[] = [
    { name: "unencrypted needs none", pem: PLAIN, want: undefined },
    { name: "from the environment", pem: ENC, env: "e", typed: "t", want: "e" },
    { name: "from the prompt", pem: LEGACY, typed: "t", want: "t" },
    { name: "neither: refused", pem: ENC },
    { name: "empty answers: refused", pem: ENC, env: "", typed: "" },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const src = { env: () => c.env, prompt: () => Promise.resolve(c.typed) };
      const refused = c.pem !== PLAIN && !c.env && !c.typed;
      if (refused) {
        const e = await assertRejects(
          () => passphraseFor(c.pem, "--ca-key", "MESHRELAY_CA_KEY_PASSPHRASE", src),
          InvalidInputError,
        );
        assertEquals(
          e.message,
          "--ca-key is encrypted: set MESHRELAY_CA_KEY_PASSPHRASE or run on a terminal to be asked for it",
        );
      } else {
        assertEquals(await passphraseFor(c.pem, "--ca-key", "MESHRELAY_CA_KEY_PASSPHRASE", src), c.want);
      }
    });
  }
});

Deno.test("readPemFile refuses what is not PEM text, naming the flag", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-inputs-" });
  try {
    await Deno.writeFile(`${dir}/der`, Uint8Array.from([0x30, 0x82, 0xff, 0xfe, 0x00]));
    const cases: [string, RegExp][] = [
      [`${dir}/missing`, /^--ca-cert .*missing: no such file$/],
      [dir, /is a directory/],
      [`${dir}/der`, /not PEM text/],
    ];
    for (const [path, re] of cases) {
      await t.step(path.slice(dir.length) || "dir", async () => {
        const e = await assertRejects(() => readPemFile(path, "--ca-cert"), InvalidInputError);
        assertEquals(re.test(e.message), true, e.message);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
