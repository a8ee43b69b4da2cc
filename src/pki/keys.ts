/**
 * Key pairs: generation, PKCS#8 export, import of every PEM form users bring, and the mapping from a
 * key to the one signature algorithm we use with it.
 *
 * WebCrypto only imports unencrypted PKCS#8, so every other form goes through node:crypto, which
 * decodes PKCS#1, SEC1, encrypted PKCS#8 and legacy "Proc-Type: 4,ENCRYPTED" PEM and re-exports PKCS#8.
 * @module
 */
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { InvalidInputError } from "../errors.ts";
import { decodeBase64, derToPem, findPemBlocks } from "./pem.ts";

/** The key types meshrelay issues with. */
export type KeyAlgorithm = "ecdsa-p256" | "ecdsa-p384" | "rsa-2048" | "rsa-3072" | "rsa-4096" | "ed25519";

/** Every {@linkcode KeyAlgorithm}, in the order help texts list them. */
export const KEY_ALGORITHMS: readonly KeyAlgorithm[] = [
  "ecdsa-p256",
  "ecdsa-p384",
  "rsa-2048",
  "rsa-3072",
  "rsa-4096",
  "ed25519",
];

/** A private key with its public half; both CryptoKeys, the private one extractable. */
export interface KeyPair {
  algorithm: KeyAlgorithm;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

/** True when `s` names a {@linkcode KeyAlgorithm}. */
export function isKeyAlgorithm(s: string): s is KeyAlgorithm {
  return (KEY_ALGORITHMS as readonly string[]).includes(s);
}

/** WebCrypto parameters to generate or import keys of `algorithm`. RSA keys are bound to SHA-256 at import. */
export function keyImportParams(
  algorithm: KeyAlgorithm,
): RsaHashedImportParams | EcKeyImportParams | Algorithm {
  switch (algorithm) {
    case "ecdsa-p256":
      return { name: "ECDSA", namedCurve: "P-256" };
    case "ecdsa-p384":
      return { name: "ECDSA", namedCurve: "P-384" };
    case "rsa-2048":
    case "rsa-3072":
    case "rsa-4096":
      return { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
    case "ed25519":
      return { name: "Ed25519" };
  }
}

/**
 * The signature algorithm a key of `algorithm` signs with: the hash matches the curve strength for ECDSA
 * (P-256 → SHA-256, P-384 → SHA-384), RSA uses SHA-256 with PKCS#1 v1.5 (what every TLS stack accepts).
 */
export function signatureParams(algorithm: KeyAlgorithm): Algorithm | EcdsaParams {
  switch (algorithm) {
    case "ecdsa-p256":
      return { name: "ECDSA", hash: "SHA-256" } as EcdsaParams;
    case "ecdsa-p384":
      return { name: "ECDSA", hash: "SHA-384" } as EcdsaParams;
    case "rsa-2048":
    case "rsa-3072":
    case "rsa-4096":
      return { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" } as Algorithm;
    case "ed25519":
      return { name: "Ed25519" };
  }
}

/** Default ecdsa-p256. Keys are extractable (we must store them). */
export async function generateKeyPair(algorithm: KeyAlgorithm = "ecdsa-p256"): Promise<KeyPair> {
  if (!isKeyAlgorithm(algorithm)) {
    throw new InvalidInputError(`unknown key algorithm (supported: ${KEY_ALGORITHMS.join(", ")})`);
  }
  let params: Algorithm;
  if (algorithm.startsWith("rsa-")) {
    params = {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: Number(algorithm.slice(4)),
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    } as RsaHashedKeyGenParams;
  } else {
    params = keyImportParams(algorithm);
  }
  const pair = await crypto.subtle.generateKey(params, true, ["sign", "verify"]) as CryptoKeyPair;
  return { algorithm, privateKey: pair.privateKey, publicKey: pair.publicKey };
}

/** Unencrypted PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"). */
export async function privateKeyToPem(keyPair: KeyPair): Promise<string> {
  const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keyPair.privateKey));
  return derToPem(der, "PRIVATE KEY");
}

const PRIVATE_KEY_LABELS = new Set([
  "PRIVATE KEY",
  "RSA PRIVATE KEY",
  "EC PRIVATE KEY",
  "ENCRYPTED PRIVATE KEY",
  "DSA PRIVATE KEY",
  "OPENSSH PRIVATE KEY",
]);

/**
 * The {@linkcode KeyAlgorithm} of a node:crypto key object, or a reason it is not one we accept.
 * RSA below 2048 bits and curves other than P-256/P-384 are refused: we neither issue with them nor
 * accept them in CSRs.
 */
export function classifyKeyObject(key: KeyObject): { algorithm: KeyAlgorithm } | { problem: string } {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  switch (type) {
    case "rsa": {
      const bits = details.modulusLength ?? 0;
      if (bits < 2048) return { problem: `RSA key of ${bits} bits is too weak (minimum 2048)` };
      if (bits === 2048 || bits === 3072 || bits === 4096) {
        return { algorithm: `rsa-${bits}` as KeyAlgorithm };
      }
      return { problem: `RSA key size ${bits} is not supported (use 2048, 3072 or 4096)` };
    }
    case "ec": {
      const curve = details.namedCurve;
      if (curve === "prime256v1" || curve === "P-256") return { algorithm: "ecdsa-p256" };
      if (curve === "secp384r1" || curve === "P-384") return { algorithm: "ecdsa-p384" };
      return {
        problem: `EC curve ${curve ?? "(explicit parameters)"} is not supported (use P-256 or P-384)`,
      };
    }
    case "ed25519":
      return { algorithm: "ed25519" };
    default:
      return {
        problem: `${type ?? "unknown"} keys are not supported (use ECDSA P-256/P-384, RSA or Ed25519)`,
      };
  }
}

/**
 * Accepts PKCS#8, PKCS#1 (RSA PRIVATE KEY), SEC1 (EC PRIVATE KEY), encrypted PKCS#8 and legacy encrypted
 * PEM (passphrase required); derives the public key. `what` names the input in errors, e.g. "--ca-key".
 * A bundle holding other blocks too (EC PARAMETERS, a certificate) is fine: the first key block is used.
 */
export async function importPrivateKey(
  pem: string,
  opts: { passphrase?: string; what?: string } = {},
): Promise<KeyPair> {
  const what = opts.what ?? "private key";
  if (typeof pem !== "string") throw new InvalidInputError(`${what}: expected PEM text`);
  const blocks = findPemBlocks(pem);
  const block = blocks.find((b) => PRIVATE_KEY_LABELS.has(b.label));
  if (!block) {
    if (blocks.some((b) => b.label === "CERTIFICATE")) {
      throw new InvalidInputError(`${what}: contains a certificate, not a private key`);
    }
    if (blocks.length > 0) {
      throw new InvalidInputError(`${what}: no private key in the PEM (found ${blocks[0].label})`);
    }
    throw new InvalidInputError(`${what}: not a PEM private key`);
  }
  if (block.label === "OPENSSH PRIVATE KEY") {
    throw new InvalidInputError(`${what}: OpenSSH key format is not supported (convert it to PKCS#8 PEM)`);
  }
  const encrypted = block.label === "ENCRYPTED PRIVATE KEY" || /Proc-Type:\s*4,ENCRYPTED/.test(block.text);
  if (encrypted && (opts.passphrase === undefined || opts.passphrase === "")) {
    throw new InvalidInputError(`${what}: the key is encrypted and no passphrase was given`);
  }
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey({
      key: block.text,
      format: "pem",
      passphrase: encrypted ? opts.passphrase : undefined,
    });
  } catch (e) {
    const explicit = block.label === "EC PRIVATE KEY" && !encrypted && sec1HasExplicitCurve(block.body);
    const reason = explicit ? EXPLICIT_CURVE : describeDecodeFailure(e, encrypted, block.label);
    throw new InvalidInputError(`${what}: ${reason}`, { cause: e });
  }
  const cls = classifyKeyObject(keyObject);
  if ("problem" in cls) throw new InvalidInputError(`${what}: ${cls.problem}`);
  return await keyPairFromKeyObject(keyObject, cls.algorithm, what);
}

