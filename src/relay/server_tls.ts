/**
 * The relay server's TLS on its one port: the server certificate, and (mTLS) the client trust anchors.
 *
 * Why a custom `ServerCredentials`: grpc-js' `createSsl(root, pairs, true)` asks for a client
 * certificate and requires it in one flag, which would lock out agents that have no certificate yet
 * and must call `Identity.Bootstrap`. These credentials set `requestCert: true,
 * rejectUnauthorized: false`: the handshake verifies a presented certificate against the trust
 * anchors (and grpc-js then exposes it in `getAuthContext()`), but a peer without one still connects.
 * Every handler then decides (see `peer_identity.ts`): only Bootstrap runs without a verified cert, and
 * the first Sync stream of an agent that just bootstrapped on the connection (session_binding.ts).
 *
 * The same credentials swap their secure context at run time (`updateSecureContextOptions`, which
 * grpc-js applies with `setSecureContext`), so a server certificate rotated by cert-manager is served
 * to new connections without a restart; established connections keep the old one until they end.
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import type { Clock } from "../clock.ts";
import { InvalidInputError, PreconditionError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  certificatesToPem,
  importPrivateKey,
  keyMatchesCertificate,
  parseCertificates,
  privateKeyToPem,
  type X509Certificate,
} from "../pki/mod.ts";
import type { Secret, SecretStore } from "../store/mod.ts";

/** Seeds' secret names. */
export const SERVER_TLS_SECRET = "relay-server-tls-secret";
export const ROOT_TLS_SECRET = "relay-root-tls-secret";
export const SIGNING_TLS_SECRET = "relay-tls-signing-secret";

/** A PEM server certificate chain and its key, ready for node:tls. */
export interface ServerKeyMaterial {
  certChainPem: string;
  /** Unencrypted PKCS#8 PEM. */
  keyPem: string;
}

/** `node:tls` context options from material and optional client trust PEM. */
function contextOptions(m: ServerKeyMaterial, clientCaPem?: string) {
  return {
    cert: [Buffer.from(m.certChainPem)],
    key: [Buffer.from(m.keyPem)],
    ...(clientCaPem ? { ca: Buffer.from(clientCaPem) } : {}),
  };
}

/**
 * Server credentials whose certificate (and client trust) can be replaced while serving. With
 * `clientCaPem`, a client certificate is requested but not required.
 */
export class ReloadableServerCredentials extends grpc.ServerCredentials {
  /** `handshakeTimeoutMs`: a TLS handshake not finished in time is abandoned (node:tls default 120 s). */
  constructor(material: ServerKeyMaterial, clientCaPem?: string, handshakeTimeoutMs?: number) {
    super(
      {
        ...(clientCaPem ? { requestCert: true, rejectUnauthorized: false } : { requestCert: false }),
        ...(handshakeTimeoutMs ? { handshakeTimeout: handshakeTimeoutMs } : {}),
      },
      contextOptions(material, clientCaPem),
    );
  }

  /** New connections use this material from now on. */
  update(material: ServerKeyMaterial, clientCaPem?: string): void {
    this.updateSecureContextOptions(contextOptions(material, clientCaPem));
  }

  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/** What verifies client certificates: self-signed anchors and the intermediates that lead to them. */
export interface ClientTrust {
  roots: X509Certificate[];
  intermediates: X509Certificate[];
}

function isSelfIssued(c: X509Certificate): boolean {
  return c.subject === c.issuer;
}

/** Splits certificate bundles into roots (self-issued) and intermediates, without duplicates. */
export function splitTrust(certs: X509Certificate[]): ClientTrust {
  const seen = new Set<string>();
  const out: ClientTrust = { roots: [], intermediates: [] };
  for (const c of certs) {
    const fp = c.toString("base64");
    if (seen.has(fp)) continue;
    seen.add(fp);
    (isSelfIssued(c) ? out.roots : out.intermediates).push(c);
  }
  return out;
}

/** Options of {@linkcode ServerTls}. */
export interface ServerTlsOptions {
  store: SecretStore;
  clock: Clock;
  log: Logger;
  /** Secret with `tls.crt` (leaf + chain) and `tls.key`. Default `relay-server-tls-secret`. */
  serverSecret?: string;
  /**
   * mTLS: request client certificates and verify them against `relay-root-tls-secret` `ca.crt` and
   * the signing CA (`relay-tls-signing-secret` `tls.crt`, `ca.crt`). False: simple TLS.
   */
  requestClientCert: boolean;
  rootSecret?: string;
  signingSecret?: string;
  /** How often the secrets are re-read for changes. Default 10000 ms. */
  reloadIntervalMs?: number;
  /** TLS handshake timeout. Default node:tls' (120 s); the relay server passes its connection limit. */
  handshakeTimeoutMs?: number;
}

const dec = new TextDecoder();

function text(s: Secret | undefined, key: string): string | undefined {
  const v = s?.data[key];
  return v && v.length ? dec.decode(v) : undefined;
}

type ResolvedOptions = ServerTlsOptions & { serverSecret: string; rootSecret: string; signingSecret: string };

interface Loaded {
  versions: string;
  material: ServerKeyMaterial;
  leaf: X509Certificate;
  trust?: ClientTrust;
  trustPem?: string;
}

/**
 * Loads the server's TLS material from the store, serves it through {@linkcode ReloadableServerCredentials},
 * and reloads it when the secrets change (`watch`). Invalid new material is logged and ignored: the
 * server keeps serving the last good certificate.
 */
export class ServerTls {
  readonly credentials: ReloadableServerCredentials;
  #opts: ResolvedOptions;
  #cur: Loaded;
  #listeners = new Set<(leaf: X509Certificate) => void>();

