/**
 * Registering a workload cluster with the management server, meshctl-style, and reversing it:
 *
 * register
 * 1. reads the relay root CA (`relay-root-tls-secret` `ca.crt`) from the server's namespace in the
 *    management cluster (the server creates it at its first start, or `certs init` put it there);
 * 2. declares the `KubernetesCluster` (name = the agent's cluster name) in the management cluster, first,
 *    so the agent's Bootstrap is never refused as "not registered";
 * 3. in the workload cluster: creates the agent's namespace, writes `relay-root-tls-secret` (`ca.crt`),
 *    a fresh per-cluster bootstrap token (bound to this cluster, single use, expiring; its hash is stored
 *    in the management cluster where the server checks it) as `relay-identity-token-secret`, and, with
 *    a server address, the ConfigMap `meshrelay-agent` the shipped agent Deployment reads its cluster
 *    name and server address from;
 * 4. with `wait`, waits until the agent used the token and stored its client certificate, then deletes
 *    the bootstrap token secret.
 *
 * Every step is idempotent, so running register again completes a registration that failed half-way.
 * A cluster that is registered and whose agent already holds a valid certificate under the current root
 * gets no new token.
 *
 * deregister deletes the `KubernetesCluster` (the server then revokes the cluster's certificates and
 * closes its stream), revokes its unused bootstrap tokens, and removes the relay secrets and the
 * ConfigMap from the workload cluster.
 * @module
 */
import type { Clock } from "../clock.ts";
import { NotFoundError, PreconditionError, UnavailableError } from "../errors.ts";
import { ApiResources, isKubeStatus, type KubeClient, KubeRest, KubeSecretStore } from "../kube/mod.ts";
import { dnsNamesOf, parseCertificates } from "../pki/mod.ts";
import { IDENTITY_TOKEN_KEY, TokenAuthority, validateClusterName } from "../relay/mod.ts";
import { CONFIG_API_VERSION } from "../state/mod.ts";
import type { SecretStore } from "../store/mod.ts";
import {
  AGENT_CONFIGMAP,
  RELAY_CLIENT_SECRET_NAMES,
  RELAY_ROOT_SECRET,
  RELAY_TOKEN_SECRET,
} from "./layout.ts";
import type { Progress } from "./progress.ts";

