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
