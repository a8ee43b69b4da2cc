/**
 * Certificate path validation we implement ourselves (X509ChainBuilder builds but does not validate, and
 * `cert.verify()` conflates a bad signature with an expired certificate).
 *
 * Path building follows issuer/subject names (RFC 5280 caseless matching) narrowed by AKI/SKI, tries every
 * candidate path (bounded), and validates each: signatures, validity at `now` of every certificate, CA
 * flag and path length, keyCertSign on issuers, EKU for the purpose across the chain, key usage and the
 * host name on the leaf, and no unknown critical extension.
 *
 * Trust anchors are handled leniently where RFC 5280 leaves it to the relying party: an anchor without a
 * keyUsage extension is accepted (the prerequisites script's root has none), and an anchor without any
 * extension (a v1 root) is taken as a CA. Intermediates get no such leniency: they must say CA:TRUE and
 * carry keyUsage with keyCertSign, as `openssl verify -x509_strict` demands.
 * @module
 */
import type { X509Certificate } from "@peculiar/x509";
import { AuthenticationError } from "../errors.ts";
import {
  EKU,
  KeyUsage,
  MalformedExtensionError,
  OID,
  readAuthorityKeyId,
  readBasicConstraints,
  readExtKeyUsage,
  readKeyUsage,
  readSubjectAltNames,
  readSubjectKeyId,
} from "./extensions.ts";
import { canonicalIp, dnsNameMatches, isIpAddress, namesEqual } from "./names.ts";
import { createPublicKey } from "node:crypto";

/** Why a chain was refused. */
export type VerificationReason =
  | "expired"
  | "not_yet_valid"
  | "bad_signature"
  | "unknown_issuer"
  | "path_length"
  | "not_a_ca"
  | "key_usage"
  | "eku"
  | "hostname"
  | "chain_too_long"
  | "loop"
  | "weak_algorithm"
  | "unsupported_critical_extension"
  | "malformed";

/** A chain failed validation; `reason` says which rule. Message names certificates by subject only. */
export class VerificationError extends AuthenticationError {
  readonly reason: VerificationReason;
  constructor(reason: VerificationReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}

/** What a leaf certificate is being used for. */
export type Purpose = "serverAuth" | "clientAuth";

/** Input of {@linkcode verifyChain}. */
export interface VerifyOptions {
  intermediates?: X509Certificate[];
  roots: X509Certificate[];
  now: Date;
  purpose?: Purpose;
  /** Must match a SAN DNS entry (wildcards: one left-most label); an IP literal must match a SAN IP entry. */
  dnsName?: string;
}

/** A validated chain: leaf first, root last. */
export interface VerifiedChain {
  chain: X509Certificate[];
}

/** Longest chain we accept, leaf and root included. */
export const MAX_CHAIN_LENGTH = 8;
/** Most candidate paths we validate before giving up (many same-named CAs, e.g. during rotation). */
const MAX_CANDIDATE_PATHS = 16;

const KNOWN_CRITICAL = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
]);

function label(cert: X509Certificate): string {
  return `certificate "${cert.subject || "(empty subject)"}"`;
}