/** Field manager of what register writes with server-side apply. */
export const REGISTER_FIELD_MANAGER = "meshrelay-certs";
/** Labels on the secrets register creates in the workload cluster. */
const SECRET_LABELS = { "app.kubernetes.io/part-of": "meshrelay" };

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The secret names register and deregister use in the workload cluster (and the root's in both). */
export interface RegistrationSecrets {
  /** `ca.crt`: relay root; read in the management cluster, written in the workload cluster. */
  rootSecret?: string;
  /** Bootstrap token secret in the workload cluster. */
  tokenSecret?: string;
  /** Its key. Default `token`. */
  tokenKey?: string;
  /** The agent's client certificate secret. */
  clientSecret?: string;
}

/** Options of {@linkcode registerCluster}. */
export interface RegisterOptions extends RegistrationSecrets {
  cluster: string;
  mgmt: KubeClient;
  /** The server's namespace (its relay secrets). */
  mgmtNamespace: string;
  remote: KubeClient;
  /** The agent's namespace in the workload cluster. */
  remoteNamespace: string;
  /** `spec.clusterDomain` of the KubernetesCluster. */
  clusterDomain: string;
  /** Labels of the KubernetesCluster (what ClusterConfig and ServiceFederation select by). */
  labels?: Record<string, string>;
  /** host:port the agent dials; written to the agent ConfigMap with the cluster name. */
  serverAddress?: string;
  /** TLS server name for SNI passthrough (agent `--authority`), also written to the ConfigMap. */
  authority?: string;
  /** Lifetime of the bootstrap token. */
  tokenTtlMs: number;
  /** Wait this long for the agent's client certificate; undefined: do not wait. */
  waitMs?: number;
  /** Poll interval while waiting. Default 1000 ms. */
  pollMs?: number;
  clock: Clock;
  progress: Progress;
}

/** What register did. */
export interface RegisterResult {
  /** True when the KubernetesCluster existed before. */
  wasRegistered: boolean;
  /** Id of the bootstrap token created (absent when the agent already had a valid certificate). */
  tokenId?: string;
  tokenExpiresAt?: Date;
  /** Serial of the agent's certificate once seen (waited for, or already there). */
  clientSerial?: string;
  /** True when the bootstrap token secret was deleted after the agent got its certificate. */
  tokenSecretDeleted: boolean;
}

interface Resolved {
  rootSecret: string;
  tokenSecret: string;
  tokenKey: string;
  clientSecret: string;
}

function resolved(s: RegistrationSecrets): Resolved {
  return {
    rootSecret: s.rootSecret ?? RELAY_ROOT_SECRET,
    tokenSecret: s.tokenSecret ?? RELAY_TOKEN_SECRET,
    tokenKey: s.tokenKey ?? IDENTITY_TOKEN_KEY,
    clientSecret: s.clientSecret ?? RELAY_CLIENT_SECRET_NAMES[0],
  };
}

const clusterPath = (name: string) => `/apis/${CONFIG_API_VERSION}/kubernetesclusters/${name}`;

/** Refuses early when the management cluster does not serve KubernetesCluster (CRDs not applied). */
async function requireClusterKind(rest: KubeRest): Promise<void> {
  const r = await new ApiResources(rest).tryResolve(CONFIG_API_VERSION, "KubernetesCluster");
  if (!r) {
    throw new PreconditionError(
      "the management cluster does not serve KubernetesCluster (meshrelay.io/v1alpha1): " +
        "apply the CRDs first (kubectl apply -f deploy/crds/)",
    );
  }
}

async function exists(rest: KubeRest, path: string): Promise<boolean> {
  try {
    await rest.request({ path });
    return true;
  } catch (e) {
    if (isKubeStatus(e, 404)) return false;
    throw e;
  }
}

async function ensureNamespace(rest: KubeRest, name: string): Promise<boolean> {
  if (await exists(rest, `/api/v1/namespaces/${name}`)) return false;
  try {
    await rest.request({
      method: "POST",
      path: "/api/v1/namespaces",
      query: { fieldManager: REGISTER_FIELD_MANAGER },
      body: { apiVersion: "v1", kind: "Namespace", metadata: { name, labels: { ...SECRET_LABELS } } },
    });
    return true;
  } catch (e) {
    if (isKubeStatus(e, 409)) return false;
    throw e;
  }
}

async function apply(rest: KubeRest, path: string, body: unknown): Promise<void> {
  await rest.request({
    method: "PATCH",
    path,
    query: { fieldManager: REGISTER_FIELD_MANAGER, force: true },
    body,
    contentType: "application/apply-patch+yaml",
  });
}

async function deleteIfPresent(rest: KubeRest, path: string): Promise<boolean> {
  try {
    await rest.request({ method: "DELETE", path });
    return true;
  } catch (e) {
    if (isKubeStatus(e, 404)) return false;
    throw e;
  }
}

/** The client certificate in `secret` when it is for `cluster`, valid at `now`, and issued under `rootPem`. */
async function validClientCert(
  store: SecretStore,
  secret: string,
  cluster: string,
  now: Date,
  rootPem?: string,
): Promise<{ serial: string } | undefined> {
  const s = await store.get(secret);
  const crt = s?.data["tls.crt"];
  if (!crt?.length || !s?.data["tls.key"]?.length) return undefined;
  try {
    const [leaf] = parseCertificates(dec.decode(crt), `${secret} tls.crt`);
    const names = dnsNamesOf(leaf);
    if (names.length !== 1 || names[0] !== cluster) return undefined;
    if (leaf.notAfter.getTime() <= now.getTime() || leaf.notBefore.getTime() > now.getTime()) {
      return undefined;
    }
    if (rootPem !== undefined) {
      const ca = s.data["ca.crt"] ? dec.decode(s.data["ca.crt"]).trim() : "";
      if (ca !== rootPem.trim()) return undefined;
    }
    return { serial: leaf.serialNumber.toLowerCase() };
  } catch {
    return undefined;
  }
}

/** Registers `cluster` (see the module comment). */
export async function registerCluster(o: RegisterOptions): Promise<RegisterResult> {
  validateClusterName(o.cluster);
  const names = resolved(o);
  const mgmtRest = new KubeRest({ kubeConfig: o.mgmt.kubeConfig });
  const remoteRest = new KubeRest({ kubeConfig: o.remote.kubeConfig });
  const mgmtStore = new KubeSecretStore({ client: o.mgmt, namespace: o.mgmtNamespace });
  const tokens = new TokenAuthority({ store: mgmtStore });

  const rootPem = await o.progress.step("reading the relay root CA (management cluster)", async () => {
    const root = (await mgmtStore.get(names.rootSecret))?.data["ca.crt"];
    if (!root?.length) {
      throw new PreconditionError(
        `no ${names.rootSecret} (ca.crt) in namespace ${o.mgmtNamespace} of the management cluster: start the ` +
          "server there with --kube (it creates its CA), or apply `meshrelay certs init --format yaml` output",
      );
    }
    return dec.decode(root);
  });
  await requireClusterKind(mgmtRest);
  const wasRegistered = await exists(mgmtRest, clusterPath(o.cluster));
  await o.progress.step(
    `declaring KubernetesCluster ${o.cluster} (management cluster)`,
    () =>
      apply(mgmtRest, clusterPath(o.cluster), {
        apiVersion: CONFIG_API_VERSION,
        kind: "KubernetesCluster",
        metadata: {
          name: o.cluster,
          ...(o.labels && Object.keys(o.labels).length ? { labels: o.labels } : {}),
        },
        spec: { clusterDomain: o.clusterDomain },
      }),
  );

  const createdNs = await o.progress.step(
    `namespace ${o.remoteNamespace} (workload cluster)`,
    () => ensureNamespace(remoteRest, o.remoteNamespace),
  );
  if (createdNs) o.progress.note(`created namespace ${o.remoteNamespace} in the workload cluster`);
  const remoteStore = new KubeSecretStore({
    client: o.remote,
    namespace: o.remoteNamespace,
    labels: SECRET_LABELS,
  });
  await remoteStore.put(names.rootSecret, { "ca.crt": enc.encode(rootPem) });
  if (o.serverAddress) {
    await apply(remoteRest, `/api/v1/namespaces/${o.remoteNamespace}/configmaps/${AGENT_CONFIGMAP}`, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: AGENT_CONFIGMAP, namespace: o.remoteNamespace, labels: { ...SECRET_LABELS } },
      data: {
        cluster: o.cluster,
        "server-address": o.serverAddress,
        ...(o.authority ? { authority: o.authority } : {}),
      },
    });
  }

  const now = o.clock.now();
  const held = await validClientCert(remoteStore, names.clientSecret, o.cluster, now, rootPem);
  if (wasRegistered && held) {
    o.progress.note(
      `${o.cluster} is registered and its agent holds a valid certificate (serial ${held.serial}); no bootstrap token needed`,
    );
    // A token left from an earlier, interrupted registration has no use any more.
    const deleted = await remoteStore.delete(names.tokenSecret);
    return { wasRegistered, clientSerial: held.serial, tokenSecretDeleted: deleted };
  }

  const created = await tokens.create(o.cluster, { now, ttlMs: o.tokenTtlMs });
  const expiresAt = new Date(now.getTime() + o.tokenTtlMs);
  await remoteStore.put(names.tokenSecret, { [names.tokenKey]: enc.encode(created.token) });
  o.progress.note(
    `bootstrap token ${created.id} for ${o.cluster} (single use, valid until ${expiresAt.toISOString()}) ` +
      `in ${o.remoteNamespace}/${names.tokenSecret}`,
  );
  const result: RegisterResult = {
    wasRegistered,
    tokenId: created.id,
    tokenExpiresAt: expiresAt,
    tokenSecretDeleted: false,
  };
  if (o.waitMs === undefined) return result;

  const serial = await o.progress.step(
    `waiting for the agent's client certificate (${names.clientSecret})`,
    () => waitForAgent(o, names, remoteStore, tokens, created.id, held?.serial, rootPem),
  );
  result.clientSerial = serial;
  result.tokenSecretDeleted = await remoteStore.delete(names.tokenSecret);
  // The agent may have used an earlier token; this one must not stay usable.
  const ours = (await tokens.list()).find((t) => t.id === created.id);
  if (ours && !ours.usedAt) await tokens.revoke(created.id);
  return result;
}