const EXPLICIT_CURVE =
  "EC keys with explicit curve parameters are not supported (use a named curve: P-256 or P-384)";

/**
 * True when a SEC1 ECPrivateKey carries explicit ECParameters (a SEQUENCE) instead of a curve OID in its
 * [0] field; node:crypto only says "invalid SEC1 private key" for those.
 */
function sec1HasExplicitCurve(body: string): boolean {
  const der = decodeBase64(body);
  if (!der) return false;
  // SEQUENCE { INTEGER version, OCTET STRING privateKey, [0] parameters, ... }
  let i = 0;
  const header = (): { tag: number; len: number } | undefined => {
    if (i + 2 > der.length) return undefined;
    const tag = der[i++];
    let len = der[i++];
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n > 3 || i + n > der.length) return undefined;
      len = 0;
      for (let k = 0; k < n; k++) len = (len << 8) | der[i++];
    }
    return { tag, len };
  };
  const seq = header();
  if (!seq || seq.tag !== 0x30) return false;
  for (const want of [0x02, 0x04]) {
    const h = header();
    if (!h || h.tag !== want) return false;
    i += h.len;
  }
  const params = header();
  return params?.tag === 0xa0 && der[i] === 0x30;
}

function describeDecodeFailure(e: unknown, encrypted: boolean, label: string): string {
  const msg = e instanceof Error ? e.message : String(e);
  if (encrypted && /bad decrypt|wrong password|bad password/i.test(msg)) return "wrong passphrase";
  if (encrypted && /unsupported/i.test(msg)) {
    return "cannot decrypt this key (unsupported encryption; re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`)";
  }
  if (/named curve|explicit/i.test(msg)) return EXPLICIT_CURVE;
  // A wrong passphrase usually fails the padding check ("bad decrypt"), but about once in 256 it
  // decrypts to garbage with valid padding, which then fails to decode: for an encrypted key the likely
  // cause is still the passphrase.
  if (encrypted) return "wrong passphrase (or a corrupt key)";
  if (label === "DSA PRIVATE KEY") return "DSA keys are not supported";
  return `cannot decode the ${label} block (corrupt or unsupported key)`;
}

