/**
 * PEM framing and certificate (de)serialisation. Parsing is strict about what it returns (every block
 * must decode) and silent about input content: errors name the input, never echo it.
 * @module
 */
import { X509Certificate } from "@peculiar/x509";
import { InvalidInputError } from "../errors.ts";

/** One "-----BEGIN X-----" … "-----END X-----" block. */
export interface PemBlock {
  /** The label, e.g. "CERTIFICATE" or "EC PRIVATE KEY". */
  label: string;
  /** The whole block including its BEGIN/END lines (what node:crypto wants). */
  text: string;
  /** The base64 body without RFC 1421 headers (Proc-Type, DEK-Info) and whitespace. */
  body: string;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

/** Every PEM block of `text`, in order. Text between blocks (openssl's "Bag Attributes", comments) is ignored. */
export function findPemBlocks(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) {
    const inner = m[2];
    // RFC 1421 headers end at the first blank line; only legacy encrypted keys have them.
    const headerEnd = /^[A-Za-z-]+:/.test(inner) ? inner.search(/\r?\n\r?\n/) : -1;
    const b64 = headerEnd >= 0 ? inner.slice(headerEnd) : inner;
    out.push({ label: m[1], text: m[0] + "\n", body: b64.replace(/\s+/g, "") });
  }
  return out;
}

/** Decodes base64 strictly; undefined when `b64` is not base64. */
export function decodeBase64(b64: string): Uint8Array<ArrayBuffer> | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) return undefined;
  try {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return undefined;
  }
}

/** Parses one DER certificate; InvalidInputError naming `what` if it is not one. */
export function parseCertificateDer(der: Uint8Array<ArrayBuffer>, what = "certificate"): X509Certificate {
  try {
    const cert = new X509Certificate(der);
    // Touch the fields every caller reads so lazy decoding errors surface here, not deep in a caller.
    void cert.subject, cert.issuer, cert.notBefore, cert.notAfter, cert.serialNumber, cert.publicKey;
    void cert.extensions, cert.signatureAlgorithm;
    return cert;
  } catch (e) {
    throw new InvalidInputError(`${what}: not a valid X.509 certificate`, { cause: e });
  }
}

/** All CERTIFICATE blocks of a PEM bundle, in order; throws if none or garbage. */
export function parseCertificates(pem: string, what = "certificate"): X509Certificate[] {
  if (typeof pem !== "string") throw new InvalidInputError(`${what}: expected PEM text`);
  const blocks = findPemBlocks(pem);
  const certBlocks = blocks.filter((b) => b.label === "CERTIFICATE" || b.label === "X509 CERTIFICATE");
  if (certBlocks.length === 0) {
    if (blocks.some((b) => b.label.endsWith("PRIVATE KEY"))) {
      throw new InvalidInputError(`${what}: contains a private key, not a certificate`);
    }
    if (blocks.some((b) => b.label === "CERTIFICATE REQUEST" || b.label === "NEW CERTIFICATE REQUEST")) {
      throw new InvalidInputError(`${what}: contains a certificate request, not a certificate`);
    }
    throw new InvalidInputError(`${what}: no PEM certificate found`);
  }
  return certBlocks.map((b, i) => {
    const label = certBlocks.length > 1 ? `${what} (certificate ${i + 1})` : what;
    const der = decodeBase64(b.body);
    if (!der || der.length === 0) throw new InvalidInputError(`${label}: PEM body is not valid base64`);
    return parseCertificateDer(der, label);
  });
}

/** PEM of one certificate; ends with "\n". */
export function certificateToPem(cert: X509Certificate): string {
  return derToPemText(new Uint8Array(cert.rawData), "CERTIFICATE");
}

/** PEM of several certificates concatenated in order (e.g. cert-chain.pem = intermediate + root). */
export function certificatesToPem(certs: X509Certificate[]): string {
  return certs.map(certificateToPem).join("");
}

function derToPemText(der: Uint8Array, label: string): string {
  let bin = "";
  for (let i = 0; i < der.length; i += 0x8000) bin += String.fromCharCode(...der.subarray(i, i + 0x8000));
  const lines = btoa(bin).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

export { derToPemText as derToPem };