  private constructor(opts: ResolvedOptions, loaded: Loaded) {
    this.#opts = opts;
    this.#cur = loaded;
    this.credentials = new ReloadableServerCredentials(
      loaded.material,
      loaded.trustPem,
      opts.handshakeTimeoutMs,
    );
  }

  /** Reads and checks the material; throws PreconditionError / InvalidInputError naming what is missing or wrong. */
  static async load(opts: ServerTlsOptions): Promise<ServerTls> {
    const o = {
      serverSecret: SERVER_TLS_SECRET,
      rootSecret: ROOT_TLS_SECRET,
      signingSecret: SIGNING_TLS_SECRET,
      ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as ServerTlsOptions,
    };
    return new ServerTls(o, (await read(o))!);
  }

  /** The served leaf certificate. */
  get certificate(): X509Certificate {
    return this.#cur.leaf;
  }

  /** Current client trust (mTLS), re-read with the certificate. */
  get trust(): ClientTrust {
    return this.#cur.trust ?? { roots: [], intermediates: [] };
  }

  /** Called with the new leaf after each successful reload. */
  onReload(fn: (leaf: X509Certificate) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Re-reads the secrets; swaps the credentials when they changed and are valid. True when swapped. */
  async reload(): Promise<boolean> {
    const next = await read(this.#opts, this.#cur.versions);
    if (!next) return false;
    this.#cur = next;
    this.credentials.update(next.material, next.trustPem);
    this.#opts.log.info("server TLS material reloaded", {
      serial: next.leaf.serialNumber,
      notAfter: next.leaf.notAfter.toISOString(),
    });
    for (const fn of this.#listeners) fn(next.leaf);
    return true;
  }

  /** Polls for changes until `signal` aborts; waits only through `clock.sleep`. */
  async watch(signal: AbortSignal): Promise<void> {
    const every = this.#opts.reloadIntervalMs ?? 10_000;
    while (!signal.aborted) {
      try {
        await this.#opts.clock.sleep(every, signal);
      } catch {
        return;
      }
      try {
        await this.reload();
      } catch (e) {
        this.#opts.log.error(
          "server TLS material changed but is not usable; still serving the previous one",
          {
            error: e instanceof Error ? e.message : String(e),
          },
        );
      }
    }
  }
}

async function read(
  o: ResolvedOptions,
  unlessVersions?: string,
): Promise<Loaded | undefined> {
  const server = await o.store.get(o.serverSecret);
  const root = o.requestClientCert ? await o.store.get(o.rootSecret) : undefined;
  const signing = o.requestClientCert ? await o.store.get(o.signingSecret) : undefined;
  const versions = [server?.version, root?.version, signing?.version].join("/");
  if (unlessVersions !== undefined && versions === unlessVersions) return undefined;

  const crt = text(server, "tls.crt");
  const key = text(server, "tls.key");
  if (!crt || !key) {
    throw new PreconditionError(`secret ${o.serverSecret} must hold tls.crt and tls.key for TLS`);
  }
  const [leaf] = parseCertificates(crt, `${o.serverSecret} tls.crt`);
  const keyPair = await importPrivateKey(key, { what: `${o.serverSecret} tls.key` });
  if (!(await keyMatchesCertificate(keyPair, leaf))) {
    throw new InvalidInputError(`${o.serverSecret}: tls.key does not belong to tls.crt`);
  }
  const material = { certChainPem: crt, keyPem: await privateKeyToPem(keyPair) };
  if (!o.requestClientCert) return { versions, material, leaf };

  const bundle: X509Certificate[] = [];
  const rootPem = text(root, "ca.crt");
  if (rootPem) bundle.push(...parseCertificates(rootPem, `${o.rootSecret} ca.crt`));
  const signingCrt = text(signing, "tls.crt");
  if (signingCrt) bundle.push(...parseCertificates(signingCrt, `${o.signingSecret} tls.crt`));
  const signingCa = text(signing, "ca.crt");
  if (signingCa) bundle.push(...parseCertificates(signingCa, `${o.signingSecret} ca.crt`));
  const trust = splitTrust(bundle);
  if (trust.roots.length === 0) {
    throw new PreconditionError(
      `mTLS needs a root CA to verify agents: secret ${o.rootSecret} key ca.crt (or --insecure / --tls-mode tls)`,
    );
  }
  return {
    versions,
    material,
    leaf,
    trust,
    trustPem: certificatesToPem([...trust.roots, ...trust.intermediates]),
  };
}
