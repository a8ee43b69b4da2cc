import { ConflictError, InvalidInputError, PermissionDeniedError, PreconditionError } from "../errors.ts";
import { nullLogger } from "../log.ts";
import {
  certificateToPem,
  createCsr,
  dnsNamesOf,
  generateKeyPair,
  isCa,
  issueCertificate,
  type KeyAlgorithm,
  parseCertificates,
  privateKeyToPem,
  verifyChain,
  type X509Certificate,
} from "../pki/mod.ts";
import { type KubeObject, parseDeclaredConfig } from "../state/mod.ts";
import { MemorySecretStore } from "../store/mod.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { ISTIOD_SAN, MeshCaAuthority, ROOT_TRUST_SECRET_PREFIX } from "./mesh_ca.ts";

const NOW = new Date();
const DAY = 86_400_000;
const enc = new TextEncoder();
const V = "meshrelay.io/v1alpha1";

const cluster = (name: string, labels: Record<string, string> = {}): KubeObject => ({
  apiVersion: V,
  kind: "KubernetesCluster",
  metadata: { name, labels },
});
const policy = (name: string, spec: Record<string, unknown>): KubeObject => ({
  apiVersion: V,
  kind: "RootTrustPolicy",
  metadata: { name },
  spec,
});

async function csr(alg: KeyAlgorithm = "ecdsa-p256", dnsNames = [ISTIOD_SAN]): Promise<string> {
  return await createCsr(await generateKeyPair(alg), { dnsNames });
}

function authority(docs: KubeObject[], store = new MemorySecretStore()) {
  const declared = parseDeclaredConfig(docs);
  assertEquals(declared.errors, []);
  return { store, ca: new MeshCaAuthority({ store, declared: () => declared, log: nullLogger }) };
}

/** A root (pathLen 1 unless given) and, optionally, an intermediate below it, as a root secret's data. */
async function ownRoot(
  opts: { intermediate?: boolean; pathLength?: number } = {},
): Promise<{ root: X509Certificate; mid?: X509Certificate; data: Record<string, Uint8Array> }> {
  const rootKey = await generateKeyPair("ecdsa-p256");
  const root = await issueCertificate({
    profile: "root-ca",
    subject: "O=Example,CN=Own Root",
    publicKey: rootKey.publicKey,
    selfSignKey: rootKey,
    now: NOW,
    validityMs: 3650 * DAY,
    pathLength: opts.pathLength ?? (opts.intermediate ? 2 : 1),
  });
  if (!opts.intermediate) {
    return {
      root,
      data: {
        "root-cert.pem": enc.encode(certificateToPem(root)),
        "key.pem": enc.encode(await privateKeyToPem(rootKey)),
      },
    };
  }
  const midKey = await generateKeyPair("ecdsa-p256");
  const mid = await issueCertificate({
    profile: "intermediate-ca",
    subject: "O=Example,CN=Mesh Intermediate",
    publicKey: midKey.publicKey,
    issuer: { certificate: root, keyPair: rootKey },
    now: NOW,
    validityMs: 1000 * DAY,
    pathLength: 1,
  });
  return {
    root,
    mid,
    data: {
      "tls.crt": enc.encode(certificateToPem(mid) + certificateToPem(root)),
      "tls.key": enc.encode(await privateKeyToPem(midKey)),
    },
  };
}

Deno.test("MeshCaAuthority signs Istio intermediates", async (t) => {
  await t.step("generated root: made once, kept as root-trust.<policy>, reused", async () => {
    const { store, ca } = authority([
      cluster("c1"),
      cluster("c2"),
      policy("mesh", { mgmtServerCa: { generated: {} }, intermediateCertOptions: { ttlDays: 30 } }),
    ]);
    const a = await ca.sign("c1", await csr(), NOW);
    const b = await ca.sign("c2", await csr("ecdsa-p384"), NOW);
    assertEquals(a.policy, "mesh");
    assertEquals(await store.list(), [`${ROOT_TRUST_SECRET_PREFIX}mesh`]);
    assertEquals(a.response.caPem, b.response.caPem);
    assertEquals(a.response.chainPem, "");
    const [root] = parseCertificates(a.response.caPem);
    assertEquals(root.subject, "O=Istio, CN=Root CA");
    for (const [c, issued] of [["c1", a], ["c2", b]] as const) {
      const cert = issued.certificate;
      assertEquals(cert.subject, `O=Istio, CN=Intermediate CA, L=${c}`);
      assertEquals(dnsNamesOf(cert), [ISTIOD_SAN]);
      assert(isCa(cert));
      assertEquals(cert.notAfter.getTime() - NOW.getTime() <= 30 * DAY, true);
      await verifyChain(cert, { roots: [root], now: NOW });
    }
  });

  await t.step("two servers sharing a store generate one root between them", async () => {
    const docs = [cluster("c1"), policy("mesh", { mgmtServerCa: { generated: {} } })];
    const { store, ca } = authority(docs);
    const other = authority(docs, store).ca;
    const [a, b] = await Promise.all([ca.sign("c1", await csr(), NOW), other.sign("c1", await csr(), NOW)]);
    assertEquals(a.response.caPem, b.response.caPem);
  });

  await t.step("own root in a secret (secretRef)", async () => {
    const own = await ownRoot();
    const { store, ca } = authority([
      cluster("c1"),
      policy("mine", { mgmtServerCa: { secretRef: { name: "my-istio-root" } } }),
    ]);
    await store.put("my-istio-root", own.data);
    const r = await ca.sign("c1", await csr(), NOW);
    assertEquals(r.response.caPem, certificateToPem(own.root));
    await verifyChain(r.certificate, { roots: [own.root], now: NOW });
  });

  await t.step("own intermediate with its root (hybrid): the chain carries the intermediate", async () => {
    const own = await ownRoot({ intermediate: true });
    const { store, ca } = authority([
      cluster("c1"),
      policy("mine", { mgmtServerCa: { secretRef: { name: "mesh-intermediate" } } }),
    ]);
    await store.put("mesh-intermediate", own.data);
    const r = await ca.sign("c1", await csr(), NOW);
    assertEquals(r.response.chainPem, certificateToPem(own.mid!));
    assertEquals(r.response.caPem, certificateToPem(own.root));
    await verifyChain(r.certificate, { roots: [own.root], intermediates: [own.mid!], now: NOW });
  });

  await t.step("the first policy by name that targets the cluster", () => {
    const { ca } = authority([
      cluster("c1", { env: "prod" }),
      cluster("c2", { env: "dev" }),
      policy("a-prod", {
        clusterSelector: { matchLabels: { env: "prod" } },
        mgmtServerCa: { generated: {} },
      }),
      policy("b-all", { mgmtServerCa: { generated: {} } }),
    ]);
    assertEquals(ca.policyFor("c1").name, "a-prod");
    assertEquals(ca.policyFor("c2").name, "b-all");
  });
});