async function keyPairFromKeyObject(key: KeyObject, algorithm: KeyAlgorithm, what: string): Promise<KeyPair> {
  const pkcs8 = new Uint8Array(key.export({ type: "pkcs8", format: "der" }));
  const spki = new Uint8Array(createPublicKey(key).export({ type: "spki", format: "der" }));
  const params = keyImportParams(algorithm);
  try {
    const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, params, true, ["sign"]);
    const publicKey = await crypto.subtle.importKey("spki", spki, params, true, ["verify"]);
    return { algorithm, privateKey, publicKey };
  } catch (e) {
    throw new InvalidInputError(`${what}: the key cannot be used for signing here`, { cause: e });
  } finally {
    pkcs8.fill(0);
  }
}

/**
 * Classifies a DER SubjectPublicKeyInfo (from a certificate or CSR). Returns the algorithm or the reason
 * we refuse the key (weak RSA, unsupported curve, other key types).
 */
export function classifyPublicKey(
  spki: ArrayBuffer | Uint8Array,
): { algorithm: KeyAlgorithm } | { problem: string } {
  const key = decodeSpki(spki);
  return "problem" in key ? key : classifyKeyObject(key.key);
}

function decodeSpki(spki: ArrayBuffer | Uint8Array): { key: KeyObject } | { problem: string } {
  try {
    return {
      key: createPublicKey({ key: new Uint8Array(spki) as unknown as Buffer, format: "der", type: "spki" }),
    };
  } catch (e) {
    const msg = e instanceof Error ? e.message : "";
    if (/named curve|explicit/i.test(msg)) {
      return { problem: "EC keys with explicit curve parameters are not supported" };
    }
    return { problem: "unsupported or malformed public key" };
  }
}

/**
 * {@linkcode classifyPublicKey} that also re-encodes the key from its decoded form, so what we put in a
 * certificate is never the requester's bytes (no odd encodings or compressed points copied through).
 * node:crypto does this synchronously; WebCrypto's exportKey costs about half a millisecond here.
 */
export function canonicalPublicKey(
  spki: ArrayBuffer | Uint8Array,
): { algorithm: KeyAlgorithm; spki: Uint8Array<ArrayBuffer> } | { problem: string } {
  const key = decodeSpki(spki);
  if ("problem" in key) return key;
  const cls = classifyKeyObject(key.key);
  if ("problem" in cls) return cls;
  try {
    return {
      algorithm: cls.algorithm,
      spki: new Uint8Array(key.key.export({ type: "spki", format: "der" })),
    };
  } catch {
    return { problem: "unsupported or malformed public key" };
  }
}

/** Imports a DER SubjectPublicKeyInfo of a known algorithm as a verify-only CryptoKey. */
export async function importPublicKey(
  spki: ArrayBuffer | Uint8Array,
  algorithm: KeyAlgorithm,
): Promise<CryptoKey> {
  return await crypto.subtle.importKey("spki", new Uint8Array(spki), keyImportParams(algorithm), true, [
    "verify",
  ]);
}

/** DER SubjectPublicKeyInfo of a public CryptoKey. */
export async function exportSpki(publicKey: CryptoKey): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
}

/** The {@linkcode KeyAlgorithm} of a WebCrypto key, or undefined for a key we do not issue with. */
export function keyAlgorithmOfCryptoKey(key: CryptoKey): KeyAlgorithm | undefined {
  const alg = key.algorithm as { name: string; namedCurve?: string; modulusLength?: number };
  if (alg.name === "ECDSA") {
    if (alg.namedCurve === "P-256") return "ecdsa-p256";
    if (alg.namedCurve === "P-384") return "ecdsa-p384";
    return undefined;
  }
  if (alg.name === "Ed25519") return "ed25519";
  if (alg.name === "RSASSA-PKCS1-v1_5" || alg.name === "RSA-PSS") {
    const s = `rsa-${alg.modulusLength}`;
    return isKeyAlgorithm(s) ? s : undefined;
  }
  return undefined;
}
