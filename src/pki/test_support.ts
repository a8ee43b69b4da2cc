/**
 * Helpers for the pki unit tests only (not exported from mod.ts): running openssl, temp dirs, and a
 * low-level certificate maker that can produce the malformed or non-conforming certificates our own
 * issueCertificate refuses to make.
 * @module
 */
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  type Extension,
  KeyUsagesExtension,
  SubjectKeyIdentifierExtension,
  type X509Certificate,
  X509CertificateGenerator,
} from "@peculiar/x509";
import { generateKeyPair, type KeyAlgorithm, type KeyPair, signatureParams } from "./keys.ts";
import { issueCertificate, type Issuer, keyIdOf } from "./issue.ts";
import { KeyUsage } from "./extensions.ts";

/** Result of one openssl run. */
export interface OpensslResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs openssl with `args` in `cwd`; never throws on a non-zero exit. */
export async function openssl(
  args: string[],
  opts: { cwd?: string; stdin?: string } = {},
): Promise<OpensslResult> {
  const cmd = new Deno.Command("openssl", {
    args,
    cwd: opts.cwd,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const child = cmd.spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs openssl and throws with its stderr when it fails (for fixture generation). */
export async function opensslOk(
  args: string[],
  opts: { cwd?: string; stdin?: string } = {},
): Promise<string> {
  const r = await openssl(args, opts);
  if (r.code !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/** Runs `fn` with a fresh temp dir that is removed afterwards. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-pki-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The fixed instant the unit tests use as "now". */
export const NOW = new Date("2030-01-15T12:00:00Z");
/** One day in ms. */
export const DAY = 24 * 60 * 60 * 1000;

/** A CA built with our own issueCertificate. */
export interface TestCa extends Issuer {
  keyPair: KeyPair;
}

/** Root → intermediate made with the library's defaults. */
export async function makeCaPair(
  opts: { rootAlg?: KeyAlgorithm; intAlg?: KeyAlgorithm; now?: Date } = {},
): Promise<{ root: TestCa; intermediate: TestCa }> {
  const now = opts.now ?? NOW;
  const rk = await generateKeyPair(opts.rootAlg ?? "ecdsa-p256");
  const rootCert = await issueCertificate({
    profile: "root-ca",
    subject: "CN=test-root,O=meshrelay",
    publicKey: rk.publicKey,
    selfSignKey: rk,
    now,
    validityMs: 3650 * DAY,
  });
  const ik = await generateKeyPair(opts.intAlg ?? "ecdsa-p256");
  const intCert = await issueCertificate({
    profile: "intermediate-ca",
    subject: "CN=test-intermediate,O=meshrelay",
    publicKey: ik.publicKey,
    issuer: { certificate: rootCert, keyPair: rk },
    now,
    validityMs: 365 * DAY,
  });
  return {
    root: { certificate: rootCert, keyPair: rk },
    intermediate: { certificate: intCert, keyPair: ik, chain: [rootCert] },
  };
}

/** Parameters of {@linkcode rawCert}: everything explicit, nothing checked. */
export interface RawCertOptions {
  subject: string;
  issuerName?: string;
  publicKey: CryptoKey;
  /** Signs the certificate; self-signed when `issuerKey` is the subject's own key. */
  signer: KeyPair;
  /** The issuer's certificate, for the AKI; omitted → AKI from the signer's public key. */
  issuerCert?: X509Certificate;
  notBefore?: Date;
  notAfter?: Date;
  ca?: boolean;
  pathLength?: number;
  /** keyUsage bits; null → no keyUsage extension. Default: CA → keyCertSign|cRLSign, else digitalSignature. */
  keyUsage?: number | null;
  extraExtensions?: Extension[];
  /** Leave out SKI and AKI (as some foreign CAs do). */
  noKeyIds?: boolean;
  /** Leave out basicConstraints entirely. */
  noBasicConstraints?: boolean;
  signingAlgorithm?: Algorithm | EcdsaParams;
}

/** Makes a certificate exactly as told, for tests of verification of non-conforming chains. */
export async function rawCert(o: RawCertOptions): Promise<X509Certificate> {
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", o.publicKey));
  const signerSpki = new Uint8Array(await crypto.subtle.exportKey("spki", o.signer.publicKey));
  const ext: Extension[] = [];
  if (!o.noBasicConstraints) ext.push(new BasicConstraintsExtension(o.ca ?? false, o.pathLength, true));
  const ku = o.keyUsage === undefined
    ? (o.ca ? KeyUsage.keyCertSign | KeyUsage.cRLSign : KeyUsage.digitalSignature)
    : o.keyUsage;
  if (ku !== null) ext.push(new KeyUsagesExtension(ku, true));
  if (!o.noKeyIds) {
    ext.push(new SubjectKeyIdentifierExtension(await keyIdOf(spki)));
    ext.push(
      new AuthorityKeyIdentifierExtension(await keyIdOf(o.issuerCert?.publicKey.rawData ?? signerSpki)),
    );
  }
  ext.push(...(o.extraExtensions ?? []));
  return await X509CertificateGenerator.create({
    subject: o.subject,
    issuer: o.issuerCert ? o.issuerCert.subjectName : (o.issuerName ?? o.subject),
    notBefore: o.notBefore ?? new Date(NOW.getTime() - DAY),
    notAfter: o.notAfter ?? new Date(NOW.getTime() + 30 * DAY),
    publicKey: spki,
    signingKey: o.signer.privateKey,
    signingAlgorithm: o.signingAlgorithm ?? signatureParams(o.signer.algorithm),
    extensions: ext,
  });
}
