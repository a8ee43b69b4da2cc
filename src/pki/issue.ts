/**
 * Issuing certificates with the defaults a security reviewer accepts: random 128-bit serials, SKI and AKI
 * always, critical basicConstraints and keyUsage, backdated notBefore, and a child that never outlives
 * its issuer. The profile decides the extensions; callers cannot add or copy any.
 *
 * The certificate is encoded with ./der.ts rather than @peculiar/x509's generator, whose object model
 * serialised and re-parsed every extension several times (most of the relay's CPU per Bootstrap), and what
 * never changes between calls for one issuer certificate is worked out once (see issuerFactsOf).
 * @module
 */
import { createHash } from "node:crypto";
import { X509Certificate } from "@peculiar/x509";
import { InvalidInputError } from "../errors.ts";
import {
  asciiString,
  bitString,
  ecdsaSignatureToDer,
  namedBits,
  NULL,
  octetString,
  oid,
  sequence,
  smallInteger,
  subjectPublicKeyBits,
  time,
  tlv,
  TRUE,
  unsignedInteger,
} from "./der.ts";
import { EKU, KeyUsage, OID, readBasicConstraints, readKeyUsage, readSubjectKeyId } from "./extensions.ts";
import { classifyPublicKey, exportSpki, type KeyAlgorithm, type KeyPair, signatureParams } from "./keys.ts";
import { checkDnsName, checkIpAddress, ipAddressBytes, parseSubject } from "./names.ts";

/** The signing side: a CA certificate, its key, and the chain above it (excluding the root is fine). */
export interface Issuer {
  certificate: X509Certificate;
  keyPair: KeyPair;
  chain?: X509Certificate[];
}

/** What a certificate is for; decides every extension. */
export type Profile = "root-ca" | "intermediate-ca" | "server" | "client" | "istio-intermediate-ca";

/** Every {@linkcode Profile}. */
export const PROFILES: readonly Profile[] = [
  "root-ca",
  "intermediate-ca",
  "server",
  "client",
  "istio-intermediate-ca",
];

/** Input of {@linkcode issueCertificate}. */
export interface IssueOptions {
  profile: Profile;
  /** e.g. "CN=relay-root,O=meshrelay" (RFC 4514 style as @peculiar/x509 takes). */
  subject: string;
  dnsNames?: string[];
  ipAddresses?: string[];
  publicKey: CryptoKey;
  /** Absent only for "root-ca" (self-signed with selfSignKey). */
  issuer?: Issuer;
  /** For "root-ca". */
  selfSignKey?: KeyPair;
  now: Date;
  /** Clamped so a child never outlives its issuer. */
  validityMs: number;
  /** Defaults: root 1, intermediates 0. */
  pathLength?: number;
}

/** How far notBefore is backdated, so peers with a slightly slow clock accept a fresh certificate. */
export const BACKDATE_MS = 5 * 60 * 1000;

/** Key types Istio's plug-in CA can use (field notes: RSA and P-256/P-384 only). */
export const ISTIO_KEY_ALGORITHMS: readonly KeyAlgorithm[] = [
  "ecdsa-p256",
  "ecdsa-p384",
  "rsa-2048",
  "rsa-3072",
  "rsa-4096",
];

/**
 * A 128-bit random positive serial as hex: 16 bytes, first byte in 0x01..0x7f so the DER INTEGER is
 * positive, minimal and exactly 16 bytes (never zero, unlike the prerequisites script's `-set_serial 0`).
 */
export function randomSerialHex(
  random: (b: Uint8Array) => Uint8Array = (b) => crypto.getRandomValues(b),
): string {
  return toHex(randomSerial(random));
}

function randomSerial(random: (b: Uint8Array) => Uint8Array = (b) => crypto.getRandomValues(b)): Uint8Array {
  const b = random(new Uint8Array(16));
  b[0] &= 0x7f;
  if (b[0] === 0) b[0] = 0x01;
  return b;
}

