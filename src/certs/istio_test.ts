import { InvalidInputError } from "../errors.ts";
import { dnsNamesOf, loadIssuer, parseCertificates, verifyChain } from "../pki/mod.ts";
import { assert, assertEquals, assertNotEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import { buildRelayPki, defaultServerDnsNames } from "./init.ts";
import { buildIstioCacerts, checkClusterNames, type IstioOptions } from "./istio.ts";
import { silentProgress } from "./progress.ts";

const NOW = new Date("2026-06-01T00:00:00Z");
const dec = new TextDecoder();

async function relay() {
  const r = await buildRelayPki({
    namespace: "gloo-mesh",
    serverDnsNames: defaultServerDnsNames("gloo-mesh"),
    days: { root: 3650, signing: 1825, server: 365 },
    keyAlgorithm: "ecdsa-p256",
    now: NOW,
    random: (b) => crypto.getRandomValues(b),
    progress: silentProgress,
  });
  const [root] = parseCertificates(dec.decode(r.secrets[0].data["ca.crt"]));
  const rootIssuer = await loadIssuer(dec.decode(r.secrets[0].data["ca.crt"]), r.rootKeyPem!, { now: NOW });
  const signing = await loadIssuer(
    dec.decode(r.secrets[1].data["tls.crt"]),
    dec.decode(r.secrets[1].data["tls.key"]),
    {
      now: NOW,
    },
  );
  return { root, rootIssuer, signing };
}

Deno.test("buildIstioCacerts: the three architectures", async (t) => {
  const { root, rootIssuer, signing } = await relay();
  const base: Omit<IstioOptions, "architecture"> = {
    clusters: ["east", "west"],
    namespace: "istio-system",
    keyAlgorithm: "ecdsa-p256",
    days: { root: 3650, intermediate: 730 },
    now: NOW,
    progress: silentProgress,
  };
  const files = (s: { data: Readonly<Record<string, Uint8Array>> }) =>
    Object.fromEntries(Object.entries(s.data).map(([k, v]) => [k, dec.decode(v)]));

  await t.step("separate-intermediates: one intermediate per cluster under the relay root", async () => {
    const r = await buildIstioCacerts({
      ...base,
      architecture: "separate-intermediates",
      issuer: { issuer: rootIssuer, root },
    });
    assertEquals(r.secrets.map((s) => [s.storeDir, s.name, s.namespace]), [
      ["istio/east", "cacerts", "istio-system"],
      ["istio/west", "cacerts", "istio-system"],
    ]);
    assertEquals(r.newRoot, undefined);
    for (const [i, s] of r.secrets.entries()) {
      const f = files(s);
      const [ca] = parseCertificates(f["ca-cert.pem"]);
      assertEquals(ca.subject, `O=Istio, CN=Intermediate CA, L=${base.clusters[i]}`);
      assertEquals(dnsNamesOf(ca), ["istiod.istio-system.svc"]);
      assertEquals(f["cert-chain.pem"], f["ca-cert.pem"] + f["root-cert.pem"]);
      assert(parseCertificates(f["root-cert.pem"])[0].equal(root));
      await verifyChain(ca, { roots: [root], now: NOW });
    }
    assertNotEquals(files(r.secrets[0])["ca-key.pem"], files(r.secrets[1])["ca-key.pem"]);
  });

  await t.step("separate-roots: a new Istio root, not the relay one", async () => {
    const r = await buildIstioCacerts({ ...base, architecture: "separate-roots" });
    assert(r.newRoot);
    assertEquals(r.newRoot.certificate.subject, "O=Istio, CN=Root CA");
    for (const s of r.secrets) {
      const [ca] = parseCertificates(files(s)["ca-cert.pem"]);
      await verifyChain(ca, { roots: [r.newRoot.certificate], now: NOW });
      await assertRejects(() => verifyChain(ca, { roots: [root], now: NOW }), Error);
    }
  });

  await t.step("shared: the relay signing CA itself in every cluster", async () => {
    const r = await buildIstioCacerts({ ...base, architecture: "shared", issuer: { issuer: signing, root } });
    for (const s of r.secrets) {
      const [ca] = parseCertificates(files(s)["ca-cert.pem"]);
      assert(ca.equal(signing.certificate));
    }
  });

  await t.step("refusals: Ed25519, missing issuer, bad or repeated cluster names", async () => {
    await assertRejects(
      () => buildIstioCacerts({ ...base, architecture: "separate-roots", keyAlgorithm: "ed25519" }),
      InvalidInputError,
    );
    await assertRejects(
      () => buildIstioCacerts({ ...base, architecture: "separate-intermediates" }),
      InvalidInputError,
    );
    await assertRejects(() => buildIstioCacerts({ ...base, architecture: "shared" }), InvalidInputError);
    for (const names of [[], ["East"], ["a_b"], ["a", "a"], ["-a"]]) {
      assertThrows(() => checkClusterNames(names), InvalidInputError);
    }
    checkClusterNames(["east", "west-2"]);
  });
});
