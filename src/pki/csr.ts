/**
 * PKCS#10 requests: creating them (agents) and signing them (the relay's CA). Signing treats the CSR as
 * hostile: it proves possession of the key, checks the key, compares the requested names with what the
 * caller authorised, and never copies a requested extension into the certificate.
 * @module
 */
import {
  type Extension,
  ExtensionFactory,
  Pkcs10CertificateRequest,
  Pkcs10CertificateRequestGenerator,
  SubjectAlternativeNameExtension,
} from "@peculiar/x509";
import type { X509Certificate } from "@peculiar/x509";
import { InvalidInputError, PermissionDeniedError } from "../errors.ts";
import { oid, readTlv, Tag } from "./der.ts";
import { MalformedExtensionError, readBasicConstraints, readSubjectAltNames } from "./extensions.ts";
import { bytesEqual, issueForSubjectKey, type Issuer } from "./issue.ts";
import { canonicalPublicKey, type KeyAlgorithm, type KeyPair, signatureParams } from "./keys.ts";
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
  /** The key re-encoded from its decoded form (DER SubjectPublicKeyInfo), never the requester's bytes. */
  spki: Uint8Array;
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
  const key = canonicalPublicKey(spki);
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
    const requested = { extensions: requestedExtensions(der) };
    const sans = readSubjectAltNames(requested);
    const others = sans.filter((n) => n.type !== "dns");
    if (others.length > 0) {
      throw new PermissionDeniedError(`${what}: asks for subject alternative names other than DNS names`);
    }
    dnsNames = sans.map((n) => n.value.toLowerCase().replace(/\.$/, ""));
    requestsCa = readBasicConstraints(requested)?.ca === true;
  } catch (e) {
    if (e instanceof PermissionDeniedError) throw e;
    const detail = e instanceof MalformedExtensionError ? e.message : "malformed extensions";
    throw new InvalidInputError(`${what}: ${detail}`, { cause: e });
  }
  return { csr, algorithm: key.algorithm, spki: key.spki, dnsNames, requestsCa };
}

const EXTENSION_REQUEST = oid("1.2.840.113549.1.9.14");

/**
 * The extensions a CSR asks for (its first extensionRequest attribute, as Pkcs10CertificateRequest's
 * `extensions` takes them), each decoded by @peculiar/x509's ExtensionFactory. `der` has already parsed
 * as a CSR; we walk it ourselves because the library's getter re-serialises and re-parses every attribute
 * and extension on the way (a tenth of signCsr's time). Throws on anything that is not strict DER.
 */
function requestedExtensions(der: Uint8Array): Extension[] {
  const malformed = (): never => {
    throw new Error("malformed certificate request attributes");
  };
  const next = (at: number, end: number, tag?: number) => {
    const t = readTlv(der, at, end) ?? malformed();
    if (tag !== undefined && t.tag !== tag) malformed();
    return t;
  };
  const request = next(0, der.length, Tag.sequence);
  const info = next(request.start, request.end, Tag.sequence);
  let at = info.start;
  // version, subject, subjectPKInfo
  for (const tag of [Tag.integer, Tag.sequence, Tag.sequence]) at = next(at, info.end, tag).end;
  if (at === info.end) return [];
  // attributes [0] IMPLICIT SET OF Attribute
  const attributes = next(at, info.end, 0xa0);
  for (let a = attributes.start; a < attributes.end;) {
    const attribute = next(a, attributes.end, Tag.sequence);
    a = attribute.end;
    const type = next(attribute.start, attribute.end, Tag.oid);
    if (!bytesEqual(der.subarray(attribute.start, type.end), EXTENSION_REQUEST)) continue;
    const values = next(type.end, attribute.end, Tag.set);
    if (values.start === values.end) return [];
    const list = next(values.start, values.end, Tag.sequence);
    const out: Extension[] = [];
    for (let e = list.start; e < list.end;) {
      const end = next(e, list.end, Tag.sequence).end;
      out.push(ExtensionFactory.create(der.slice(e, end)));
      e = end;
    }
    return out;
  }
  return [];
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
  return await issueForSubjectKey({
    profile: opts.profile,
    subject,
    dnsNames: expected,
    issuer: opts.issuer,
    now: opts.now,
    validityMs: opts.validityMs,
  }, checked);
}
