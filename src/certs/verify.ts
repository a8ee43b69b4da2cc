/**
 * `certs verify CERT --ca ROOT`: full chain validation by the pki library (signatures, validity at a
 * time, CA and pathLen, key usage, EKU for the purpose, DNS name). CERT's first certificate is the leaf;
 * any others in it, and those of `--untrusted`, are candidate intermediates.
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import { parseCertificates, type Purpose, type VerifiedChain, verifyChain } from "../pki/mod.ts";
import { readPemFile } from "./inputs.ts";

/** Options of {@linkcode verifyFiles}. */
export interface VerifyFilesOptions {
  cert: string;
  ca: string[];
  untrusted?: string[];
  purpose?: "server" | "client";
  dnsName?: string;
  now: Date;
}

const PURPOSES: Record<string, Purpose> = { server: "serverAuth", client: "clientAuth" };

/** Parses `--at` (an ISO 8601 time); InvalidInputError when it is not one. */
export function parseAt(s: string): Date {
  const d = new Date(s);
  if (!/^\d{4}-\d{2}-\d{2}/.test(s) || Number.isNaN(d.getTime())) {
    throw new InvalidInputError(`--at "${s}" is not an ISO 8601 time (e.g. 2030-01-01T00:00:00Z)`);
  }
  return d;
}

/** Verifies; resolves with the chain (leaf first) or rejects with the pki's VerificationError. */
export async function verifyFiles(opts: VerifyFilesOptions): Promise<VerifiedChain> {
  const [leaf, ...inBundle] = parseCertificates(await readPemFile(opts.cert, "CERT"), `CERT ${opts.cert}`);
  const roots = [];
  for (const f of opts.ca) roots.push(...parseCertificates(await readPemFile(f, "--ca"), `--ca ${f}`));
  const intermediates = [...inBundle];
  for (const f of opts.untrusted ?? []) {
    intermediates.push(...parseCertificates(await readPemFile(f, "--untrusted"), `--untrusted ${f}`));
  }
  if (opts.purpose !== undefined && !(opts.purpose in PURPOSES)) {
    throw new InvalidInputError(`--purpose must be server or client`);
  }
  return await verifyChain(leaf, {
    roots,
    intermediates,
    now: opts.now,
    purpose: opts.purpose ? PURPOSES[opts.purpose] : undefined,
    dnsName: opts.dnsName,
  });
}
