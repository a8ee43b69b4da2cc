/**
 * PKCS#10 requests: creating them (agents) and signing them (the relay's CA). Signing treats the CSR as
 * hostile: it proves possession of the key, checks the key, compares the requested names with what the
 * caller authorised, and never copies a requested extension into the certificate.
 * @module
 */
import {
  type Extension,
  Pkcs10CertificateRequest,
  Pkcs10CertificateRequestGenerator,
  SubjectAlternativeNameExtension,
} from "@peculiar/x509";
import type { X509Certificate } from "@peculiar/x509";
import { InvalidInputError, PermissionDeniedError } from "../errors.ts";
import { MalformedExtensionError, readBasicConstraints, readSubjectAltNames } from "./extensions.ts";
import { issueCertificate, type Issuer } from "./issue.ts";
import {
  classifyPublicKey,
  importPublicKey,
  type KeyAlgorithm,
  type KeyPair,
  signatureParams,
} from "./keys.ts";
import { checkDnsName, escapeRdnValue, parseSubject } from "./names.ts";
import { decodeBase64, findPemBlocks } from "./pem.ts";

/** Largest CSR we parse; real ones are well under 2 KiB, and parsing is work an attacker controls. */
export const MAX_CSR_BYTES = 16 * 1024;

/** PKCS#10 CSR PEM with SAN DNS names; CN = first DNS name unless commonName given. */
export async function createCsr(
  keyPair: KeyPair,
  opts: { dnsNames: string[]; commonName?: string; subject?: string },
): Promise<string> {
  if (!Array.isArray(opts.dnsNames) || opts.dnsNames.length === 0) {
    throw new InvalidInputError("CSR: needs at least one DNS name");
  }
  const dnsNames = opts.dnsNames.map((n) => checkDnsName(n, "CSR DNS name"));
  const subject = opts.subject ?? `CN=${escapeRdnValue(opts.commonName ?? dnsNames[0])}`;
  const name = parseSubject(subject, "CSR subject");
  const extensions: Extension[] = [
    new SubjectAlternativeNameExtension(dnsNames.map((value) => ({ type: "dns" as const, value })), false),
  ];
  const csr = await Pkcs10CertificateRequestGenerator.create({
    name,
    keys: { privateKey: keyPair.privateKey, publicKey: keyPair.publicKey },
    signingAlgorithm: signatureParams(keyPair.algorithm),
    extensions,
  });
  const pem = csr.toString("pem");
  return pem.endsWith("\n") ? pem : pem + "\n";
}

/** Input of {@linkcode signCsr}. */
export interface SignCsrOptions {
  issuer: Issuer;
  profile: "client" | "server" | "istio-intermediate-ca";
  /** The CSR must ask for exactly these DNS SANs (for a relay client: [clusterName]); else PermissionDeniedError. */
  expectDnsNames: string[];
  /** Subject to put in the cert; default "CN=<first dns name>". */
  subject?: string;
  now: Date;
  validityMs: number;
}

/** A parsed CSR whose self-signature verified, with its key classified. */
export interface CheckedCsr {
  csr: Pkcs10CertificateRequest;
  algorithm: KeyAlgorithm;
  publicKey: CryptoKey;
  dnsNames: string[];
  requestsCa: boolean;
}

const SIGNATURE_FAMILY: Record<string, string> = {
  "ECDSA": "ec",
  "RSASSA-PKCS1-v1_5": "rsa",
  "RSA-PSS": "rsa",
  "Ed25519": "ed25519",
};

/**
 * Parses a CSR PEM, verifies its self-signature (proof of possession) and its key. Throws
 * InvalidInputError for garbage, a bad signature, a weak or unsupported key, or malformed extensions.
 */
