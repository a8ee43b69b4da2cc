/**
 * The names the seeds give the relay and Istio secrets, their keys, and where `certs` keeps the CA keys
 * that belong in no cluster. One folder per secret, one file per key (the FileSecretStore layout).
 * @module
 */
import { certificatesToPem, type X509Certificate } from "../pki/mod.ts";
import type { PlannedSecret } from "./output.ts";

/** `ca.crt`: the relay root; management and every workload cluster. */
export const RELAY_ROOT_SECRET = "relay-root-tls-secret";
/** `tls.crt`, `tls.key`, `ca.crt`: the intermediate that signs agent client certificates; management only. */
export const RELAY_SIGNING_SECRET = "relay-tls-signing-secret";
/** `tls.crt`, `tls.key`, `ca.crt`: the relay server's certificate; management only. */
export const RELAY_SERVER_SECRET = "relay-server-tls-secret";
/** `token`: the shared bootstrap token. */
export const RELAY_TOKEN_SECRET = "relay-identity-token-secret";
/** `tls.crt`, `tls.key`, `ca.crt`: an agent's client certificate; the seeds use both spellings. */
export const RELAY_CLIENT_SECRET_NAMES = ["relay-client-tls-secret", "relay-tls-client-secret"] as const;
/** Istio's plug-in CA secret in `istio-system`. */
export const ISTIO_SECRET = "cacerts";
/** Default namespaces. */
export const RELAY_NAMESPACE = "gloo-mesh";
export const ISTIO_NAMESPACE = "istio-system";

/**
 * The relay root CA's private key, kept as a plain file beside the secret folders: it is in no secret,
 * so nothing that syncs the folders to a cluster carries it. Move it offline after `init`.
 */
export const RELAY_ROOT_KEY_FILE = "relay-root-ca.key";
/** Istio material lives under this folder of `--out`: the root of `separate-roots`, and one store per cluster. */
export const ISTIO_DIR = "istio";
export const ISTIO_ROOT_CERT_FILE = `${ISTIO_DIR}/root-cert.pem`;
export const ISTIO_ROOT_KEY_FILE = `${ISTIO_DIR}/root-key.pem`;
/** Store folder (relative to `--out`) of one cluster's `cacerts`. */
export const istioStoreDir = (cluster: string) => `${ISTIO_DIR}/${cluster}`;

const enc = new TextEncoder();
const bytes = (s: string) => enc.encode(s);

/** A certificate, what it chains through (excluding the root), its key and the root: a `kubernetes.io/tls`-style secret. */
export interface TlsMaterial {
  certificate: X509Certificate;
  /** Intermediates between `certificate` and the root, nearest first. */
  chain: readonly X509Certificate[];
  keyPem: string;
  root: X509Certificate;
}

/** `tls.crt` (leaf + intermediates), `tls.key`, `ca.crt` (root). */
export function tlsSecret(name: string, namespace: string, m: TlsMaterial): PlannedSecret {
  return {
    name,
    namespace,
    data: {
      "tls.crt": bytes(certificatesToPem([m.certificate, ...m.chain])),
      "tls.key": bytes(m.keyPem),
      "ca.crt": bytes(certificatesToPem([m.root])),
    },
  };
}

/** `relay-root-tls-secret`: only `ca.crt`. */
export function rootSecret(namespace: string, root: X509Certificate): PlannedSecret {
  return { name: RELAY_ROOT_SECRET, namespace, data: { "ca.crt": bytes(certificatesToPem([root])) } };
}

/** `relay-identity-token-secret`: `token`, written without a trailing newline (compared byte for byte). */
export function tokenSecret(namespace: string, token: string): PlannedSecret {
  return { name: RELAY_TOKEN_SECRET, namespace, data: { token: bytes(token) } };
}

/**
 * Istio's `cacerts`: `ca-cert.pem` (the intermediate Istio signs with), `ca-key.pem`, `root-cert.pem`,
 * `cert-chain.pem` (intermediate, any CAs between it and the root, then the root).
 */
export function istioCacertsSecret(cluster: string, namespace: string, m: TlsMaterial): PlannedSecret {
  return {
    storeDir: istioStoreDir(cluster),
    name: ISTIO_SECRET,
    namespace,
    data: {
      "ca-cert.pem": bytes(certificatesToPem([m.certificate])),
      "ca-key.pem": bytes(m.keyPem),
      "root-cert.pem": bytes(certificatesToPem([m.root])),
      "cert-chain.pem": bytes(certificatesToPem([m.certificate, ...m.chain, m.root])),
    },
  };
}

/** 32 random bytes as unpadded base64url: the relay identity token. */
export function newToken(random: (bytes: Uint8Array) => Uint8Array): string {
  const b = random(new Uint8Array(32));
  return btoa(String.fromCharCode(...b)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** ConfigMap in the agent's namespace that the shipped agent Deployment reads its settings from. */
export const AGENT_CONFIGMAP = "meshrelay-agent";