/** SHA-1 over the subjectPublicKey BIT STRING contents (RFC 5280 4.2.1.2 method 1), lowercase hex. */
export function keyIdOf(spki: Uint8Array | ArrayBuffer): Promise<string> {
  try {
    return Promise.resolve(toHex(keyIdBytes(new Uint8Array(spki))));
  } catch (e) {
    return Promise.reject(e);
  }
}

function keyIdBytes(spki: Uint8Array): Uint8Array {
  const bits = subjectPublicKeyBits(spki);
  if (!bits) throw new InvalidInputError("public key: malformed SubjectPublicKeyInfo");
  return new Uint8Array(createHash("sha1").update(bits).digest());
}

function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** What issuing under one issuer certificate needs from it; the same for every call. */
interface IssuerFacts {
  /** Its subject, the children's issuer name, as DER. */
  nameDer: Uint8Array;
  notBefore: number;
  notAfter: number;
  /** The children's AKI: its SKI when present, else computed from its key. */
  keyId: Uint8Array;
  pathLength?: number;
}

// Keyed by the certificate object: the relay signs every CSR with one Issuer it keeps. Only a certificate
// that passed checkIssuerCanSign is remembered, so a refused one is refused again on every call.
const issuerFacts = new WeakMap<X509Certificate, IssuerFacts>();

function issuerFactsOf(cert: X509Certificate): IssuerFacts {
  const known = issuerFacts.get(cert);
  if (known) return known;
  checkIssuerCanSign(cert, "issuer");
  let facts: IssuerFacts;
  try {
    const ski = readSubjectKeyId(cert);
    facts = {
      nameDer: new Uint8Array(cert.subjectName.toArrayBuffer()),
      notBefore: cert.notBefore.getTime(),
      notAfter: cert.notAfter.getTime(),
      keyId: ski ? fromHex(ski) : keyIdBytes(new Uint8Array(cert.publicKey.rawData)),
      pathLength: readBasicConstraints(cert)?.pathLength,
    };
  } catch (e) {
    if (e instanceof InvalidInputError) throw e;
    throw new InvalidInputError("issuer: certificate has malformed extensions", { cause: e });
  }
  issuerFacts.set(cert, facts);
  return facts;
}

/** The latest instant a certificate can state (RFC 5280 4.1.2.5: 99991231235959Z means no expiry). */
const LATEST_MS = Date.parse("9999-12-31T23:59:59Z");
/** GeneralizedTime has four year digits. */
const EARLIEST_MS = Date.parse("0000-01-01T00:00:00Z");

function floorToSecond(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

/** The checks and values that do not depend on the subject key. */
interface Plan {
  profile: Profile;
  isCaProfile: boolean;
  subjectDer: Uint8Array;
  dnsNames: string[];
  ipAddresses: string[];
}

function plan(opts: Omit<IssueOptions, "publicKey">): Plan {
  const { profile } = opts;
  if (!(PROFILES as readonly string[]).includes(profile)) {
    throw new InvalidInputError(`profile: unknown profile`);
  }
  const now = opts.now;
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) {
    throw new InvalidInputError("now: not a valid date");
  }
  if (!Number.isFinite(opts.validityMs) || opts.validityMs <= 0) {
    throw new InvalidInputError("validity: must be a positive duration");
  }
  const isCaProfile = profile === "root-ca" || profile === "intermediate-ca" ||
    profile === "istio-intermediate-ca";
  const subjectDer = new Uint8Array(parseSubject(opts.subject, "subject").toArrayBuffer());
  const dnsNames = (opts.dnsNames ?? []).map((n) => checkDnsName(n, "DNS name"));
  const ipAddresses = (opts.ipAddresses ?? []).map((ip) => checkIpAddress(ip, "IP address"));
  if (profile === "server" && dnsNames.length === 0 && ipAddresses.length === 0) {
    throw new InvalidInputError("server certificate: needs at least one DNS name or IP address");
  }
  return { profile, isCaProfile, subjectDer, dnsNames, ipAddresses };
}

