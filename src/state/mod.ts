/**
 * Relay state: discovery, declared configuration, desired state per cluster, inventories, diffs and
 * chunking for the wire, and applying with prune. Backend-neutral interfaces live in `types.ts`;
 * the directory-backed implementations here serve laptops, demos and tests, `src/kube` serves clusters.
 * @module
 */
export type {
  Applier,
  ClusterInfo,
  ConfigSource,
  DiscoveryEvent,
  DiscoverySource,
  KubeObject,
  ObjectKey,
  ObjectMeta,
  ObjectStatus,
} from "./types.ts";
export { objectKey } from "./types.ts";
export { canonicalJson, contentHash, type ResourceVersion, resourceVersionOf } from "./canonical.ts";
export { isClusterScoped, type ParsedManifests, parseManifests } from "./manifests.ts";
export { type DirectoryDiscoveryOptions, DirectoryDiscoverySource } from "./directory_discovery.ts";
export {
  type ClusterConfigSpec,
  type ClusterTarget,
  CONFIG_API_VERSION,
  CONFIG_GROUP,
  type DeclaredConfig,
  DEFAULT_CLUSTER_DOMAIN,
  DEFAULT_FEDERATION_NAMESPACE,
  DEFAULT_ISTIO_INTERMEDIATE_TTL_DAYS,
  matchesLabels,
  parseDeclaredConfig,
  rootTrustPolicyFor,
  type RootTrustPolicySpec,
  type ServiceFederationSpec,
  targets,
} from "./declared_config.ts";
export { ClusterRegistry, type RegistryChange } from "./cluster_registry.ts";
export { type DirectoryConfigOptions, DirectoryConfigSource } from "./directory_config.ts";
export {
  Inventory,
  type InventoryChange,
  type InventoryOptions,
  type InventoryView,
  type VersionedObject,
} from "./inventory.ts";
export {
  DECLARED_BY_ANNOTATION,
  type DesiredConflict,
  type DesiredState,
  desiredStateFor,
  DesiredStatePlan,
  DISCOVERED_CONTENT_KEY_PREFIXES,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  readsDiscoveredContent,
} from "./desired_state.ts";
export {
  type ClusterDesiredState,
  DesiredStateTracker,
  type DesiredStateTrackerOptions,
  type DesiredStateUpdate,
  discoveryChangeMatters,
} from "./desired_tracker.ts";
export { FEDERATION_LABEL, SOURCE_CLUSTER_LABEL } from "./service_entry.ts";
export {
  applyVersionDiff,
  diffByVersion,
  type VersionDiff,
  versionedMap,
  type VersionedUpsert,
} from "./diff.ts";
export { chunkBySize, type ChunkOptions, jsonSize } from "./chunk.ts";
export {
  APPLIED_STATE_FILE,
  type AppliedRecord,
  DirectoryApplier,
  type DirectoryApplierOptions,
  fileFor,
  renderObject,
} from "./directory_applier.ts";
