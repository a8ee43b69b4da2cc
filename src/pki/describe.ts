/**
 * Inspection: a structured, JSON-friendly view of a certificate for `certs inspect`, its human-readable
 * rendering (modelled on `step certificate inspect`), and lifetime arithmetic for `certs check`.
 * @module
 */
import { createPublicKey } from "node:crypto";
import type { X509Certificate } from "@peculiar/x509";
import {
  ekuName,
  keyUsageNames,
  readAuthorityKeyId,
  readBasicConstraints,
  readExtKeyUsage,
  readKeyUsage,
  readSubjectAltNames,
  readSubjectKeyId,
} from "./extensions.ts";
import { classifyPublicKey, type KeyAlgorithm } from "./keys.ts";
import { namesEqual } from "./names.ts";

/** Everything `certs inspect` shows about one certificate. Dates are ISO 8601 strings (UTC). */
export interface CertificateInfo {
  subject: string;
  issuer: string;
  /** Lowercase hex, as openssl and step print it without colons. */
  serialNumber: string;
  notBefore: string;
  notAfter: string;
  /** Subject and issuer names are equal (a root or a self-issued CA). */
  selfIssued: boolean;
  publicKey: {
    /** "RSA", "ECDSA", "Ed25519" or the key type node:crypto reports. */
    algorithm: string;
    /** RSA modulus bits or curve size. */
    size?: number;
    /** "P-256", "P-384", … for ECDSA. */
    curve?: string;
    /** Our name for the key when it is one we issue with. */
    keyAlgorithm?: KeyAlgorithm;
  };
  /** e.g. "ECDSA-SHA256", "SHA256-RSA", "Ed25519". */
  signatureAlgorithm: string;
  dnsNames: string[];
  ipAddresses: string[];
  /** Other SAN entries as "type:value" (URI, email, …). */
  otherNames: string[];
  isCA: boolean;
  pathLength?: number;
  basicConstraintsCritical?: boolean;
  keyUsage: string[];
  keyUsageCritical?: boolean;
  extKeyUsage: string[];
  /** Colon-separated uppercase hex, as openssl prints key identifiers. */
  subjectKeyId?: string;
  authorityKeyId?: string;
  /** SHA-256 over the DER, colon-separated uppercase hex. */
  fingerprintSha256: string;
}

const CURVES: Record<string, { name: string; size: number }> = {
  prime256v1: { name: "P-256", size: 256 },
  secp384r1: { name: "P-384", size: 384 },
  secp521r1: { name: "P-521", size: 521 },
  secp256k1: { name: "secp256k1", size: 256 },
};

function colonHex(hex: string): string {
  return (hex.toUpperCase().match(/.{2}/g) ?? []).join(":");
}

function publicKeyInfo(cert: X509Certificate): CertificateInfo["publicKey"] {
  const cls = classifyPublicKey(cert.publicKey.rawData);
  const keyAlgorithm = "algorithm" in cls ? cls.algorithm : undefined;
  try {
    const key = createPublicKey({
      key: new Uint8Array(cert.publicKey.rawData) as unknown as Buffer,
      format: "der",
      type: "spki",
    });
    const d = key.asymmetricKeyDetails ?? {};
    switch (key.asymmetricKeyType) {
      case "rsa":
        return { algorithm: "RSA", size: d.modulusLength, keyAlgorithm };
      case "rsa-pss":
        return { algorithm: "RSA-PSS", size: d.modulusLength, keyAlgorithm };
      case "ec": {
        const c = CURVES[d.namedCurve ?? ""];
        return { algorithm: "ECDSA", size: c?.size, curve: c?.name ?? d.namedCurve, keyAlgorithm };
      }
      case "ed25519":
        return { algorithm: "Ed25519", size: 256, keyAlgorithm };
      default:
        return { algorithm: key.asymmetricKeyType ?? "unknown", keyAlgorithm };
    }
  } catch {
    return { algorithm: "unknown" };
  }
}