/** A subject key already decoded, classified and re-encoded (as keys.ts canonicalPublicKey returns it). */
export interface SubjectKey {
  algorithm: KeyAlgorithm;
  spki: Uint8Array;
}

/**
 * 128-bit random positive serial, SKI + AKI, notBefore = now - 5 min, CA key usage keyCertSign|cRLSign
 * critical, leaves: digitalSignature (+keyEncipherment for RSA), EKU serverAuth or clientAuth.
 * Throws InvalidInputError for an unusable issuer, subject, name or key.
 */
export async function issueCertificate(opts: IssueOptions): Promise<X509Certificate> {
  const p = plan(opts);
  // The subject key: must be one we accept (no weak RSA, no exotic curves).
  if (!opts.publicKey) throw new InvalidInputError("public key: missing");
  const spki = await exportSpki(opts.publicKey);
  const subjectKey = classifyPublicKey(spki);
  if ("problem" in subjectKey) throw new InvalidInputError(`public key: ${subjectKey.problem}`);
  return await issue(opts, p, { algorithm: subjectKey.algorithm, spki });
}

/**
 * {@linkcode issueCertificate} for a subject key given as checked DER instead of a CryptoKey (signCsr's
 * path: the CSR's key is decoded and classified there, and a WebCrypto import + export would only cost time).
 */
export async function issueForSubjectKey(
  opts: Omit<IssueOptions, "publicKey">,
  subjectKey: SubjectKey,
): Promise<X509Certificate> {
  return await issue(opts, plan(opts), subjectKey);
}

