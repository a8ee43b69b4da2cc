/**
 * Kubernetes backends: clients built from a caller-loaded KubeConfig, API error mapping, the
 * {@linkcode KubeSecretStore}, and the state backends {@linkcode KubeDiscoverySource},
 * {@linkcode KubeApplier} and {@linkcode KubeConfigSource} (over {@linkcode KubeRest}, a JSON client
 * for arbitrary kinds). Nothing here reads the environment; src/server.ts, src/agent.ts and
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
export {
  codeOfHttpStatus,
  isKubeStatus,
  KubeApiError,
  KubeRest,
  type KubeRestOptions,
  type KubeStatus,
  type ListResult,
  type Query,
  type RawWatchEvent,
  type RestRequest,
} from "./kube_rest.ts";
export {
  type ApiResource,
  ApiResources,
  groupVersionPath,
  KindNotServedError,
  resourcePath,
  splitApiVersion,
} from "./api_resources.ts";
export {
  DEFAULT_STATUS_KINDS,
  NOISY_ANNOTATIONS,
  NOISY_METADATA,
  trimObject,
  type TrimOptions,
} from "./trim.ts";
export {
  DEFAULT_DISCOVERY_KINDS,
  type DiscoveryKind,
  type KubeDiscoveryOptions,
  KubeDiscoverySource,
  parseDiscoveryKinds,
} from "./kube_discovery.ts";
export {
  APPLIED_RECORD_KEY,
  APPLIED_RECORD_NAME,
  FIELD_MANAGER,
  type KubeAppliedRecord,
  KubeApplier,
  type KubeApplierOptions,
  ORIGIN_ANNOTATION,
} from "./kube_applier.ts";
export {
  CONFIG_KINDS,
  declaredDocumentOf,
  KubeConfigSource,
  type KubeConfigSourceOptions,
} from "./kube_config_source.ts";
export {
  restartDeployments,
  type RestartDeploymentsOptions,
  RESTARTED_AT_ANNOTATION,
} from "./rollout_restart.ts";