/**
 * Waits for a certificate for the cluster, under the current root, other than the one held before.
 * Which token the agent used does not matter: an agent that was already running may have bootstrapped
 * with the token of an earlier run a moment before this run replaced it.
 */
async function waitForAgent(
  o: RegisterOptions,
  names: Resolved,
  remoteStore: SecretStore,
  tokens: TokenAuthority,
  tokenId: string,
  previousSerial: string | undefined,
  rootPem: string,
): Promise<string> {
  const end = o.clock.now().getTime() + (o.waitMs ?? 0);
  const pollMs = o.pollMs ?? 1000;
  for (;;) {
    const now = o.clock.now();
    const cert = await validClientCert(remoteStore, names.clientSecret, o.cluster, now, rootPem);
    if (cert && cert.serial !== previousSerial) return cert.serial;
    if (now.getTime() >= end) {
      const used = (await tokens.list()).find((t) => t.id === tokenId)?.usedAt;
      throw new UnavailableError(
        `the agent of ${o.cluster} did not store a client certificate in ${o.remoteNamespace}/${names.clientSecret} ` +
          `in time${
            used ? " (it used the token)" : " (is the agent running with --kube in that namespace?)"
          }; ` +
          `the bootstrap token stays in ${names.tokenSecret} until it expires`,
      );
    }
    await o.clock.sleep(Math.min(pollMs, Math.max(1, end - now.getTime())));
  }
}