async function issue(
  opts: Omit<IssueOptions, "publicKey">,
  p: Plan,
  subjectKey: SubjectKey,
): Promise<X509Certificate> {
  const { profile, isCaProfile } = p;
  const now = opts.now;
  const spki = subjectKey.spki;

  // The signing side.
  let signingKey: KeyPair;
  let issuerNameDer: Uint8Array;
  let issuerNotAfter: number | undefined;
  let issuerNotBefore: number | undefined;
  let authorityKeyId: Uint8Array;
  const subjectKeyId = keyIdBytes(spki);
  let pathLength: number | undefined;
  if (profile === "root-ca") {
    if (opts.issuer) throw new InvalidInputError("root-ca: is self-signed and takes no issuer");
    if (!opts.selfSignKey) throw new InvalidInputError("root-ca: needs selfSignKey");
    signingKey = opts.selfSignKey;
    const own = await exportSpki(signingKey.publicKey);
    if (!bytesEqual(own, spki)) {
      throw new InvalidInputError("root-ca: publicKey is not the selfSignKey's public key");
    }
    issuerNameDer = p.subjectDer;
    authorityKeyId = subjectKeyId;
    pathLength = opts.pathLength ?? 1;
  } else {
    const issuer = opts.issuer;
    if (!issuer) throw new InvalidInputError(`${profile}: needs an issuer`);
    const facts = issuerFactsOf(issuer.certificate);
    signingKey = issuer.keyPair;
    issuerNameDer = facts.nameDer;
    issuerNotAfter = facts.notAfter;
    issuerNotBefore = facts.notBefore;
    authorityKeyId = facts.keyId;
    if (isCaProfile) {
      pathLength = opts.pathLength ?? 0;
      const limit = facts.pathLength;
      if (limit !== undefined && pathLength > limit - 1) {
        throw new InvalidInputError(
          limit === 0
            ? "issuer: its path length constraint (0) does not allow a CA below it"
            : `pathLength: must be at most ${limit - 1} under this issuer`,
        );
      }
    }
  }
  if (pathLength !== undefined && (!Number.isInteger(pathLength) || pathLength < 0 || pathLength > 16)) {
    throw new InvalidInputError("pathLength: must be an integer from 0 to 16");
  }
  if (profile === "istio-intermediate-ca") {
    for (
      const [what, alg] of [["public key", subjectKey.algorithm], [
        "issuer key",
        signingKey.algorithm,
      ]] as const
    ) {
      if (!ISTIO_KEY_ALGORITHMS.includes(alg)) {
        throw new InvalidInputError(`${what}: Istio's plug-in CA cannot use ${alg} keys (use ECDSA or RSA)`);
      }
    }
  }

  // Validity: backdated start, never outside the issuer's window nor what X.509 time can express.
  let notBeforeMs = now.getTime() - BACKDATE_MS;
  if (issuerNotBefore !== undefined && notBeforeMs < issuerNotBefore) notBeforeMs = issuerNotBefore;
  let notAfterMs = now.getTime() + opts.validityMs;
  if (issuerNotAfter !== undefined && notAfterMs > issuerNotAfter) notAfterMs = issuerNotAfter;
  if (notAfterMs > LATEST_MS) notAfterMs = LATEST_MS;
  const notBefore = floorToSecond(notBeforeMs);
  const notAfter = floorToSecond(notAfterMs);
  if (issuerNotAfter !== undefined && issuerNotAfter <= now.getTime()) {
    throw new InvalidInputError("issuer: certificate has expired");
  }
  if (issuerNotBefore !== undefined && issuerNotBefore > now.getTime()) {
    throw new InvalidInputError("issuer: certificate is not valid yet");
  }
  if (notBefore.getTime() < EARLIEST_MS) throw new InvalidInputError("now: before the year 0000");
  if (notAfter.getTime() <= notBefore.getTime()) throw new InvalidInputError("validity: too short");

  const extensions: Uint8Array[] = [];
  if (isCaProfile) {
    extensions.push(extension(OID.basicConstraints, true, sequence(TRUE, smallInteger(pathLength!))));
    let usages = KeyUsage.keyCertSign | KeyUsage.cRLSign;
    // Istio's own tooling (tools/certs common.mk) gives its intermediates digitalSignature too.
    if (profile === "istio-intermediate-ca") usages |= KeyUsage.digitalSignature;
    extensions.push(extension(OID.keyUsage, true, namedBits(usages)));
  } else {
    // cA FALSE is the DEFAULT, so DER leaves it out: an empty SEQUENCE.
    extensions.push(extension(OID.basicConstraints, true, sequence()));
    let usages: number = KeyUsage.digitalSignature;
    // RSA key exchange (TLS 1.2 static RSA) encrypts with the certified key.
    if (subjectKey.algorithm.startsWith("rsa-")) usages |= KeyUsage.keyEncipherment;
    extensions.push(extension(OID.keyUsage, true, namedBits(usages)));
    const eku = profile === "server" ? EKU.serverAuth : EKU.clientAuth;
    extensions.push(extension(OID.extKeyUsage, false, sequence(oidDer(eku))));
  }
  const altNames = [
    ...p.dnsNames.map((n) => asciiString(GENERAL_NAME_DNS, n)),
    ...p.ipAddresses.map((ip) => tlv(GENERAL_NAME_IP, ipAddressBytes(ip)!)),
  ];
  if (altNames.length > 0) extensions.push(extension(OID.subjectAltName, false, sequence(...altNames)));
  extensions.push(extension(OID.subjectKeyIdentifier, false, octetString(subjectKeyId)));
  extensions.push(
    extension(OID.authorityKeyIdentifier, false, sequence(tlv(AKI_KEY_IDENTIFIER, authorityKeyId))),
  );

  let signatureAlgorithm: SignatureAlgorithm;
  try {
    signatureAlgorithm = signatureAlgorithmOf(signingKey);
  } catch (e) {
    throw new InvalidInputError("issuer key: cannot sign with it", { cause: e });
  }
  const tbs = sequence(
    VERSION_3,
    unsignedInteger(randomSerial()),
    signatureAlgorithm.der,
    issuerNameDer,
    sequence(time(notBefore), time(notAfter)),
    p.subjectDer,
    spki,
    tlv(EXTENSIONS_TAG, sequence(...extensions)),
  );
  let signature: Uint8Array;
  try {
    const raw = new Uint8Array(
      await crypto.subtle.sign(signatureAlgorithm.params, signingKey.privateKey, tbs),
    );
    signature = signatureAlgorithm.params.name === "ECDSA" ? ecdsaSignatureToDer(raw) : raw;
  } catch (e) {
    throw new InvalidInputError("issuer key: cannot sign with it", { cause: e });
  }
  return new X509Certificate(sequence(tbs, signatureAlgorithm.der, bitString(signature)));
}

