/**
 * Reading X.509 extensions by OID. Lookup is by OID, not by class, because @peculiar/x509's lookup by
 * class returns null for CSR extensions (field notes) and we want one code path for certificates and CSRs;
 * an extension the library did not already decode as the typed class is decoded from its bytes. Malformed
 * extensions raise MalformedExtensionError so callers can map them to their own error (InvalidInputError
 * for input, VerificationError in a chain).
 * @module
 */
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsageExtension,
  type Extension,
  KeyUsagesExtension,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  type X509Certificate,
} from "@peculiar/x509";

/** OIDs of the extensions we read or write. */
export const OID = {
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  nameConstraints: "2.5.29.30",
  certificatePolicies: "2.5.29.32",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
} as const;

/** EKU OIDs by the names we use. */
export const EKU = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  codeSigning: "1.3.6.1.5.5.7.3.3",
  emailProtection: "1.3.6.1.5.5.7.3.4",
  timeStamping: "1.3.6.1.5.5.7.3.8",
  ocspSigning: "1.3.6.1.5.5.7.3.9",
  any: "2.5.29.37.0",
} as const;

/** Key usage bits as @peculiar/x509 numbers them (bit 0 = digitalSignature). */
export const KeyUsage = {
  digitalSignature: 1,
  nonRepudiation: 2,
  keyEncipherment: 4,
  dataEncipherment: 8,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
  encipherOnly: 128,
  decipherOnly: 256,
} as const;

/** An extension exists but cannot be decoded. */
export class MalformedExtensionError extends Error {
  constructor(readonly extension: string, options?: { cause?: unknown }) {
    super(`malformed ${extension} extension`, options);
    this.name = "MalformedExtensionError";
  }
}

/** Something with extensions: a certificate or a CSR. */
export interface HasExtensions {
  extensions: Extension[];
}

function only(holder: HasExtensions, oid: string, name: string): Extension | undefined {
  const found = holder.extensions.filter((e) => e.type === oid);
  // RFC 5280 4.2: a certificate must not include more than one instance of an extension.
  if (found.length > 1) throw new MalformedExtensionError(`duplicate ${name}`);
  return found[0];
}

/**
 * `ext` as the typed class `Type`: the instance itself when the library already decoded it as one (a
 * certificate's or our CSR reader's extensions come from ExtensionFactory), else decoded from its bytes.
 */
function typed<T extends Extension>(ext: Extension, Type: new (raw: ArrayBuffer) => T): T {
  return ext instanceof Type ? ext : new Type(ext.rawData);
}

function decode<T>(name: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw new MalformedExtensionError(name, { cause: e });
  }
}

/** basicConstraints, or undefined when absent. */
export function readBasicConstraints(
  holder: HasExtensions,
): { ca: boolean; pathLength?: number; critical: boolean } | undefined {
  const ext = only(holder, OID.basicConstraints, "basicConstraints");
  if (!ext) return undefined;
  return decode("basicConstraints", () => {
    const bc = typed(ext, BasicConstraintsExtension);
    return { ca: bc.ca === true, pathLength: bc.pathLength, critical: ext.critical };
  });
}

/** keyUsage bit set, or undefined when absent. */
export function readKeyUsage(holder: HasExtensions): { usages: number; critical: boolean } | undefined {
  const ext = only(holder, OID.keyUsage, "keyUsage");
  if (!ext) return undefined;
  return decode(
    "keyUsage",
    () => ({ usages: typed(ext, KeyUsagesExtension).usages, critical: ext.critical }),
  );
}

/** extKeyUsage OIDs, or undefined when absent (absent means any purpose). */
export function readExtKeyUsage(holder: HasExtensions): { oids: string[]; critical: boolean } | undefined {
  const ext = only(holder, OID.extKeyUsage, "extKeyUsage");
  if (!ext) return undefined;
  return decode("extKeyUsage", () => ({
    oids: Array.from(typed(ext, ExtendedKeyUsageExtension).usages, String),
    critical: ext.critical,
  }));
}

/** One subjectAltName entry as @peculiar/x509 names its types ("dns", "ip", "url", "email", …). */
export interface AltName {
  type: string;
  value: string;
}

/** subjectAltName entries, [] when absent. */
export function readSubjectAltNames(holder: HasExtensions): AltName[] {
  const ext = only(holder, OID.subjectAltName, "subjectAltName");
  if (!ext) return [];
  return decode(
    "subjectAltName",
    () =>
      typed(ext, SubjectAlternativeNameExtension).names.items.map((n) => ({
        type: n.type,
        value: n.value,
      })),
  );
}

/** subjectKeyIdentifier as lowercase hex, or undefined. */
export function readSubjectKeyId(holder: HasExtensions): string | undefined {
  const ext = only(holder, OID.subjectKeyIdentifier, "subjectKeyIdentifier");
  if (!ext) return undefined;
  return decode(
    "subjectKeyIdentifier",
    () => typed(ext, SubjectKeyIdentifierExtension).keyId.toLowerCase(),
  );
}

/** authorityKeyIdentifier keyIdentifier as lowercase hex, or undefined (absent or issuer/serial form only). */
export function readAuthorityKeyId(holder: HasExtensions): string | undefined {
  const ext = only(holder, OID.authorityKeyIdentifier, "authorityKeyIdentifier");
  if (!ext) return undefined;
  return decode(
    "authorityKeyIdentifier",
    () => typed(ext, AuthorityKeyIdentifierExtension).keyId?.toLowerCase(),
  );
}

/** The DNS subjectAltNames of a certificate, in order. */
export function dnsNamesOf(cert: X509Certificate): string[] {
  return readSubjectAltNames(cert).filter((n) => n.type === "dns").map((n) => n.value);
}

/** The IP subjectAltNames of a certificate, in order. */
export function ipAddressesOf(cert: X509Certificate): string[] {
  return readSubjectAltNames(cert).filter((n) => n.type === "ip").map((n) => n.value);
}

/** True when the certificate has basicConstraints CA:TRUE. */
export function isCa(cert: X509Certificate): boolean {
  try {
    return readBasicConstraints(cert)?.ca === true;
  } catch {
    return false;
  }
}

/** Names of the set key usage bits, in RFC 5280 order. */
export function keyUsageNames(usages: number): string[] {
  return Object.entries(KeyUsage).filter(([, bit]) => (usages & bit) !== 0).map(([name]) => name);
}

/** A readable name for an EKU OID (the OID itself when unknown). */
export function ekuName(oid: string): string {
  const hit = Object.entries(EKU).find(([, v]) => v === oid);
  if (!hit) return oid;
  return hit[0] === "any" ? "anyExtendedKeyUsage" : hit[0];
}
