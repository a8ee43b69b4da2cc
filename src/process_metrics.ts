/**
 * The standard `process_*` metrics every Prometheus client exports (resident memory, start time), plus
 * the JS heap figures that tell live objects from memory held outside the heap (TLS, HTTP/2, buffers).
 * The server and the agent register them; the readings come in through `deps`, so tests feed their own.
 * @module
 */
import type { MetricsRegistry } from "./relay/mod.ts";

/** What the metrics read, at each scrape. */
export interface ProcessMetricsDeps {
  /** As `Deno.memoryUsage()`. */
  memoryUsage: () => { rss: number; heapTotal: number; heapUsed: number; external: number };
  /** When the process started. */
  startTime: Date;
}

/** Registers the process metrics on `metrics`; their values are read at every render. */
export function registerProcessMetrics(metrics: MetricsRegistry, deps: ProcessMetricsDeps): void {
  const rss = metrics.gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
  const start = metrics.gauge(
    "process_start_time_seconds",
    "Start time of the process since the Unix epoch in seconds.",
  );
  const heap = metrics.gauge(
    "meshrelay_js_heap_bytes",
    "JavaScript heap: used (live and not yet collected) and total (reserved by V8), in bytes.",
  );
  const external = metrics.gauge(
    "meshrelay_js_external_memory_bytes",
    "Memory of objects outside the JavaScript heap that JavaScript objects own (buffers), in bytes.",
  );
  metrics.onCollect(() => {
    const m = deps.memoryUsage();
    rss.set(m.rss);
    start.set(deps.startTime.getTime() / 1000);
    heap.set(m.heapUsed, { kind: "used" });
    heap.set(m.heapTotal, { kind: "total" });
    external.set(m.external);
  });
}