/** Options of {@linkcode deregisterCluster}. */
export interface DeregisterOptions extends RegistrationSecrets {
  cluster: string;
  mgmt: KubeClient;
  mgmtNamespace: string;
  /** The workload cluster; undefined when it is gone (only the management side is cleaned up). */
  remote?: KubeClient;
  remoteNamespace: string;
  progress: Progress;
}

/** What deregister did. */
export interface DeregisterResult {
  wasRegistered: boolean;
  revokedTokens: string[];
  /** Secrets and ConfigMaps deleted in the workload cluster. */
  removed: string[];
}

/** Deregisters `cluster` (see the module comment). */
export async function deregisterCluster(o: DeregisterOptions): Promise<DeregisterResult> {
  validateClusterName(o.cluster);
  const names = resolved(o);
  const mgmtRest = new KubeRest({ kubeConfig: o.mgmt.kubeConfig });
  await requireClusterKind(mgmtRest);
  const wasRegistered = await o.progress.step(
    `deleting KubernetesCluster ${o.cluster} (management cluster)`,
    () => deleteIfPresent(mgmtRest, clusterPath(o.cluster)),
  );
  if (!wasRegistered) o.progress.note(`${o.cluster} was not registered`);
  const tokens = new TokenAuthority({
    store: new KubeSecretStore({ client: o.mgmt, namespace: o.mgmtNamespace }),
  });
  const revokedTokens: string[] = [];
  for (const t of await tokens.list()) {
    if (t.cluster === o.cluster && !t.usedAt && await tokens.revoke(t.id)) revokedTokens.push(t.id);
  }
  const removed: string[] = [];
  if (o.remote) {
    const remoteRest = new KubeRest({ kubeConfig: o.remote.kubeConfig });
    const remoteStore = new KubeSecretStore({ client: o.remote, namespace: o.remoteNamespace });
    const secrets = [
      ...new Set([names.tokenSecret, names.clientSecret, ...RELAY_CLIENT_SECRET_NAMES, names.rootSecret]),
    ];
    for (const s of secrets) {
      try {
        if (await remoteStore.delete(s)) removed.push(`secret/${s}`);
      } catch (e) {
        // The namespace itself is gone: nothing left to remove there.
        if (!(e instanceof NotFoundError)) throw e;
      }
    }
    if (
      await deleteIfPresent(
        remoteRest,
        `/api/v1/namespaces/${o.remoteNamespace}/configmaps/${AGENT_CONFIGMAP}`,
      )
    ) {
      removed.push(`configmap/${AGENT_CONFIGMAP}`);
    }
  }
  return { wasRegistered, revokedTokens, removed };
}