/** [0] EXPLICIT Version v3 (2). */
const VERSION_3 = tlv(0xa0, smallInteger(2));
/** [3] EXPLICIT Extensions in a TBSCertificate. */
const EXTENSIONS_TAG = 0xa3;
/** GeneralName dNSName [2] and iPAddress [7], implicitly tagged. */
const GENERAL_NAME_DNS = 0x82;
const GENERAL_NAME_IP = 0x87;
/** AuthorityKeyIdentifier keyIdentifier [0], implicitly tagged. */
const AKI_KEY_IDENTIFIER = 0x80;

const oidCache = new Map<string, Uint8Array>();
function oidDer(id: string): Uint8Array {
  let der = oidCache.get(id);
  if (!der) oidCache.set(id, der = oid(id));
  return der;
}

function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array {
  // critical is BOOLEAN DEFAULT FALSE: DER writes it only when true.
  return critical ? sequence(oidDer(id), TRUE, octetString(value)) : sequence(oidDer(id), octetString(value));
}

interface SignatureAlgorithm {
  params: Algorithm | EcdsaParams;
  /** The AlgorithmIdentifier naming it in the certificate. */
  der: Uint8Array;
}

const SIGNATURE_OIDS: Record<string, string> = {
  "ECDSA SHA-256": "1.2.840.10045.4.3.2",
  "ECDSA SHA-384": "1.2.840.10045.4.3.3",
  "ECDSA SHA-512": "1.2.840.10045.4.3.4",
  "RSASSA-PKCS1-v1_5 SHA-256": "1.2.840.113549.1.1.11",
  "RSASSA-PKCS1-v1_5 SHA-384": "1.2.840.113549.1.1.12",
  "RSASSA-PKCS1-v1_5 SHA-512": "1.2.840.113549.1.1.13",
  "Ed25519": "1.3.101.112",
};

/**
 * What signing with `keyPair` produces. An RSA CryptoKey carries its hash from import and WebCrypto signs
 * with that one whatever the call says, so the certificate names the key's hash.
 */
function signatureAlgorithmOf(keyPair: KeyPair): SignatureAlgorithm {
  const params = signatureParams(keyPair.algorithm);
  let hash = (params as EcdsaParams).hash as string | undefined;
  if (params.name === "RSASSA-PKCS1-v1_5") {
    hash = (keyPair.privateKey.algorithm as RsaHashedKeyAlgorithm).hash?.name;
  }
  const id = SIGNATURE_OIDS[hash ? `${params.name} ${hash}` : params.name];
  if (!id) throw new Error(`no signature algorithm for ${params.name} ${hash ?? ""}`);
  // RFC 4055 (RSA): NULL parameters; RFC 5758 (ECDSA) and RFC 8410 (Ed25519): none.
  const der = params.name === "RSASSA-PKCS1-v1_5" ? sequence(oidDer(id), NULL) : sequence(oidDer(id));
  return { params, der };
}

/** Refuses an issuer certificate that is not a CA allowed to sign certificates. */
export function checkIssuerCanSign(cert: X509Certificate, what = "issuer"): void {
  let bc, ku;
  try {
    bc = readBasicConstraints(cert);
    ku = readKeyUsage(cert);
  } catch {
    throw new InvalidInputError(`${what}: certificate has malformed extensions`);
  }
  if (!bc?.ca) {
    throw new InvalidInputError(`${what}: certificate is not a CA (basicConstraints CA:TRUE missing)`);
  }
  if (ku && (ku.usages & KeyUsage.keyCertSign) === 0) {
    throw new InvalidInputError(
      `${what}: certificate's key usage does not allow signing certificates (keyCertSign)`,
    );
  }
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export { bytesEqual, toHex };
