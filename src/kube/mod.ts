/**
 * Kubernetes backends: clients built from a caller-loaded KubeConfig, API error mapping, and the
 * {@linkcode KubeSecretStore}. Nothing here reads the environment; src/server.ts, src/agent.ts and
 * src/certs.ts load the KubeConfig (`loadFromDefault()` / `loadFromCluster()`) and pass it in.
 * @module
 */
export {
  buildKubeConfig,
  createKubeClient,
  isDefaultFallbackConfig,
  type KubeClient,
  type KubeConnectionOptions,
} from "./client.ts";
export { type KubeApiStatus, kubeApiStatusOf, kubeError, type KubeRequest } from "./api_error.ts";
export { KubeSecretStore, type KubeSecretStoreOptions } from "./kube_secret_store.ts";