function signatureAlgorithmName(cert: X509Certificate): string {
  try {
    const alg = cert.signatureAlgorithm as unknown as { name: string; hash?: { name: string } | string };
    const hash = (typeof alg.hash === "string" ? alg.hash : alg.hash?.name ?? "").replace("-", "");
    switch (alg.name) {
      case "ECDSA":
        return `ECDSA-${hash}`;
      case "RSASSA-PKCS1-v1_5":
        return `${hash}-RSA`;
      case "RSA-PSS":
        return `${hash}-RSAPSS`;
      default:
        return alg.name;
    }
  } catch {
    return "unknown";
  }
}

/** Structured view of a certificate. Malformed extensions are reported as absent rather than failing. */
export async function describeCertificate(cert: X509Certificate): Promise<CertificateInfo> {
  const safe = <T>(f: () => T, fallback: T): T => {
    try {
      return f();
    } catch {
      return fallback;
    }
  };
  const sans = safe(() => readSubjectAltNames(cert), []);
  const bc = safe(() => readBasicConstraints(cert), undefined);
  const ku = safe(() => readKeyUsage(cert), undefined);
  const eku = safe(() => readExtKeyUsage(cert), undefined);
  const ski = safe(() => readSubjectKeyId(cert), undefined);
  const aki = safe(() => readAuthorityKeyId(cert), undefined);
  const fp = new Uint8Array(await crypto.subtle.digest("SHA-256", cert.rawData));
  const info: CertificateInfo = {
    subject: cert.subject,
    issuer: cert.issuer,
    serialNumber: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    selfIssued: safe(() => namesEqual(cert.subjectName, cert.issuerName), false),
    publicKey: publicKeyInfo(cert),
    signatureAlgorithm: signatureAlgorithmName(cert),
    dnsNames: sans.filter((n) => n.type === "dns").map((n) => n.value),
    ipAddresses: sans.filter((n) => n.type === "ip").map((n) => n.value),
    otherNames: sans.filter((n) => n.type !== "dns" && n.type !== "ip").map((n) => `${n.type}:${n.value}`),
    isCA: bc?.ca === true,
    keyUsage: ku ? keyUsageNames(ku.usages) : [],
    extKeyUsage: eku ? eku.oids.map(ekuName) : [],
    fingerprintSha256: colonHex(Array.from(fp, (b) => b.toString(16).padStart(2, "0")).join("")),
  };
  if (bc?.pathLength !== undefined) info.pathLength = bc.pathLength;
  if (bc) info.basicConstraintsCritical = bc.critical;
  if (ku) info.keyUsageCritical = ku.critical;
  if (ski) info.subjectKeyId = colonHex(ski);
  if (aki) info.authorityKeyId = colonHex(aki);
  return info;
}

const KU_TEXT: Record<string, string> = {
  digitalSignature: "Digital Signature",
  nonRepudiation: "Non Repudiation",
  keyEncipherment: "Key Encipherment",
  dataEncipherment: "Data Encipherment",
  keyAgreement: "Key Agreement",
  keyCertSign: "Certificate Sign",
  cRLSign: "CRL Sign",
  encipherOnly: "Encipher Only",
  decipherOnly: "Decipher Only",
};

const EKU_TEXT: Record<string, string> = {
  serverAuth: "Server Authentication",
  clientAuth: "Client Authentication",
  codeSigning: "Code Signing",
  emailProtection: "E-mail Protection",
  timeStamping: "Time Stamping",
  ocspSigning: "OCSP Signing",
  anyExtendedKeyUsage: "Any Extended Key Usage",
};

function utc(iso: string): string {
  return new Date(iso).toUTCString().replace("GMT", "UTC");
}