function sameCert(a: X509Certificate, b: X509Certificate): boolean {
  const x = new Uint8Array(a.rawData);
  const y = new Uint8Array(b.rawData);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

function isSelfIssued(cert: X509Certificate): boolean {
  return namesEqual(cert.subjectName, cert.issuerName);
}

/** True when `candidate` may have issued `child`, judged by names and key identifiers (not signatures). */
function mayHaveIssued(candidate: X509Certificate, child: X509Certificate): boolean {
  if (!namesEqual(candidate.subjectName, child.issuerName)) return false;
  const akid = readAuthorityKeyId(child);
  const skid = readSubjectKeyId(candidate);
  return !(akid && skid && akid !== skid);
}

interface BuildResult {
  paths: X509Certificate[][];
  tooLong: boolean;
  loop: boolean;
}

function buildPaths(leaf: X509Certificate, roots: X509Certificate[], pool: X509Certificate[]): BuildResult {
  const result: BuildResult = { paths: [], tooLong: false, loop: false };
  const isRoot = (c: X509Certificate) => roots.some((r) => sameCert(r, c));
  const walk = (path: X509Certificate[]) => {
    if (result.paths.length >= MAX_CANDIDATE_PATHS) return;
    const cur = path[path.length - 1];
    if (isRoot(cur)) {
      result.paths.push(path);
      return;
    }
    if (path.length >= MAX_CHAIN_LENGTH) {
      result.tooLong = true;
      return;
    }
    // Roots first so the shortest trusted path is tried first.
    for (const cand of [...roots, ...pool]) {
      if (!mayHaveIssued(cand, cur)) continue;
      if (sameCert(cand, cur)) continue; // a self-signed certificate that is not trusted
      if (path.some((p) => sameCert(p, cand))) {
        result.loop = true;
        continue;
      }
      walk([...path, cand]);
    }
  };
  walk([leaf]);
  return result;
}

function fail(reason: VerificationReason, message: string): never {
  throw new VerificationError(reason, message);
}

function checkValidity(cert: X509Certificate, now: Date): void {
  if (now.getTime() < cert.notBefore.getTime()) {
    fail("not_yet_valid", `${label(cert)} is not valid before ${cert.notBefore.toISOString()}`);
  }
  if (now.getTime() > cert.notAfter.getTime()) {
    fail("expired", `${label(cert)} expired at ${cert.notAfter.toISOString()}`);
  }
}

function checkCriticalExtensions(cert: X509Certificate): void {
  for (const ext of cert.extensions) {
    if (ext.critical && !KNOWN_CRITICAL.has(ext.type)) {
      fail(
        "unsupported_critical_extension",
        `${label(cert)} has a critical extension we do not process (${ext.type})`,
      );
    }
  }
}

function checkKeyStrength(cert: X509Certificate): void {
  let key;
  try {
    key = createPublicKey({
      key: new Uint8Array(cert.publicKey.rawData) as unknown as Buffer,
      format: "der",
      type: "spki",
    });
  } catch {
    // Unknown key types cannot sign anything we verify; signature checking reports them.
    return;
  }
  if (key.asymmetricKeyType === "rsa" && (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) {
    fail("weak_algorithm", `${label(cert)} has an RSA key shorter than 2048 bits`);
  }
}

async function checkSignature(child: X509Certificate, issuer: X509Certificate): Promise<void> {
  const alg = child.signatureAlgorithm as unknown as { name?: string; hash?: { name?: string } | string };
  const hash = typeof alg?.hash === "string" ? alg.hash : alg?.hash?.name;
  if (hash && !/^SHA-(256|384|512)$/.test(hash)) {
    fail("weak_algorithm", `${label(child)} is signed with ${hash}, which is not accepted`);
  }
  let ok = false;
  try {
    ok = await child.verify({ publicKey: issuer.publicKey, signatureOnly: true });
  } catch {
    ok = false;
  }
  if (!ok) fail("bad_signature", `${label(child)} is not validly signed by ${label(issuer)}`);
}

function ekuAllows(cert: X509Certificate, purpose: Purpose): boolean {
  const eku = readExtKeyUsage(cert);
  if (!eku) return true; // absent EKU = any purpose
  return eku.oids.includes(EKU[purpose]) || eku.oids.includes(EKU.any);
}

function checkHostname(leaf: X509Certificate, host: string): void {
  const sans = readSubjectAltNames(leaf);
  let ok: boolean;
  if (isIpAddress(host)) {
    const want = canonicalIp(host);
    ok = sans.some((n) => n.type === "ip" && canonicalIp(n.value) === want);
  } else {
    // No CN fallback (RFC 6125 6.4.4 is obsolete for new certificates; Go and browsers dropped it).
    ok = sans.some((n) => n.type === "dns" && dnsNameMatches(n.value, host));
  }
  if (!ok) fail("hostname", `${label(leaf)} is not valid for the name "${host}"`);
}

async function validatePath(path: X509Certificate[], opts: VerifyOptions): Promise<void> {
  const n = path.length - 1;
  for (let i = 1; i <= n; i++) await checkSignature(path[i - 1], path[i]);
  for (const cert of path) {
    checkValidity(cert, opts.now);
    checkCriticalExtensions(cert);
    checkKeyStrength(cert);
  }
  for (let i = 1; i <= n; i++) {
    const issuer = path[i];
    const isAnchor = i === n;
    const bc = readBasicConstraints(issuer);
    if (!bc?.ca) {
      const legacyAnchor = isAnchor && issuer.extensions.length === 0;
      if (!legacyAnchor) fail("not_a_ca", `${label(issuer)} is not a CA but issued ${label(path[i - 1])}`);
    }
    const ku = readKeyUsage(issuer);
    if (ku ? (ku.usages & KeyUsage.keyCertSign) === 0 : !isAnchor) {
      fail("key_usage", `${label(issuer)} is not allowed to sign certificates (keyUsage keyCertSign)`);
    }
    if (bc?.pathLength !== undefined) {
      // Non-self-issued intermediates between this CA and the leaf (RFC 5280 6.1.4 (l), (m)).
      let below = 0;
      for (let j = 1; j < i; j++) if (!isSelfIssued(path[j])) below++;
      if (below > bc.pathLength) {
        fail(
          "path_length",
          `${label(issuer)} allows ${bc.pathLength} CA(s) below it, the chain has ${below}`,
        );
      }
    }
    if (opts.purpose && !ekuAllows(issuer, opts.purpose)) {
      fail("eku", `${label(issuer)} restricts its chain to purposes other than ${opts.purpose}`);
    }
  }
  const leaf = path[0];
  if (opts.purpose) {
    if (!ekuAllows(leaf, opts.purpose)) fail("eku", `${label(leaf)} is not valid for ${opts.purpose}`);
    const ku = readKeyUsage(leaf);
    const tlsBits = KeyUsage.digitalSignature | KeyUsage.keyEncipherment | KeyUsage.keyAgreement;
    if (ku && (ku.usages & tlsBits) === 0) {
      fail("key_usage", `${label(leaf)} key usage does not allow TLS (${opts.purpose})`);
    }
  }
  if (opts.dnsName !== undefined) checkHostname(leaf, opts.dnsName);
}

/**
 * Full validation we implement ourselves: signatures, validity at `now`, basicConstraints/pathLen, keyCertSign
 * on issuers, EKU for purpose, SAN. Throws {@linkcode VerificationError} on failure. When several paths are
 * possible (e.g. old and new intermediate with the same name), the first valid one wins; if none is valid
 * the first path's error is reported.
 */
export async function verifyChain(leaf: X509Certificate, opts: VerifyOptions): Promise<VerifiedChain> {
  if (!(opts.now instanceof Date) || Number.isNaN(opts.now.getTime())) {
    throw new VerificationError("malformed", "verification time is not a valid date");
  }
  if (!opts.roots || opts.roots.length === 0) fail("unknown_issuer", "no trusted root certificates given");
  let built: BuildResult;
  try {
    built = buildPaths(leaf, opts.roots, opts.intermediates ?? []);
  } catch (e) {
    throw asVerificationError(e, leaf);
  }
  if (built.paths.length === 0) {
    if (built.tooLong) {
      fail("chain_too_long", `${label(leaf)}: chain longer than ${MAX_CHAIN_LENGTH} certificates`);
    }
    if (built.loop) fail("loop", `${label(leaf)}: the intermediates form a loop and reach no trusted root`);
    fail(
      "unknown_issuer",
      `${label(leaf)}: issuer "${leaf.issuer}" is not a trusted root or a known intermediate`,
    );
  }
  let first: unknown;
  for (const path of built.paths) {
    try {
      await validatePath(path, opts);
      return { chain: path };
    } catch (e) {
      first ??= e;
    }
  }
  throw asVerificationError(first, leaf);
}

function asVerificationError(e: unknown, leaf: X509Certificate): VerificationError {
  if (e instanceof VerificationError) return e;
  if (e instanceof MalformedExtensionError) {
    return new VerificationError("malformed", `${label(leaf)} chain: ${e.message}`, { cause: e });
  }
  return new VerificationError("malformed", `${label(leaf)} chain: cannot be decoded`, { cause: e });
}