export async function checkCsr(csrPem: string, what = "CSR"): Promise<CheckedCsr> {
  if (typeof csrPem !== "string") throw new InvalidInputError(`${what}: expected PEM text`);
  if (csrPem.length > MAX_CSR_BYTES * 2) throw new InvalidInputError(`${what}: too large`);
  const block = findPemBlocks(csrPem).find((b) =>
    b.label === "CERTIFICATE REQUEST" || b.label === "NEW CERTIFICATE REQUEST"
  );
  if (!block) throw new InvalidInputError(`${what}: no PEM certificate request found`);
  const der = decodeBase64(block.body);
  if (!der || der.length === 0) throw new InvalidInputError(`${what}: PEM body is not valid base64`);
  if (der.length > MAX_CSR_BYTES) throw new InvalidInputError(`${what}: too large`);
  let csr: Pkcs10CertificateRequest;
  let spki: ArrayBuffer;
  let sigAlg: { name: string; hash?: { name: string } | string };
  try {
    csr = new Pkcs10CertificateRequest(der);
    spki = csr.publicKey.rawData;
    sigAlg = csr.signatureAlgorithm as unknown as typeof sigAlg;
    void csr.subject;
  } catch (e) {
    throw new InvalidInputError(`${what}: not a valid PKCS#10 certificate request`, { cause: e });
  }
  const key = classifyPublicKey(spki);
  if ("problem" in key) throw new InvalidInputError(`${what}: ${key.problem}`);
  const family = key.algorithm.startsWith("rsa-")
    ? "rsa"
    : key.algorithm.startsWith("ecdsa-")
    ? "ec"
    : "ed25519";
  if (SIGNATURE_FAMILY[sigAlg?.name] !== family) {
    throw new InvalidInputError(`${what}: signature algorithm does not match its key`);
  }
  const hash = typeof sigAlg.hash === "string" ? sigAlg.hash : sigAlg.hash?.name;
  if (hash !== undefined && !/^SHA-(256|384|512)$/.test(hash)) {
    throw new InvalidInputError(`${what}: weak signature hash (use SHA-256 or stronger)`);
  }
  let ok = false;
  try {
    ok = await csr.verify();
  } catch {
    ok = false;
  }
  if (!ok) throw new InvalidInputError(`${what}: signature does not verify (not signed by its own key)`);

  let dnsNames: string[];
  let requestsCa: boolean;
  try {
    const sans = readSubjectAltNames(csr);
    const others = sans.filter((n) => n.type !== "dns");
    if (others.length > 0) {
      throw new PermissionDeniedError(`${what}: asks for subject alternative names other than DNS names`);
    }
    dnsNames = sans.map((n) => n.value.toLowerCase().replace(/\.$/, ""));
    requestsCa = readBasicConstraints(csr)?.ca === true;
  } catch (e) {
    if (e instanceof PermissionDeniedError) throw e;
    const detail = e instanceof MalformedExtensionError ? e.message : "malformed extensions";
    throw new InvalidInputError(`${what}: ${detail}`, { cause: e });
  }
  const publicKey = await importPublicKey(spki, key.algorithm);
  return { csr, algorithm: key.algorithm, publicKey, dnsNames, requestsCa };
}

/**
 * Verifies the CSR's self-signature, refuses weak keys (RSA < 2048, unsupported curves), refuses a CSR that
 * asks for CA:true unless profile is istio-intermediate-ca, ignores every other requested extension (we set
 * our own), and issues. Garbage → InvalidInputError; names other than `expectDnsNames` → PermissionDeniedError.
 */
export async function signCsr(csrPem: string, opts: SignCsrOptions): Promise<X509Certificate> {
  if (!Array.isArray(opts.expectDnsNames) || opts.expectDnsNames.length === 0) {
    throw new InvalidInputError("expectDnsNames: must name at least one DNS name");
  }
  const expected = opts.expectDnsNames.map((n) => checkDnsName(n, "expected DNS name"));
  const checked = await checkCsr(csrPem);
  if (checked.requestsCa && opts.profile !== "istio-intermediate-ca") {
    throw new PermissionDeniedError(
      "CSR: asks for a CA certificate (basicConstraints CA:TRUE), which is not allowed",
    );
  }
  const want = [...new Set(expected)].sort();
  const got = [...new Set(checked.dnsNames)].sort();
  if (checked.dnsNames.length === 0) {
    throw new PermissionDeniedError(
      "CSR: asks for no DNS names; it must ask for exactly the authorised ones",
    );
  }
  if (want.length !== got.length || want.some((n, i) => n !== got[i])) {
    throw new PermissionDeniedError("CSR: asks for DNS names other than the authorised ones");
  }
  // The CSR's own subject is attacker-chosen text: we use ours.
  const subject = opts.subject ?? `CN=${escapeRdnValue(expected[0])}`;
  return await issueCertificate({
    profile: opts.profile,
    subject,
    dnsNames: expected,
    publicKey: checked.publicKey,
    issuer: opts.issuer,
    now: opts.now,
    validityMs: opts.validityMs,
  });
}
