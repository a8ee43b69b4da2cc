import { InvalidInputError } from "../errors.ts";
import { loadIssuer, parseCertificates, verifyChain } from "../pki/mod.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { buildRelayPki, defaultRootAlgorithm, defaultServerDnsNames, type InitOptions } from "./init.ts";
import { silentProgress } from "./progress.ts";

const NOW = new Date("2026-06-01T00:00:00Z");
const dec = new TextDecoder();
const base: InitOptions = {
  namespace: "gloo-mesh",
  serverDnsNames: defaultServerDnsNames("gloo-mesh"),
  days: { root: 3650, signing: 1825, server: 365 },
  keyAlgorithm: "ecdsa-p256",
  now: NOW,
  random: (b) => b.fill(7),
  progress: silentProgress,
};

Deno.test("buildRelayPki lays out the seeds' four secrets with chains that verify", async () => {
  const r = await buildRelayPki(base);
  assertEquals(r.secrets.map((s) => [s.name, s.namespace, Object.keys(s.data).sort()]), [
    ["relay-root-tls-secret", "gloo-mesh", ["ca.crt"]],
    ["relay-tls-signing-secret", "gloo-mesh", ["ca.crt", "tls.crt", "tls.key"]],
    ["relay-server-tls-secret", "gloo-mesh", ["ca.crt", "tls.crt", "tls.key"]],
    ["relay-identity-token-secret", "gloo-mesh", ["token"]],
  ]);
  assert(r.rootKeyPem?.startsWith("-----BEGIN PRIVATE KEY-----"));
  const pem = (i: number, k: string) => dec.decode(r.secrets[i].data[k]);
  const [root] = parseCertificates(pem(0, "ca.crt"));
  const [server, signing] = parseCertificates(pem(2, "tls.crt"));
  assertEquals(pem(1, "tls.crt"), pem(2, "tls.crt").slice(pem(2, "tls.crt").indexOf("-----BEGIN", 10)));
  const v = await verifyChain(server, {
    roots: [root],
    intermediates: [signing],
    now: NOW,
    purpose: "serverAuth",
    dnsName: "meshrelay-server.gloo-mesh.svc",
  });
  assertEquals(v.chain.length, 3);
  // The injected randomness is the token: 32 bytes of 7 as base64url.
  assertEquals(pem(3, "token"), btoa(String.fromCharCode(...new Uint8Array(32).fill(7))).replace(/=+$/, ""));
});

Deno.test("buildRelayPki input checks and defaults", async (t) => {
  await t.step("root algorithm follows the leaves unless ECDSA", () => {
    assertEquals(
      (["ecdsa-p256", "ecdsa-p384", "rsa-2048", "ed25519"] as const).map(defaultRootAlgorithm),
      ["ecdsa-p384", "ecdsa-p384", "rsa-2048", "ed25519"],
    );
  });
  const bad: { name: string; opts: Partial<InitOptions> }[] = [
    { name: "zero days", opts: { days: { root: 0, signing: 1, server: 1 } } },
    { name: "fractional days", opts: { days: { root: 10, signing: 1.5, server: 1 } } },
    { name: "no server name", opts: { serverDnsNames: [], serverIpAddresses: [] } },
  ];
  for (const b of bad) {
    await t.step(b.name, async () => {
      await assertRejects(() => buildRelayPki({ ...base, ...b.opts }), InvalidInputError);
    });
  }
  await t.step("a bring-your-own intermediate with pathLen 0 cannot take a signing CA below it", async () => {
    const r = await buildRelayPki(base);
    const signing = await loadIssuer(
      dec.decode(r.secrets[1].data["tls.crt"]),
      dec.decode(r.secrets[1].data["tls.key"]),
      {
        now: NOW,
      },
    );
    const [root] = parseCertificates(dec.decode(r.secrets[0].data["ca.crt"]));
    const e = await assertRejects(
      () => buildRelayPki({ ...base, ca: { issuer: signing, root } }),
      InvalidInputError,
    );
    assert(e.message.includes("pathLen 0"), e.message);
  });
});
