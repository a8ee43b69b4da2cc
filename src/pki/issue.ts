/**
 * Issuing certificates with the defaults a security reviewer accepts: random 128-bit serials, SKI and AKI
 * always, critical basicConstraints and keyUsage, backdated notBefore, and a child that never outlives
 * its issuer. The profile decides the extensions; callers cannot add or copy any.
 * @module
 */
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsageExtension,
  type Extension,
  KeyUsagesExtension,
  type Name,
  PublicKey,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  type X509Certificate,
  X509CertificateGenerator,
} from "@peculiar/x509";
import { InvalidInputError } from "../errors.ts";
import { EKU, KeyUsage, readBasicConstraints, readKeyUsage, readSubjectKeyId } from "./extensions.ts";
import { classifyPublicKey, exportSpki, type KeyAlgorithm, type KeyPair, signatureParams } from "./keys.ts";
import { checkDnsName, checkIpAddress, parseSubject } from "./names.ts";

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
  const b = random(new Uint8Array(16));
  b[0] &= 0x7f;
  if (b[0] === 0) b[0] = 0x01;
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** SHA-1 over the subjectPublicKey BIT STRING contents (RFC 5280 4.2.1.2 method 1), lowercase hex. */
export async function keyIdOf(spki: Uint8Array | ArrayBuffer): Promise<string> {
  const id = await new PublicKey(new Uint8Array(spki)).getKeyIdentifier("SHA-1");
  return toHex(new Uint8Array(id));
}

function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

const skiCache = new WeakMap<X509Certificate, Promise<string>>();

/** The key identifier children of `cert` carry as AKI: its SKI when present, else computed from its key. */
export function authorityKeyIdFor(cert: X509Certificate): Promise<string> {
  let p = skiCache.get(cert);
  if (!p) {
    const ski = readSubjectKeyId(cert);
    p = ski ? Promise.resolve(ski) : keyIdOf(cert.publicKey.rawData);
    skiCache.set(cert, p);
  }
  return p;
}

