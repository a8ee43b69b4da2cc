/**
 * The few DER encodings issuing needs, written directly. Building a certificate through @peculiar/x509's
 * object model serialises and re-parses every extension several times and cost most of `signCsr`'s time;
 * what we emit is a fixed, small set of structures, so we encode them here (X.690 DER: definite minimal
 * lengths, minimal INTEGERs, DEFAULT values omitted, named bit strings without trailing zero bits). Only
 * our own, already validated values go through the writer. The strict reader walks structures that
 * @peculiar/x509 has already parsed (to pick out raw parts) or our own encodings.
 * @module
 */

/** Universal tags we write. */
export const Tag = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  ia5String: 0x16,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

function lengthBytes(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}

/** One TLV: `tag` (a single identifier byte) around the concatenation of `parts`. */
export function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  let size = 0;
  for (const p of parts) size += p.length;
  const len = lengthBytes(size);
  const out = new Uint8Array(1 + len.length + size);
  out[0] = tag;
  out.set(len, 1);
  let at = 1 + len.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** SEQUENCE of the already encoded `parts`. */
export function sequence(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  return tlv(Tag.sequence, ...parts);
}

/** OBJECT IDENTIFIER from dotted text. */
export function oid(dotted: string): Uint8Array<ArrayBuffer> {
  const arcs = dotted.split(".").map(Number);
  if (arcs.length < 2 || arcs.some((a) => !Number.isSafeInteger(a) || a < 0) || arcs[0] > 2) {
    throw new RangeError(`not an OID: ${dotted}`);
  }
  const body: number[] = [];
  const push = (v: number) => {
    const septets = [v & 0x7f];
    for (v = Math.floor(v / 128); v > 0; v = Math.floor(v / 128)) septets.unshift(0x80 | (v & 0x7f));
    body.push(...septets);
  };
  push(arcs[0] * 40 + arcs[1]);
  for (const a of arcs.slice(2)) push(a);
  return tlv(Tag.oid, new Uint8Array(body));
}

/** INTEGER of an unsigned big-endian magnitude: leading zeros dropped, 0x00 added if the top bit is set. */
export function unsignedInteger(magnitude: Uint8Array): Uint8Array<ArrayBuffer> {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.subarray(i);
  if (m.length === 0) return tlv(Tag.integer, new Uint8Array([0]));
  return (m[0] & 0x80) ? tlv(Tag.integer, new Uint8Array([0]), m) : tlv(Tag.integer, m);
}

/** INTEGER of a small non-negative whole number. */
export function smallInteger(n: number): Uint8Array<ArrayBuffer> {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("smallInteger: not a non-negative integer");
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return unsignedInteger(new Uint8Array(bytes.length ? bytes : [0]));
}

/** BOOLEAN TRUE (DER writes FALSE only where no DEFAULT applies, which we never need). */
export const TRUE: Uint8Array = new Uint8Array([Tag.boolean, 1, 0xff]);

/** NULL. */
export const NULL: Uint8Array = new Uint8Array([Tag.null, 0]);

/** OCTET STRING. */
export function octetString(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return tlv(Tag.octetString, bytes);
}

/** BIT STRING holding whole bytes (a key, a signature). */
export function bitString(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return tlv(Tag.bitString, new Uint8Array([0]), bytes);
}

/**
 * A named-bit BIT STRING (e.g. keyUsage) from bit numbers set in `bits` (bit 0 = the first named bit, the
 * most significant bit of the first byte); DER drops trailing zero bits (X.690 11.2.2).
 */
export function namedBits(bits: number): Uint8Array<ArrayBuffer> {
  if (!Number.isInteger(bits) || bits < 0 || bits >= 2 ** 31) {
    throw new RangeError("namedBits: not a bit set");
  }
  if (bits === 0) return tlv(Tag.bitString, new Uint8Array([0]));
  const highest = 31 - Math.clz32(bits);
  const bytes = new Uint8Array((highest >> 3) + 1);
  for (let b = 0; b <= highest; b++) {
    if ((bits >> b) & 1) bytes[b >> 3] |= 0x80 >> (b & 7);
  }
  const unused = 7 - (highest & 7);
  return tlv(Tag.bitString, new Uint8Array([unused]), bytes);
}

const ascii = (s: string): Uint8Array => {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) throw new RangeError("not ASCII");
    out[i] = c;
  }
  return out;
};

/** `tag` around ASCII text (IA5String, or an implicitly tagged one such as a SAN dNSName). */
export function asciiString(tag: number, text: string): Uint8Array<ArrayBuffer> {
  return tlv(tag, ascii(text));
}

const two = (n: number) => String(n).padStart(2, "0");

/**
 * RFC 5280 4.1.2.5 Time at whole seconds: UTCTime for 1950–2049, GeneralizedTime otherwise. Callers keep
 * dates within years 0–9999 (GeneralizedTime has four year digits).
 */
export function time(date: Date): Uint8Array<ArrayBuffer> {
  const y = date.getUTCFullYear();
  if (!(y >= 0 && y <= 9999)) throw new RangeError("time: year outside 0..9999");
  const rest = two(date.getUTCMonth() + 1) + two(date.getUTCDate()) + two(date.getUTCHours()) +
    two(date.getUTCMinutes()) + two(date.getUTCSeconds()) + "Z";
  return y >= 1950 && y <= 2049
    ? asciiString(Tag.utcTime, two(y % 100) + rest)
    : asciiString(Tag.generalizedTime, String(y).padStart(4, "0") + rest);
}

/** A TLV found by {@linkcode readTlv}: its tag, where its contents start and end in the input. */
export interface Tlv {
  tag: number;
  start: number;
  end: number;
}

/**
 * Reads the TLV at `at` strictly (single-byte tag, definite minimal length, inside `der` up to `limit`);
 * undefined when it is not one.
 */
export function readTlv(der: Uint8Array, at: number, limit = der.length): Tlv | undefined {
  if (at + 2 > limit) return undefined;
  const tag = der[at];
  if ((tag & 0x1f) === 0x1f) return undefined;
  let len = der[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > limit || der[start] === 0) return undefined;
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + der[start + k];
    if (len < 0x80) return undefined;
    start += n;
  }
  const end = start + len;
  return end <= limit ? { tag, start, end } : undefined;
}

/** The subjectPublicKey BIT STRING contents (without the unused-bits byte) of a DER SubjectPublicKeyInfo. */
export function subjectPublicKeyBits(spki: Uint8Array): Uint8Array | undefined {
  const outer = readTlv(spki, 0);
  if (!outer || outer.tag !== Tag.sequence || outer.end !== spki.length) return undefined;
  const alg = readTlv(spki, outer.start, outer.end);
  if (!alg || alg.tag !== Tag.sequence) return undefined;
  const bits = readTlv(spki, alg.end, outer.end);
  if (!bits || bits.tag !== Tag.bitString || bits.end !== outer.end || bits.end - bits.start < 1) {
    return undefined;
  }
  if (spki[bits.start] !== 0) return undefined;
  return spki.subarray(bits.start + 1, bits.end);
}

/** ECDSA-Sig-Value (SEQUENCE of r, s) from WebCrypto's fixed-size r‖s signature. */
export function ecdsaSignatureToDer(raw: Uint8Array): Uint8Array<ArrayBuffer> {
  if (raw.length === 0 || raw.length % 2 !== 0) throw new RangeError("ECDSA signature: odd length");
  const half = raw.length / 2;
  return sequence(unsignedInteger(raw.subarray(0, half)), unsignedInteger(raw.subarray(half)));
}
