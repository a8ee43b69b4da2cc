/**
 * `certs agent` and `certs server`: one client or server certificate from a signing CA, as a
 * `tls.crt`/`tls.key`/`ca.crt` secret.
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import { generateKeyPair, issueCertificate, type KeyAlgorithm, privateKeyToPem } from "../pki/mod.ts";
import { chainBelowRoot } from "./init.ts";
import type { LoadedIssuer } from "./inputs.ts";
import { tlsSecret } from "./layout.ts";
import type { PlannedSecret } from "./output.ts";
import type { Progress } from "./progress.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

/** Options of {@linkcode issueLeafSecret}. */
export interface LeafOptions {
  kind: "client" | "server";
  /** Secret name (e.g. relay-client-tls-secret). */
  secretName: string;
  namespace: string;
  /** SAN DNS names; for a relay client exactly the cluster name. */
  dnsNames: string[];
  ipAddresses?: string[];
  days: number;
  keyAlgorithm: KeyAlgorithm;
  signer: LoadedIssuer;
  now: Date;
  progress: Progress;
}

/** Issues the certificate and lays it out as a secret. */
export async function issueLeafSecret(opts: LeafOptions): Promise<PlannedSecret> {
  if (!(Number.isInteger(opts.days) && opts.days > 0)) {
    throw new InvalidInputError("--days must be a positive whole number");
  }
  if (opts.dnsNames.length === 0 && (opts.ipAddresses ?? []).length === 0) {
    throw new InvalidInputError(`the ${opts.kind} certificate needs at least one name`);
  }
  const root = opts.signer.root;
  if (!root) {
    throw new InvalidInputError(
      "cannot find the root CA of the signing CA: append it to --signing-cert or pass --root-cert",
    );
  }
  const key = await opts.progress.step(
    `${opts.kind} key (${opts.keyAlgorithm})`,
    () => generateKeyPair(opts.keyAlgorithm),
  );
  const cert = await opts.progress.step(`${opts.kind} certificate`, () =>
    issueCertificate({
      profile: opts.kind,
      subject: `CN=${opts.dnsNames[0] ?? opts.ipAddresses![0]},O=meshrelay`,
      dnsNames: opts.dnsNames,
      ipAddresses: opts.ipAddresses,
      publicKey: key.publicKey,
      issuer: opts.signer.issuer,
      now: opts.now,
      validityMs: opts.days * DAY_MS,
    }));
  return tlsSecret(opts.secretName, opts.namespace, {
    certificate: cert,
    chain: chainBelowRoot(opts.signer.issuer, root),
    keyPem: await privateKeyToPem(key),
    root,
  });
}
