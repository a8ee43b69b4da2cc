/**
 * The PKI library: keys, certificates, CSRs, chain validation and inspection. Pure code: no env, argv or
 * globals; time comes in as `now`. Contract: /tmp/meshrelay/pki_api.md (names here are binding).
 * @module
 */
export type { X509Certificate } from "@peculiar/x509";
export {
  classifyPublicKey,
  generateKeyPair,
  importPrivateKey,
  isKeyAlgorithm,
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  type KeyPair,
  privateKeyToPem,
} from "./keys.ts";
export { certificatesToPem, certificateToPem, parseCertificates } from "./pem.ts";
export {
  BACKDATE_MS,
  issueCertificate,
  type IssueOptions,
  type Issuer,
  ISTIO_KEY_ALGORITHMS,
  type Profile,
  PROFILES,
} from "./issue.ts";
export { keyMatchesCertificate, loadIssuer } from "./issuer.ts";
export { createCsr, signCsr, type SignCsrOptions } from "./csr.ts";
export { dnsNamesOf, ipAddressesOf, isCa } from "./extensions.ts";
export {
  MAX_CHAIN_LENGTH,
  type Purpose,
  VerificationError,
  type VerificationReason,
  type VerifiedChain,
  verifyChain,
  type VerifyOptions,
} from "./verify.ts";
export {
  type CertificateInfo,
  daysLeft,
  describeCertificate,
  lifetimeFraction,
  type LifetimeStatus,
  lifetimeStatus,
  renderCertificateText,
  RENEW_AT_FRACTION,
} from "./describe.ts";