function floorToSecond(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

/**
 * 128-bit random positive serial, SKI + AKI, notBefore = now - 5 min, CA key usage keyCertSign|cRLSign
 * critical, leaves: digitalSignature (+keyEncipherment for RSA), EKU serverAuth or clientAuth.
 * Throws InvalidInputError for an unusable issuer, subject, name or key.
 */
export async function issueCertificate(opts: IssueOptions): Promise<X509Certificate> {
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
  const subjectName = parseSubject(opts.subject, "subject");
  const dnsNames = (opts.dnsNames ?? []).map((n) => checkDnsName(n, "DNS name"));
  const ipAddresses = (opts.ipAddresses ?? []).map((ip) => checkIpAddress(ip, "IP address"));
  if (profile === "server" && dnsNames.length === 0 && ipAddresses.length === 0) {
    throw new InvalidInputError("server certificate: needs at least one DNS name or IP address");
  }

  // The subject key: must be one we accept (no weak RSA, no exotic curves).
  if (!opts.publicKey) throw new InvalidInputError("public key: missing");
  const spki = await exportSpki(opts.publicKey);
  const subjectKey = classifyPublicKey(spki);
  if ("problem" in subjectKey) throw new InvalidInputError(`public key: ${subjectKey.problem}`);

  // The signing side.
  let signingKey: KeyPair;
  let issuerName: Name;
  let issuerNotAfter: Date | undefined;
  let issuerNotBefore: Date | undefined;
  let authorityKeyId: string;
  const subjectKeyId = await keyIdOf(spki);
  let pathLength: number | undefined;
  if (profile === "root-ca") {
    if (opts.issuer) throw new InvalidInputError("root-ca: is self-signed and takes no issuer");
    if (!opts.selfSignKey) throw new InvalidInputError("root-ca: needs selfSignKey");
    signingKey = opts.selfSignKey;
    const own = await exportSpki(signingKey.publicKey);
    if (!bytesEqual(own, spki)) {
      throw new InvalidInputError("root-ca: publicKey is not the selfSignKey's public key");
    }
    issuerName = subjectName;
    authorityKeyId = subjectKeyId;
    pathLength = opts.pathLength ?? 1;
  } else {
    const issuer = opts.issuer;
    if (!issuer) throw new InvalidInputError(`${profile}: needs an issuer`);
    checkIssuerCanSign(issuer.certificate, "issuer");
    signingKey = issuer.keyPair;
    issuerName = issuer.certificate.subjectName;
    issuerNotAfter = issuer.certificate.notAfter;
    issuerNotBefore = issuer.certificate.notBefore;
    authorityKeyId = await authorityKeyIdFor(issuer.certificate);
    if (isCaProfile) {
      pathLength = opts.pathLength ?? 0;
      const issuerBc = readBasicConstraints(issuer.certificate);
      if (issuerBc?.pathLength !== undefined && pathLength > issuerBc.pathLength - 1) {
        throw new InvalidInputError(
          issuerBc.pathLength === 0
            ? "issuer: its path length constraint (0) does not allow a CA below it"
            : `pathLength: must be at most ${issuerBc.pathLength - 1} under this issuer`,
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

  // Validity: backdated start, never outside the issuer's window.
  let notBeforeMs = now.getTime() - BACKDATE_MS;
  if (issuerNotBefore && notBeforeMs < issuerNotBefore.getTime()) notBeforeMs = issuerNotBefore.getTime();
  let notAfterMs = now.getTime() + opts.validityMs;
  if (issuerNotAfter && notAfterMs > issuerNotAfter.getTime()) notAfterMs = issuerNotAfter.getTime();
  const notBefore = floorToSecond(notBeforeMs);
  const notAfter = floorToSecond(notAfterMs);
  if (issuerNotAfter && issuerNotAfter.getTime() <= now.getTime()) {
    throw new InvalidInputError("issuer: certificate has expired");
  }
  if (issuerNotBefore && issuerNotBefore.getTime() > now.getTime()) {
    throw new InvalidInputError("issuer: certificate is not valid yet");
  }
  if (notAfter.getTime() <= notBefore.getTime()) throw new InvalidInputError("validity: too short");

  const extensions: Extension[] = [];
  if (isCaProfile) {
    extensions.push(new BasicConstraintsExtension(true, pathLength, true));
    let usages = KeyUsage.keyCertSign | KeyUsage.cRLSign;
    // Istio's own tooling (tools/certs common.mk) gives its intermediates digitalSignature too.
    if (profile === "istio-intermediate-ca") usages |= KeyUsage.digitalSignature;
    extensions.push(new KeyUsagesExtension(usages, true));
  } else {
    extensions.push(new BasicConstraintsExtension(false, undefined, true));
    let usages: number = KeyUsage.digitalSignature;
    // RSA key exchange (TLS 1.2 static RSA) encrypts with the certified key.
    if (subjectKey.algorithm.startsWith("rsa-")) usages |= KeyUsage.keyEncipherment;
    extensions.push(new KeyUsagesExtension(usages, true));
    extensions.push(
      new ExtendedKeyUsageExtension([profile === "server" ? EKU.serverAuth : EKU.clientAuth], false),
    );
  }
  const altNames = [
    ...dnsNames.map((value) => ({ type: "dns" as const, value })),
    ...ipAddresses.map((value) => ({ type: "ip" as const, value })),
  ];
  if (altNames.length > 0) extensions.push(new SubjectAlternativeNameExtension(altNames, false));
  extensions.push(new SubjectKeyIdentifierExtension(subjectKeyId, false));
  extensions.push(new AuthorityKeyIdentifierExtension(authorityKeyId, false));

  try {
    return await X509CertificateGenerator.create({
      serialNumber: randomSerialHex(),
      subject: subjectName,
      issuer: issuerName,
      notBefore,
      notAfter,
      publicKey: spki,
      signingKey: signingKey.privateKey,
      signingAlgorithm: signatureParams(signingKey.algorithm),
      extensions,
    });
  } catch (e) {
    throw new InvalidInputError("issuer key: cannot sign with it", { cause: e });
  }
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
