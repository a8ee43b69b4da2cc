/**
 * Reading the material a `certs` command is given: PEM files named by flags (with passphrases for
 * encrypted keys from the environment or a terminal prompt, never from argv) and the secret folders an
 * earlier `certs init` wrote. Errors name the flag or file, never its content.
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import { type Issuer, loadIssuer, parseCertificates, type X509Certificate } from "../pki/mod.ts";
import { FileSecretStore } from "../store/mod.ts";
import { RELAY_ROOT_KEY_FILE, RELAY_ROOT_SECRET, RELAY_SIGNING_SECRET } from "./layout.ts";

/** PEM inputs larger than this are refused: no real certificate bundle or key comes close. */
const MAX_PEM_BYTES = 1 << 20;

/** Where passphrases come from. The CLI passes the environment and, on a terminal, a hidden prompt. */
export interface PassphraseSource {
  env(name: string): string | undefined;
  /** Asks interactively; undefined when there is no terminal. */
  prompt?: (question: string) => Promise<string | undefined>;
}

/** Reads a PEM file given by `what` (a flag name); one clear error when it is missing, too big or binary. */
export async function readPemFile(path: string, what: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    const info = await Deno.stat(path);
    if (info.isDirectory) throw new InvalidInputError(`${what} ${path} is a directory, expected a PEM file`);
    if (info.size > MAX_PEM_BYTES) throw new InvalidInputError(`${what} ${path} is too large for a PEM file`);
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof InvalidInputError) throw e;
    if (e instanceof Deno.errors.NotFound) throw new InvalidInputError(`${what} ${path}: no such file`);
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new InvalidInputError(`${what} ${path}: permission denied`);
    }
    throw new InvalidInputError(`${what} ${path}: cannot be read`, { cause: e });
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new InvalidInputError(
      `${what} ${path}: not PEM text (binary data; DER is not accepted, convert to PEM)`,
    );
  }
}

/** True when a PEM private key is encrypted (PKCS#8 ENCRYPTED PRIVATE KEY or legacy Proc-Type). */
export function isEncryptedKeyPem(pem: string): boolean {
  return /-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(pem) || /Proc-Type:\s*4,ENCRYPTED/.test(pem);
}

/**
 * The passphrase for an encrypted key: `envName` from the environment, else a prompt on a terminal.
 * Undefined for an unencrypted key. Throws InvalidInputError when it is encrypted and neither is available.
 */
export async function passphraseFor(
  pem: string,
  what: string,
  envName: string,
  source: PassphraseSource,
): Promise<string | undefined> {
  if (!isEncryptedKeyPem(pem)) return undefined;
  const fromEnv = source.env(envName);
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  const typed = await source.prompt?.(`Passphrase for ${what}: `);
  if (typed !== undefined && typed !== "") return typed;
  throw new InvalidInputError(`${what} is encrypted: set ${envName} or run on a terminal to be asked for it`);
}

/** A signing CA read from files, with the root of its chain when known. */
export interface LoadedIssuer {
  issuer: Issuer;
  /** The self-signed root this issuer chains to (the issuer itself when it is a root). */
  root?: X509Certificate;
}

/** The first self-signed certificate (subject = issuer and the signature verifies) among `certs`. */
export async function findRoot(certs: readonly X509Certificate[]): Promise<X509Certificate | undefined> {
  for (const c of certs) {
    if (c.subject === c.issuer && await c.verify({ signatureOnly: true }).catch(() => false)) return c;
  }
  return undefined;
}

/** Options of {@linkcode loadIssuerFiles}. */
export interface LoadIssuerFilesOptions {
  certPath: string;
  keyPath: string;
  /** Flag names for messages, e.g. "--ca-cert" and "--ca-key". */
  certFlag: string;
  keyFlag: string;
  /** Environment variable holding the key's passphrase. */
  passphraseEnv: string;
  passphrases: PassphraseSource;
  now: Date;
}

/**
 * A bring-your-own CA: the certificate file (the CA first, then optionally its chain up to the root) and
 * its key in PKCS#8, PKCS#1, SEC1 or encrypted PEM. Checks the key matches and that the CA may sign.
 */
export async function loadIssuerFiles(opts: LoadIssuerFilesOptions): Promise<LoadedIssuer> {
  const certPem = await readPemFile(opts.certPath, opts.certFlag);
  const keyPem = await readPemFile(opts.keyPath, opts.keyFlag);
  const certs = parseCertificates(certPem, opts.certFlag);
  const passphrase = await passphraseFor(keyPem, opts.keyFlag, opts.passphraseEnv, opts.passphrases);
  const issuer = await loadIssuer(certPem, keyPem, {
    now: opts.now,
    passphrase,
    certWhat: opts.certFlag,
    keyWhat: opts.keyFlag,
  });
  return { issuer, root: await findRoot(certs) };
}

/** The relay signing CA (and root) that `certs init` left in `dir`. */
export async function loadSigningCaFromDir(dir: string, now: Date, what = "--pki"): Promise<LoadedIssuer> {
  const secret = await new FileSecretStore(dir).get(RELAY_SIGNING_SECRET).catch((e) => {
    throw new InvalidInputError(`${what} ${dir}: cannot read ${RELAY_SIGNING_SECRET}`, { cause: e });
  });
  const crt = secret?.data["tls.crt"];
  const key = secret?.data["tls.key"];
  if (!crt || !key) {
    throw new InvalidInputError(
      `${what} ${dir} has no ${RELAY_SIGNING_SECRET}/tls.crt and tls.key (run certs init, or pass --signing-cert/--signing-key)`,
    );
  }
  const dec = new TextDecoder();
  const where = `${dir}/${RELAY_SIGNING_SECRET}`;
  const issuer = await loadIssuer(dec.decode(crt), dec.decode(key), { now, what: where });
  const ca = secret.data["ca.crt"];
  const rootCerts = ca ? parseCertificates(dec.decode(ca), `${where}/ca.crt`) : [];
  return { issuer, root: await findRoot([...rootCerts, ...(issuer.chain ?? [])]) };
}

/** The relay root CA certificate and key that `certs init` left in `dir` (the key as a file beside the secrets). */
export async function loadRootCaFromDir(dir: string, now: Date, what = "--pki"): Promise<LoadedIssuer> {
  const certPath = `${dir}/${RELAY_ROOT_SECRET}/ca.crt`;
  const keyPath = `${dir}/${RELAY_ROOT_KEY_FILE}`;
  for (const p of [certPath, keyPath]) {
    try {
      await Deno.stat(p);
    } catch {
      throw new InvalidInputError(
        `${what} ${dir} has no ${
          p.slice(dir.length + 1)
        } (the relay root CA and its key from certs init; or pass --ca-cert/--ca-key)`,
      );
    }
  }
  const issuer = await loadIssuer(
    await readPemFile(certPath, certPath),
    await readPemFile(keyPath, keyPath),
    {
      now,
      what: `${dir}/${RELAY_ROOT_SECRET}`,
    },
  );
  return { issuer, root: issuer.certificate };
}