Deno.test("MeshCaAuthority refuses", async (t) => {
  const cases: {
    name: string;
    docs: KubeObject[];
    secrets?: Record<string, Record<string, Uint8Array>>;
    cluster?: string;
    csr?: () => Promise<string>;
    // deno-lint-ignore no-explicit-any
    error: new (...a: any[]) => Error;
    message: RegExp;
  }[] = [
    {
      name: "a cluster no policy serves",
      docs: [cluster("c1"), policy("p", { clusters: ["c2"], mgmtServerCa: { generated: {} } })],
      error: PreconditionError,
      message: /no RootTrustPolicy serves cluster "c1"/,
    },
    {
      name: "an unregistered cluster",
      docs: [policy("p", { mgmtServerCa: { generated: {} } })],
      error: PermissionDeniedError,
      message: /not registered/,
    },
    {
      name: "a missing own root secret",
      docs: [cluster("c1"), policy("p", { mgmtServerCa: { secretRef: { name: "nope" } } })],
      error: PreconditionError,
      message: /secret nope does not exist/,
    },
    {
      name: "an own root secret without a key",
      docs: [cluster("c1"), policy("p", { mgmtServerCa: { secretRef: { name: "half" } } })],
      secrets: { half: { "root-cert.pem": enc.encode("x") } },
      error: PreconditionError,
      message: /needs a certificate .* and its key/,
    },
    {
      name: "a CSR for another name",
      docs: [cluster("c1"), policy("p", { mgmtServerCa: { generated: {} } })],
      csr: () => csr("ecdsa-p256", ["evil.example.com"]),
      error: PermissionDeniedError,
      message: /DNS names other than the authorised ones/,
    },
    {
      name: "an Ed25519 key (Istio's plug-in CA cannot use it)",
      docs: [cluster("c1"), policy("p", { mgmtServerCa: { generated: {} } })],
      csr: () => csr("ed25519"),
      error: InvalidInputError,
      message: /Istio's plug-in CA cannot use ed25519/,
    },
    {
      name: "garbage instead of a CSR",
      docs: [cluster("c1"), policy("p", { mgmtServerCa: { generated: {} } })],
      csr: () => Promise.resolve("not a csr"),
      error: InvalidInputError,
      message: /no PEM certificate request/,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const { store, ca } = authority(c.docs);
      for (const [n, d] of Object.entries(c.secrets ?? {})) await store.put(n, d);
      const e = await assertRejects(
        async () => await ca.sign(c.cluster ?? "c1", await (c.csr ?? csr)(), NOW),
        c.error,
      );
      assert(c.message.test(e.message), e.message);
    });
  }
  await t.step("a root whose path length allows no CA below it: the operator's problem", async () => {
    const own = await ownRoot({ pathLength: 0 });
    const { store, ca } = authority([
      cluster("c1"),
      policy("p", { mgmtServerCa: { secretRef: { name: "flat" } } }),
    ]);
    await store.put("flat", own.data);
    const e = await assertRejects(async () => await ca.sign("c1", await csr(), NOW), PreconditionError);
    assert(/path length/.test(e.message), e.message);
  });
  await t.step("(control) the store refuses a second create of the generated root", async () => {
    const { store, ca } = authority([cluster("c1"), policy("p", { mgmtServerCa: { generated: {} } })]);
    await ca.sign("c1", await csr(), NOW);
    await assertRejects(
      () => store.put(`${ROOT_TRUST_SECRET_PREFIX}p`, {}, { expectedVersion: null }),
      ConflictError,
    );
  });
});