/** Human-readable rendering of {@linkcode describeCertificate}'s result, in the layout of `step certificate inspect`. */
export function renderCertificateText(info: CertificateInfo): string {
  const serialDec = (() => {
    try {
      return BigInt("0x" + (info.serialNumber || "0")).toString(10);
    } catch {
      return "?";
    }
  })();
  const key = info.publicKey;
  const lines = [
    "Certificate:",
    "    Data:",
    "        Version: 3 (0x2)",
    `        Serial Number: ${serialDec} (0x${info.serialNumber})`,
    `    Signature Algorithm: ${info.signatureAlgorithm}`,
    `        Issuer: ${info.issuer}`,
    "        Validity",
    `            Not Before: ${utc(info.notBefore)}`,
    `            Not After : ${utc(info.notAfter)}`,
    `        Subject: ${info.subject}`,
    "        Subject Public Key Info:",
    `            Public Key Algorithm: ${key.algorithm}`,
  ];
  if (key.size) lines.push(`                Public-Key: (${key.size} bit)`);
  if (key.curve) lines.push(`                Curve: ${key.curve}`);
  lines.push("        X509v3 extensions:");
  if (info.keyUsage.length) {
    lines.push(`            X509v3 Key Usage:${info.keyUsageCritical ? " critical" : ""}`);
    lines.push(`                ${info.keyUsage.map((k) => KU_TEXT[k] ?? k).join(", ")}`);
  }
  if (info.extKeyUsage.length) {
    lines.push("            X509v3 Extended Key Usage:");
    lines.push(`                ${info.extKeyUsage.map((k) => EKU_TEXT[k] ?? k).join(", ")}`);
  }
  if (info.basicConstraintsCritical !== undefined) {
    lines.push(`            X509v3 Basic Constraints:${info.basicConstraintsCritical ? " critical" : ""}`);
    const pl = info.pathLength !== undefined ? `, MaxPathLen:${info.pathLength}` : "";
    lines.push(`                CA:${info.isCA ? "TRUE" : "FALSE"}${info.isCA ? pl : ""}`);
  }
  if (info.subjectKeyId) {
    lines.push("            X509v3 Subject Key Identifier:");
    lines.push(`                ${info.subjectKeyId}`);
  }
  if (info.authorityKeyId) {
    lines.push("            X509v3 Authority Key Identifier:");
    lines.push(`                keyid:${info.authorityKeyId}`);
  }
  const sans = [
    ...info.dnsNames.map((n) => `DNS:${n}`),
    ...info.ipAddresses.map((n) => `IP Address:${n}`),
    ...info.otherNames,
  ];
  if (sans.length) {
    lines.push("            X509v3 Subject Alternative Name:");
    lines.push(`                ${sans.join(", ")}`);
  }
  lines.push(`    Signature Algorithm: ${info.signatureAlgorithm}`);
  lines.push(`    SHA256 Fingerprint: ${info.fingerprintSha256}`);
  return lines.join("\n") + "\n";
}

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Share of the validity period elapsed at `now`: 0 at notBefore, 1 at notAfter; below 0 before the
 * certificate is valid and above 1 after it expired.
 */
export function lifetimeFraction(cert: X509Certificate, now: Date): number {
  const start = cert.notBefore.getTime();
  const span = cert.notAfter.getTime() - start;
  if (span <= 0) return now.getTime() >= start ? Infinity : -Infinity;
  return (now.getTime() - start) / span;
}

/** Whole days until notAfter at `now` (negative once expired: -1 on the first day after). */
export function daysLeft(cert: X509Certificate, now: Date): number {
  return Math.floor((cert.notAfter.getTime() - now.getTime()) / DAY_MS);
}

/** Default share of the lifetime after which `certs check` warns (cert-manager renews at 2/3). */
export const RENEW_AT_FRACTION = 2 / 3;

/** Where a certificate stands at `now`. */
export type LifetimeStatus = "not_yet_valid" | "ok" | "renew" | "expired";

/** "renew" once `warnAt` of the lifetime has passed; "expired" after notAfter. */
export function lifetimeStatus(cert: X509Certificate, now: Date, warnAt = RENEW_AT_FRACTION): LifetimeStatus {
  if (now.getTime() < cert.notBefore.getTime()) return "not_yet_valid";
  if (now.getTime() > cert.notAfter.getTime()) return "expired";
  return lifetimeFraction(cert, now) >= warnAt ? "renew" : "ok";
}
