import { assert, assertEquals } from "../testing/assert.ts";
import {
  base64Of,
  goYamlSortedKeys,
  needsQuotes,
  type SecretManifest,
  secretsToJson,
  secretsToYaml,
  secretToYaml,
} from "./manifest.ts";

const enc = new TextEncoder();
const bytesOfBase64 = (b64: string) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));

/** kubectl, when installed; the comparisons below say so when it is not. */
async function kubectlPath(): Promise<string | undefined> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      const p = `${dir}/kubectl`;
      if ((await Deno.stat(p)).isFile) return p;
    } catch { /* not here */ }
  }
  return undefined;
}

/** What `kubectl create secret generic` prints for `secret`'s keys written as files. */
async function kubectlYaml(
  kubectl: string,
  secret: SecretManifest,
  format: "yaml" | "json",
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-kubectl-" });
  try {
    const args = [
      "create",
      "secret",
      "generic",
      secret.name,
      "--type=Opaque",
      "--dry-run=client",
      "-o",
      format,
    ];
    if (secret.namespace !== undefined) args.push("-n", secret.namespace);
    let i = 0;
    for (const [k, v] of Object.entries(secret.data)) {
      const f = `${dir}/f${i++}`;
      await Deno.writeFile(f, v);
      args.push(`--from-file=${k}=${f}`);
    }
    const out = await new Deno.Command(kubectl, {
      args,
      env: { KUBECONFIG: `${dir}/none` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    return new TextDecoder().decode(out.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const PEM = enc.encode("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
const CASES: { name: string; secret: SecretManifest }[] = [
  {
    name: "relay server secret",
    secret: {
      name: "relay-server-tls-secret",
      namespace: "gloo-mesh",
      data: { "tls.key": PEM, "tls.crt": PEM, "ca.crt": PEM },
    },
  },
  {
    name: "istio cacerts keys",
    secret: {
      name: "cacerts",
      namespace: "istio-system",
      data: { "root-cert.pem": PEM, "cert-chain.pem": PEM, "ca-key.pem": PEM, "ca-cert.pem": PEM },
    },
  },
  {
    name: "no namespace",
    secret: { name: "relay-identity-token-secret", data: { token: enc.encode("abc") } },
  },
  {
    name: "go-yaml key order: non-letters first, digit runs as numbers",
    secret: {
      name: "x",
      namespace: "ns",
      data: Object.fromEntries(
        ["a_b", "aB", "a-b", "a.b", "A1", "a10", "a9", "a09", "_x", "1", "x"].map((k) => [k, enc.encode(k)]),
      ),
    },
  },
  {
    name: "values that YAML 1.1 reads as bool, null or number are quoted",
    secret: {
      name: "q",
      namespace: "ns",
      data: {
        bool: bytesOfBase64("true"),
        nul: bytesOfBase64("NULL"),
        int: bytesOfBase64("1234"),
        hex: bytesOfBase64("0x1F"),
        plus: bytesOfBase64("+123"),
        float: bytesOfBase64("12e4"),
        empty: new Uint8Array(),
        binary: Uint8Array.from([0, 255, 1, 254, 10, 13]),
      },
    },
  },
];

Deno.test("secretToYaml", async (t) => {
  await t.step("the documented shape", () => {
    assertEquals(
      secretToYaml({
        name: "relay-root-tls-secret",
        namespace: "gloo-mesh",
        data: { "ca.crt": enc.encode("hi\n") },
      }),
      [
        "apiVersion: v1",
        "data:",
        "  ca.crt: aGkK",
        "kind: Secret",
        "metadata:",
        "  creationTimestamp: null",
        "  name: relay-root-tls-secret",
        "  namespace: gloo-mesh",
        "type: Opaque",
        "",
      ].join("\n"),
    );
  });
  await t.step("key order and quoting rules", () => {
    assertEquals(
      goYamlSortedKeys(CASES[3].secret.data),
      ["_x", "1", "A1", "a-b", "a.b", "a_b", "a9", "a09", "a10", "aB", "x"],
    );
    const table: [string, boolean][] = [
      ["true", true],
      ["True", true],
      ["1234", true],
      ["0x1F", true],
      ["+123", true],
      ["12e4", true],
      ["", true],
      ["LS0tLS1CRUdJTi", false],
      ["aGkK", false],
      ["1abc", false],
      ["+abc/=", false],
      ["gloo-mesh", false],
    ];
    for (const [s, want] of table) assertEquals(needsQuotes(s), want, JSON.stringify(s));
  });
  await t.step("data is base64 of the exact bytes", () => {
    for (const c of CASES) {
      for (const [k, v] of Object.entries(c.secret.data)) {
        assertEquals(bytesOfBase64(base64Of(v)), v, `${c.name}: ${k}`);
      }
    }
    // Longer than the 0x8000-byte chunks base64Of converts at a time.
    const big = Uint8Array.from({ length: 70_001 }, (_, i) => (i * 7919) & 0xff);
    assertEquals(bytesOfBase64(base64Of(big)), big);
  });
  await t.step("several secrets are separated by ---", () => {
    const two = secretsToYaml([CASES[0].secret, CASES[1].secret]);
    assertEquals(two.split("\n---\n").length, 2);
    assert(two.startsWith("apiVersion: v1\n") && two.endsWith("type: Opaque\n"));
  });
});

Deno.test("secretsToJson is a v1 List of the same Secrets", () => {
  const list = JSON.parse(secretsToJson(CASES.map((c) => c.secret)));
  assertEquals([list.apiVersion, list.kind, list.items.length], ["v1", "List", CASES.length]);
  const first = list.items[0];
  assertEquals(first.metadata, {
    name: "relay-server-tls-secret",
    namespace: "gloo-mesh",
    creationTimestamp: null,
  });
  assertEquals(first.type, "Opaque");
  assertEquals(bytesOfBase64(first.data["tls.crt"]), PEM);
});

Deno.test("byte-identical to kubectl create secret generic --dry-run=client", async (t) => {
  const kubectl = await kubectlPath();
  if (!kubectl) {
    console.log("manifest_test: kubectl is not installed; the comparison with kubectl was NOT run");
    await t.step({ name: "kubectl not installed", ignore: true, fn: () => {} });
    return;
  }
  for (const c of CASES) {
    await t.step(`yaml: ${c.name}`, async () => {
      assertEquals(secretToYaml(c.secret), await kubectlYaml(kubectl, c.secret, "yaml"));
    });
    await t.step(`json: ${c.name}`, async () => {
      const want = JSON.parse(await kubectlYaml(kubectl, c.secret, "json"));
      assertEquals(JSON.parse(secretsToJson([c.secret])).items[0], want);
    });
  }
});
