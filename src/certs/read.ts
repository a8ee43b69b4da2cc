/**
 * Finding certificates to read: every CERTIFICATE block of one PEM file, or of every file under a folder
 * (a secret folder, or the whole `--out` of `certs init`). Keys and tokens are skipped, never printed.
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import { parseCertificates, type X509Certificate } from "../pki/mod.ts";
import { readPemFile } from "./inputs.ts";

/** One certificate and where it was found. */
export interface FoundCertificate {
  path: string;
  /** 0-based position in its file. */
  index: number;
  /** Number of certificates in its file. */
  of: number;
  certificate: X509Certificate;
}

async function walk(dir: string, out: string[]): Promise<void> {
  const entries: Deno.DirEntry[] = [];
  for await (const e of Deno.readDir(dir)) entries.push(e);
  entries.sort((a, b) => a.name.localeCompare(b.name));
  for (const e of entries) {
    // Hidden entries are the store's locks, temp and staging folders.
    if (e.name.startsWith(".")) continue;
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) await walk(p, out);
    else if (e.isFile) out.push(p);
  }
}

/**
 * Every certificate in `path` (`what` names the argument in errors). A file must hold at least one
 * certificate; a folder must hold at least one file that does.
 */
export async function collectCertificates(path: string, what: string): Promise<FoundCertificate[]> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new InvalidInputError(`${what} ${path}: no such file or directory`);
    }
    throw new InvalidInputError(`${what} ${path}: cannot be read`, { cause: e });
  }
  const found: FoundCertificate[] = [];
  if (!info.isDirectory) {
    const text = await readPemFile(path, what);
    if (!text.includes("-----BEGIN CERTIFICATE-----") && /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
      throw new InvalidInputError(`${what} ${path} holds a private key, not a certificate`);
    }
    const certs = parseCertificates(text, `${what} ${path}`);
    certs.forEach((certificate, index) => found.push({ path, index, of: certs.length, certificate }));
    return found;
  }
  const files: string[] = [];
  try {
    await walk(path.replace(/\/+$/, ""), files);
  } catch (e) {
    throw new InvalidInputError(`${what} ${path}: cannot be listed`, { cause: e });
  }
  for (const f of files) {
    let text: string;
    try {
      text = await readPemFile(f, what);
    } catch {
      continue;
    }
    if (!text.includes("-----BEGIN CERTIFICATE-----")) continue;
    const certs = parseCertificates(text, f);
    certs.forEach((certificate, index) => found.push({ path: f, index, of: certs.length, certificate }));
  }
  if (found.length === 0) {
    throw new InvalidInputError(`${what} ${path}: no certificate found in this directory`);
  }
  return found;
}
