/**
 * The relay: gRPC server and agent libraries (identity, bootstrap, mTLS, rotation, Sync streams,
 * metrics and health endpoints). Both the server and the agent compose these pieces.
 * @module
 */
export {
  type Counter,
  DEFAULT_BUCKETS,
  type Gauge,
  type Histogram,
  type Labels,
  METRICS_CONTENT_TYPE,
  MetricsRegistry,
} from "./metrics.ts";
export { Backoff, backoffCeiling, backoffDelay, type BackoffOptions, DEFAULT_BACKOFF } from "./backoff.ts";
export {
  type CheckResult,
  type HttpEndpoints,
  type HttpEndpointsOptions,
  httpHandler,
  Readiness,
  type ReadinessCheck,
  serveHttpEndpoints,
} from "./http_endpoints.ts";
export {
  checkMaxMessageBytes,
  chunkDiff,
  type ChunkedDiff,
  DEFAULT_MAX_MESSAGE_BYTES,
  describeOversized,
  DiffAssembler,
  fromResource,
  grpcMessageOptions,
  HeldAssembler,
  helloMessages,
  type OversizedObject,
  toResource,
  welcomeMessages,
} from "./wire.ts";
export { type ClusterStatus, RelayHub, type RelayHubOptions, type SyncSession } from "./relay_hub.ts";
export { IDENTITY_CALL_DEADLINE_MS } from "./identity_transport.ts";
export {
  createSyncHandler,
  type Identify,
  relayServiceImpl,
  type SyncServiceOptions,
} from "./sync_service.ts";
export {
  type SessionEnd,
  SyncAgent,
  type SyncAgentOptions,
  type SyncAgentState,
  type SyncAgentStats,
  type SyncDialer,
  type SyncStreamHandle,
} from "./sync_agent.ts";
export {
  BOOTSTRAP_TOKEN_PREFIX,
  type BootstrapTokenInfo,
  constantTimeEqual,
  IDENTITY_TOKEN_KEY,
  IDENTITY_TOKEN_SECRET,
  TokenAuthority,
  validateClusterName,
} from "./tokens.ts";
export { FailureLimiter, type FailureLimiterOptions } from "./rate_limit.ts";
export {
  DEFAULT_ROTATION,
  renewAt,
  type RotationOptions,
  rotationWindow,
  shouldRotate,
  validateRotationOptions,
} from "./rotation.ts";
export { ROOT_TLS_SECRET, SERVER_TLS_SECRET, ServerTls, SIGNING_TLS_SECRET } from "./server_tls.ts";
export {
  ensureServerMaterial,
  ROOT_KEY_SECRET,
  type SecurityMode,
  type ServerMaterialReport,
} from "./server_material.ts";
export { REVOCATION_SECRET, RevocationList } from "./revocation.ts";
export { type PeerIdentity } from "./peer_identity.ts";
export { DEFAULT_CLIENT_CERT_TTL_MS, SIGNING_BUSY_MESSAGE } from "./identity_service.ts";
export {
  AdmissionGate,
  type AdmissionGateOptions,
  type AdmissionLimits,
  DEFAULT_ADMISSION,
  resolveAdmissionLimits,
} from "./admission.ts";
export {
  type BoundCertificate,
  DEFAULT_SESSION_BINDING_TTL_MS,
  SESSION_BINDING_METADATA,
  SessionBindings,
} from "./session_binding.ts";
export {
  DEFAULT_SECRET_CACHE_MAX_AGE_MS,
  SecretCache,
  type SecretCacheOptions,
  type SecretReader,
} from "./secret_cache.ts";
export {
  AgentIdentity,
  CLIENT_TLS_SECRET,
  type ClientCredentials,
  type IdentityState,
  type IdentityStatus,
} from "./agent_identity.ts";
export {
  DEFAULT_SERVER_KEEPALIVE_MS,
  DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS,
  RelayServer,
  type RelayServerOptions,
} from "./relay_server.ts";
export {
  DEFAULT_KEEPALIVE_MS,
  DEFAULT_KEEPALIVE_TIMEOUT_MS,
  RelayAgent,
  type RelayAgentOptions,
} from "./relay_agent.ts";
export { splitAddress } from "./client_credentials.ts";
export {
  ConnectionCounter,
  type ConnectionLimitOptions,
  DEFAULT_CONNECTION_LIMITS,
  LimitedListener,
  resolveConnectionLimits,
} from "./connection_limits.ts";
export { isUndecodable, tolerantDecoding } from "./tolerant_decoding.ts";
export {
  ISTIOD_SAN,
  MeshCaAuthority,
  type MeshCaIssued,
  type MeshCaOptions,
  ROOT_TRUST_SECRET_PREFIX,
} from "./mesh_ca.ts";
export {
  ISTIO_CACERTS_SECRET,
  MeshCaAgent,
  type MeshCaAgentOptions,
  type MeshCaState,
  type MeshCaStatus,
  type MeshCaTransport,
} from "./mesh_ca_agent.ts";
