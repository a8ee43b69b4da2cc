/**
 * What the seeds' chart does at install time, done by the server at startup: create the relay root CA,
 * the signing (intermediate) CA, the server certificate and the identity token when they are missing,
 * and leave alone whatever exists (bring-your-own material). Each secret is written with
 * `expectedVersion: null`, so two servers starting at once never overwrite each other: the loser
 * re-reads and uses the winner's material.
 *
 * Secrets and keys are the seeds': `relay-root-tls-secret` (`ca.crt`), `relay-tls-signing-secret`
 * (`tls.crt`, `tls.key`, `ca.crt`), `relay-server-tls-secret` (`tls.crt`, `tls.key`, `ca.crt`),
 * `relay-identity-token-secret` (`token`). The generated root's key goes to its own secret,
 * `relay-root-ca-key-secret` (`tls.crt`, `tls.key`), not into `relay-root-tls-secret`: that one is
 * copied to every workload cluster, and copying it whole must never carry the root key. With the key
 * kept, a later start can issue a missing server certificate from the same root (agents keep trusting
 * it); delete that secret to keep the root key offline (as `certs init` does with `relay-root-ca.key`).
 * The key secret is written first and acts as the lock between concurrent starts.
 * @module
 */
import { ConflictError, PreconditionError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  certificateToPem,
  generateKeyPair,
  issueCertificate,
  type Issuer,
  type KeyAlgorithm,
  type KeyPair,
  loadIssuer,
  parseCertificates,
  privateKeyToPem,
} from "../pki/mod.ts";
import type { Secret, SecretStore } from "../store/mod.ts";
import { ROOT_TLS_SECRET, SERVER_TLS_SECRET, SIGNING_TLS_SECRET } from "./server_tls.ts";
import {
  cryptoRandomBytes,
  generateSharedToken,
  IDENTITY_TOKEN_KEY,
  IDENTITY_TOKEN_SECRET,
  type RandomBytes,
} from "./tokens.ts";

const DAY = 86_400_000;

/** Where the server keeps the key of a root CA it generated (management only). */
export const ROOT_KEY_SECRET = "relay-root-ca-key-secret";

/** Security modes of the relay. */
export type SecurityMode = "insecure" | "tls" | "mtls";

/** Options of {@linkcode ensureServerMaterial}. */
export interface ServerMaterialOptions {
  store: SecretStore;
  log: Logger;
  now: Date;
  mode: SecurityMode;
  /** Create missing CA certificates and the server certificate (chart: not `disableCaCertGeneration`). */
  generateCerts: boolean;
  /** mTLS without a signing CA: agents bring their own client certificates (chart: `disableCa`). */
  disableCa: boolean;
  /** Create the identity token when missing (chart: not `disableTokenGeneration`). */
  generateToken: boolean;
  /** SANs of a generated server certificate. */
  serverDnsNames: string[];
  serverIpAddresses?: string[];
  serverSecret?: string;
  signingSecret?: string;
  rootSecret?: string;
  keyAlgorithm?: KeyAlgorithm;
  /** Lifetimes of generated certificates. Defaults: root 10 y, signing 5 y, server 1 y. */
  rootValidityMs?: number;
  signingValidityMs?: number;
  serverValidityMs?: number;
  randomBytes?: RandomBytes;
}

