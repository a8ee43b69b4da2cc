/**
 * Test helpers (not part of the public face): a relay PKI in a memory store, made the way the server
 * makes it at startup, and client certificates for any cluster.
 * @module
 */
import { nullLogger } from "../log.ts";
import {
  certificateToPem,
  generateKeyPair,
  issueCertificate,
  type Issuer,
  type KeyPair,
  privateKeyToPem,
  type X509Certificate,
} from "../pki/mod.ts";
import { MemorySecretStore, type SecretStore } from "../store/mod.ts";
import { ensureServerMaterial, loadSigningIssuer } from "./server_material.ts";

/** A client certificate with its key, as PEM. */
export interface ClientPem {
  certificate: X509Certificate;
  certPem: string;
  /** Leaf + signing CA. */
  chainPem: string;
  keyPem: string;
  keyPair: KeyPair;
}

/** A generated relay PKI in a store. */
export interface TestPki {
  store: SecretStore;
  signing: Issuer;
  rootPem: string;
  /** Issues a client certificate for `cluster` (SAN) from the signing CA. */
  client(cluster: string, opts?: { now?: Date; validityMs?: number; issuer?: Issuer }): Promise<ClientPem>;
}

/** A relay PKI (root, signing CA, server cert for localhost/127.0.0.1, token) in a memory store. */
export async function makeTestPki(
  now = new Date(),
  store: SecretStore = new MemorySecretStore(),
): Promise<TestPki> {
  await ensureServerMaterial({
    store,
    log: nullLogger,
    now,
    mode: "mtls",
    generateCerts: true,
    disableCa: false,
    generateToken: true,
    serverDnsNames: ["localhost"],
    serverIpAddresses: ["127.0.0.1"],
  });
  const signing = (await loadSigningIssuer(store, { now }))!.issuer;
  const rootPem = new TextDecoder().decode((await store.get("relay-root-tls-secret"))!.data["ca.crt"]);
  return {
    store,
    signing,
    rootPem,
    client: (cluster, o = {}) =>
      issueClient(o.issuer ?? signing, cluster, o.now ?? now, o.validityMs ?? 86_400_000),
  };
}

/** A client certificate for `cluster` issued by `issuer`. */
export async function issueClient(
  issuer: Issuer,
  cluster: string,
  now: Date,
  validityMs: number,
): Promise<ClientPem> {
  const keyPair = await generateKeyPair();
  const certificate = await issueCertificate({
    profile: "client",
    subject: `CN=${cluster}`,
    dnsNames: [cluster],
    publicKey: keyPair.publicKey,
    issuer,
    now,
    validityMs,
  });
  const certPem = certificateToPem(certificate);
  return {
    certificate,
    certPem,
    chainPem: certPem + certificateToPem(issuer.certificate),
    keyPem: await privateKeyToPem(keyPair),
    keyPair,
  };
}

/** A self-signed CA unrelated to the relay PKI (for "wrong CA" tests). */
export async function foreignCa(now: Date): Promise<Issuer> {
  const keyPair = await generateKeyPair();
  const certificate = await issueCertificate({
    profile: "root-ca",
    subject: "CN=someone-else",
    publicKey: keyPair.publicKey,
    selfSignKey: keyPair,
    now,
    validityMs: 30 * 86_400_000,
  });
  return { certificate, keyPair };
}
