/**
 * The Kubernetes clients every backend in src/kube uses, built from a KubeConfig the caller loaded.
 *
 * Where the KubeConfig comes from (kubeconfig file, in-cluster service account, flags) is decided by
 * src/server.ts, src/agent.ts and src/certs.ts; this module never reads the environment.
 * @module
 */
import { AppsV1Api, CoreV1Api, KubeConfig, KubernetesObjectApi } from "@kubernetes/client-node";
import { InvalidInputError } from "../errors.ts";

/** Typed and generic API clients for one cluster, sharing one KubeConfig (one identity, one server). */
export interface KubeClient {
  readonly kubeConfig: KubeConfig;
  /** The API server URL, for messages. */
  readonly server: string;
  readonly core: CoreV1Api;
  readonly apps: AppsV1Api;
  /** Any kind by apiVersion/kind (custom resources, server-side apply). */
  readonly objects: KubernetesObjectApi;
}

/** Inline connection settings for {@linkcode buildKubeConfig}. PEM text, not file paths. */
export interface KubeConnectionOptions {
  /** `https://host:port` of the API server. */
  server: string;
  /** CA that signed the API server's certificate; absent means the system roots. */
  caPem?: string;
  /** Bearer token (e.g. a service-account token). */
  token?: string;
  /** Client certificate and key, for certificate authentication. */
  clientCertPem?: string;
  clientKeyPem?: string;
  /** Names the cluster/user/context entries; default `meshrelay`. */
  name?: string;
}

/**
 * A KubeConfig from explicit settings, for callers that hold credentials rather than a kubeconfig
 * file (e.g. a workload cluster's API server reached with a token).
 */
export function buildKubeConfig(opts: KubeConnectionOptions): KubeConfig {
  let url: URL;
  try {
    url = new URL(opts.server);
  } catch {
    throw new InvalidInputError(`kubernetes API server "${opts.server}" is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new InvalidInputError(`kubernetes API server "${opts.server}" must be an http(s) URL`);
  }
  if ((opts.clientCertPem === undefined) !== (opts.clientKeyPem === undefined)) {
    throw new InvalidInputError("kubernetes client certificate and key must be given together");
  }
  const name = opts.name ?? "meshrelay";
  const b64 = (s: string) => btoa(s);
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{
      name,
      server: opts.server,
      skipTLSVerify: false,
      ...(opts.caPem !== undefined ? { caData: b64(opts.caPem) } : {}),
    }],
    users: [{
      name,
      ...(opts.token !== undefined ? { token: opts.token } : {}),
      ...(opts.clientCertPem !== undefined ? { certData: b64(opts.clientCertPem) } : {}),
      ...(opts.clientKeyPem !== undefined ? { keyData: b64(opts.clientKeyPem) } : {}),
    }],
    contexts: [{ name, cluster: name, user: name }],
    currentContext: name,
  });
  return kc;
}

/**
 * True for the configuration `KubeConfig.loadFromDefault()` falls back to when it could read neither a
 * kubeconfig nor the in-cluster service account (for instance for lack of read permission): an
 * unauthenticated `http://localhost:8080` that is almost never what the user meant.
 */
export function isDefaultFallbackConfig(kc: KubeConfig): boolean {
  const cluster = kc.getCurrentCluster();
  const user = kc.getCurrentUser();
  return cluster?.name === "cluster" && cluster.server === "http://localhost:8080" && user?.name === "user" &&
    !user.token && !user.certData && !user.certFile;
}

/** The clients for the KubeConfig's current context. */
export function createKubeClient(kubeConfig: KubeConfig): KubeClient {
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster) {
    throw new InvalidInputError(`kubeconfig has no cluster for context "${kubeConfig.getCurrentContext()}"`);
  }
  if (isDefaultFallbackConfig(kubeConfig)) {
    throw new InvalidInputError(
      "no kubeconfig or in-cluster service account could be read (the client fell back to " +
        "http://localhost:8080); check the kubeconfig path and read permissions",
    );
  }
  return {
    kubeConfig,
    server: cluster.server,
    core: kubeConfig.makeApiClient(CoreV1Api),
    apps: kubeConfig.makeApiClient(AppsV1Api),
    objects: KubernetesObjectApi.makeApiClient(kubeConfig),
  };
}
