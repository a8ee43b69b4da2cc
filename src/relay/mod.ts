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
