/**
 * Loading a signing CA (bring-your-own or our own): certificate + key, checked to be a CA that may sign,
 * valid now, and holding the key that belongs to the certificate.
 * @module
 */
import type { X509Certificate } from "@peculiar/x509";
import { InvalidInputError } from "../errors.ts";
import { checkIssuerCanSign, type Issuer } from "./issue.ts";
import {
  classifyPublicKey,
  importPrivateKey,
  importPublicKey,
  type KeyPair,
  signatureParams,
} from "./keys.ts";
import { parseCertificates } from "./pem.ts";

/** True when the private key belongs to the certificate's public key (proved by a signature, not by bytes). */
export async function keyMatchesCertificate(keyPair: KeyPair, cert: X509Certificate): Promise<boolean> {
  const certKey = classifyPublicKey(cert.publicKey.rawData);
  if ("problem" in certKey || certKey.algorithm !== keyPair.algorithm) return false;
  const challenge = crypto.getRandomValues(new Uint8Array(32));
  const params = signatureParams(keyPair.algorithm);
  try {
    const signature = await crypto.subtle.sign(params, keyPair.privateKey, challenge);
    const publicKey = await importPublicKey(cert.publicKey.rawData, certKey.algorithm);
    return await crypto.subtle.verify(params, publicKey, signature, challenge);
  } catch {
    return false;
  }
}

/**
 * Checks the issuer is a CA allowed to sign (basicConstraints CA:true, keyCertSign when keyUsage is present),
 * that the key matches the certificate, and that it is valid at `now`; throws InvalidInputError naming `what`
 * otherwise. Certificates after the first in `certPem` become the issuer's `chain`. Errors about the certificate
 * are prefixed `certWhat` (default "<what> certificate"), about the key `keyWhat` (default "<what> key"), e.g.
 * "--ca-cert" and "--ca-key".
 */
export async function loadIssuer(
  certPem: string,
  keyPem: string,
  opts: { now: Date; passphrase?: string; what?: string; certWhat?: string; keyWhat?: string },
): Promise<Issuer> {
  const what = opts.what ?? "issuer";
  const certWhat = opts.certWhat ?? `${what} certificate`;
  const [certificate, ...chain] = parseCertificates(certPem, certWhat);
  const certKey = classifyPublicKey(certificate.publicKey.rawData);
  if ("problem" in certKey) throw new InvalidInputError(`${certWhat}: ${certKey.problem}`);
  checkIssuerCanSign(certificate, certWhat);
  const now = opts.now.getTime();
  if (certificate.notAfter.getTime() < now) {
    throw new InvalidInputError(`${certWhat}: expired on ${certificate.notAfter.toISOString()}`);
  }
  if (certificate.notBefore.getTime() > now) {
    throw new InvalidInputError(`${certWhat}: not valid before ${certificate.notBefore.toISOString()}`);
  }
  const keyWhat = opts.keyWhat ?? `${what} key`;
  const keyPair = await importPrivateKey(keyPem, { passphrase: opts.passphrase, what: keyWhat });
  if (!(await keyMatchesCertificate(keyPair, certificate))) {
    // Name both inputs when the caller did (flags: "--ca-key: … the certificate in --ca-cert").
    throw new InvalidInputError(
      opts.keyWhat && opts.certWhat
        ? `${keyWhat}: the key does not belong to the certificate in ${certWhat}`
        : `${what}: the key does not belong to the certificate`,
    );
  }
  return { certificate, keyPair, chain };
}