/** What exists after {@linkcode ensureServerMaterial}, and what it created. */
export interface ServerMaterialReport {
  created: string[];
  /** True when a signing CA is available (Bootstrap/Renew can issue). */
  canIssue: boolean;
  /** True when a shared token exists. */
  sharedToken: boolean;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const str = (s: Secret | undefined, k: string) => {
  const v = s?.data[k];
  return v && v.length ? dec.decode(v) : undefined;
};

/** Creates whatever the mode needs and is missing (see the module comment). */
export async function ensureServerMaterial(opts: ServerMaterialOptions): Promise<ServerMaterialReport> {
  const o = {
    serverSecret: SERVER_TLS_SECRET,
    signingSecret: SIGNING_TLS_SECRET,
    rootSecret: ROOT_TLS_SECRET,
    keyAlgorithm: "ecdsa-p256" as KeyAlgorithm,
    rootValidityMs: 3650 * DAY,
    signingValidityMs: 1825 * DAY,
    serverValidityMs: 365 * DAY,
    serverIpAddresses: [],
    randomBytes: cryptoRandomBytes,
    ...definedOnly(opts),
  };
  const { store, log, now } = o;
  const created: string[] = [];

  const put = async (name: string, data: Record<string, string>): Promise<boolean> => {
    try {
      await store.put(name, Object.fromEntries(Object.entries(data).map(([k, v]) => [k, enc.encode(v)])), {
        expectedVersion: null,
      });
      created.push(name);
      log.info("created secret", { secret: name });
      return true;
    } catch (e) {
      if (e instanceof ConflictError) return false; // someone else created it first: use theirs
      throw e;
    }
  };

  if (o.mode !== "insecure") {
    let rootCache: Issuer | undefined;
    const root = async (): Promise<Issuer> => {
      if (rootCache) return rootCache;
      const s = await store.get(o.rootSecret);
      const k = await store.get(ROOT_KEY_SECRET);
      const keyCrt = str(k, "tls.crt");
      const keyPem = str(k, "tls.key");
      if (!s && keyCrt && keyPem) {
        // Another start got as far as the key (it is written first, as the lock): finish its work.
        await put(o.rootSecret, { "ca.crt": keyCrt });
        return rootCache = await loadIssuer(keyCrt, keyPem, { now, what: ROOT_KEY_SECRET });
      }
      if (!s) {
        if (!o.generateCerts) {
          throw new PreconditionError(
            `secret ${o.rootSecret} is missing and certificate generation is disabled`,
          );
        }
        const kp = await generateKeyPair(o.keyAlgorithm);
        const cert = await issueCertificate({
          profile: "root-ca",
          subject: "CN=meshrelay-relay-root-ca,O=meshrelay",
          publicKey: kp.publicKey,
          selfSignKey: kp,
          now,
          validityMs: o.rootValidityMs,
        });
        const pem = certificateToPem(cert);
        if (await put(ROOT_KEY_SECRET, { "tls.crt": pem, "tls.key": await privateKeyToPem(kp) })) {
          await put(o.rootSecret, { "ca.crt": pem });
          return rootCache = { certificate: cert, keyPair: kp };
        }
        return await root();
      }
      // Use the kept key only if it belongs to a root that relay-root-tls-secret still publishes.
      const published = parseCertificates(str(s, "ca.crt") ?? "", `${o.rootSecret} ca.crt`);
      const kept = keyCrt ? parseCertificates(keyCrt, ROOT_KEY_SECRET)[0] : undefined;
      if (!kept || !keyPem || !published.some((c) => c.toString("base64") === kept.toString("base64"))) {
        throw new PreconditionError(
          `cannot create missing certificates: the key of the root CA in ${o.rootSecret} is not available ` +
            `(secret ${ROOT_KEY_SECRET}); provide ${o.serverSecret}${
              o.mode === "mtls" && !o.disableCa ? ` and ${o.signingSecret}` : ""
            } yourself`,
        );
      }
      return rootCache = await loadIssuer(keyCrt!, keyPem, { now, what: ROOT_KEY_SECRET });
    };

    if (o.mode === "mtls" && !o.disableCa && !(await store.get(o.signingSecret))) {
      if (!o.generateCerts) {
        throw new PreconditionError(
          `secret ${o.signingSecret} is missing and certificate generation is disabled (use --disable-ca for ` +
            `bring-your-own client certificates)`,
        );
      }
      const r = await root();
      const kp = await generateKeyPair(o.keyAlgorithm);
      const cert = await issueCertificate({
        profile: "intermediate-ca",
        subject: "CN=meshrelay-relay-signing-ca,O=meshrelay",
        publicKey: kp.publicKey,
        issuer: r,
        now,
        validityMs: o.signingValidityMs,
      });
      await put(o.signingSecret, {
        "tls.crt": certificateToPem(cert),
        "tls.key": await privateKeyToPem(kp),
        "ca.crt": certificateToPem(r.certificate),
      });
    }

    if (!(await store.get(o.serverSecret))) {
      if (!o.generateCerts) {
        throw new PreconditionError(
          `secret ${o.serverSecret} is missing and certificate generation is disabled`,
        );
      }
      const r = await root();
      const kp: KeyPair = await generateKeyPair(o.keyAlgorithm);
      const cert = await issueCertificate({
        profile: "server",
        subject: "CN=meshrelay-relay-server,O=meshrelay",
        dnsNames: o.serverDnsNames,
        ipAddresses: o.serverIpAddresses,
        publicKey: kp.publicKey,
        issuer: r,
        now,
        validityMs: o.serverValidityMs,
      });
      await put(o.serverSecret, {
        "tls.crt": certificateToPem(cert),
        "tls.key": await privateKeyToPem(kp),
        "ca.crt": certificateToPem(r.certificate),
      });
    }
  }

  if (o.generateToken && o.mode !== "insecure" && !(await store.get(IDENTITY_TOKEN_SECRET))) {
    await put(IDENTITY_TOKEN_SECRET, { [IDENTITY_TOKEN_KEY]: generateSharedToken(o.randomBytes) });
  }

  return {
    created,
    canIssue: o.mode !== "insecure" && await hasSigningCa(store, o.signingSecret),
    sharedToken: !!str(await store.get(IDENTITY_TOKEN_SECRET), IDENTITY_TOKEN_KEY)?.trim(),
  };
}

async function hasSigningCa(store: SecretStore, name: string): Promise<boolean> {
  const s = await store.get(name);
  return !!(str(s, "tls.crt") && str(s, "tls.key"));
}

/** Loads the signing CA (`relay-tls-signing-secret`) as an issuer, or undefined when it does not exist. */
export async function loadSigningIssuer(
  store: SecretStore,
  opts: { now: Date; name?: string },
): Promise<{ issuer: Issuer; version: string } | undefined> {
  const name = opts.name ?? SIGNING_TLS_SECRET;
  return await signingIssuerFrom(await store.get(name), { now: opts.now, name });
}

/** {@linkcode loadSigningIssuer} on a secret already read (e.g. through a cache). */
export async function signingIssuerFrom(
  s: Secret | undefined,
  opts: { now: Date; name: string },
): Promise<{ issuer: Issuer; version: string } | undefined> {
  const name = opts.name;
  const crt = str(s, "tls.crt");
  const key = str(s, "tls.key");
  if (!s || !crt || !key) return undefined;
  const issuer = await loadIssuer(crt, key, { now: opts.now, what: name });
  const ca = str(s, "ca.crt");
  if (ca) {
    // Chain for the agent: the signing CA and what is above it, roots excluded.
    const above = parseCertificates(ca, `${name} ca.crt`).filter((c) => c.subject !== c.issuer);
    issuer.chain = [...(issuer.chain ?? []), ...above];
  }
  return { issuer, version: s.version };
}

/** `opts` without its undefined entries, so spreading it over defaults keeps the defaults. */
export function definedOnly<T extends object>(opts: T): T {
  return Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as T;
}
