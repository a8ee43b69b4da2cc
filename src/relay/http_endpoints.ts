/**
 * The HTTP side of a relay process: `/metrics` (Prometheus text), `/healthz` (the process is alive
 * and serving HTTP) and `/readyz` (every registered readiness check passes: config loaded, gRPC
 * listening, …). Anything else is 404. The port is the caller's choice (the CLI defaults to 9091).
 * @module
 */
import type { Clock } from "../clock.ts";
import { UnavailableError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { METRICS_CONTENT_TYPE, type MetricsRegistry } from "./metrics.ts";

/** A readiness probe: `true` when ready; `false` or a short reason when not. A throw counts as not ready. */
export type ReadinessCheck = () => boolean | string | Promise<boolean | string>;

/** Outcome of one check. */
export interface CheckResult {
  name: string;
  ok: boolean;
  detail?: string;
}

/** Named readiness checks, added and removed as the process starts parts of itself. */
export class Readiness {
  #checks = new Map<string, ReadinessCheck>();
  #clock: Clock;
  #timeoutMs: number;

  /** A check that does not answer within `timeoutMs` (default 2000) counts as not ready. */
  constructor(opts: { clock: Clock; timeoutMs?: number }) {
    this.#clock = opts.clock;
    this.#timeoutMs = opts.timeoutMs ?? 2000;
  }

  /** Adds or replaces the check called `name`. */
  set(name: string, check: ReadinessCheck): void {
    this.#checks.set(name, check);
  }

  /** Removes the check called `name`. */
  delete(name: string): void {
    this.#checks.delete(name);
  }

  /** Runs every check (concurrently); ready when all pass. No checks: ready. */
  async evaluate(): Promise<{ ready: boolean; results: CheckResult[] }> {
    const names = [...this.#checks.keys()].sort();
    const results = await Promise.all(names.map((n) => this.#run(n, this.#checks.get(n)!)));
    return { ready: results.every((r) => r.ok), results };
  }

  async #run(name: string, check: ReadinessCheck): Promise<CheckResult> {
    const timer = new AbortController();
    try {
      const timeout = this.#clock.sleep(this.#timeoutMs, timer.signal).then(
        () => `no answer within ${this.#timeoutMs} ms`,
        () => "aborted",
      );
      const v = await Promise.race([Promise.resolve().then(check), timeout]);
      if (v === true) return { name, ok: true };
      return { name, ok: false, detail: typeof v === "string" ? v : "not ready" };
    } catch (e) {
      return { name, ok: false, detail: e instanceof Error ? e.message : String(e) };
    } finally {
      timer.abort();
    }
  }
}

/** What {@linkcode httpHandler} serves. */
export interface HttpEndpointsOptions {
  metrics: MetricsRegistry;
  readiness: Readiness;
  log: Logger;
}

/** The request handler, separate from the listener so it can be mounted elsewhere and tested without a port. */
export function httpHandler(opts: HttpEndpointsOptions): (req: Request) => Promise<Response> {
  return async (req) => {
    const path = new URL(req.url).pathname;
    const known = path === "/metrics" || path === "/healthz" || path === "/readyz";
    if (!known) return text(404, "not found\n");
    if (req.method !== "GET" && req.method !== "HEAD") {
      return text(405, "method not allowed\n", { allow: "GET, HEAD" });
    }
    if (path === "/metrics") {
      try {
        return new Response(opts.metrics.render(), {
          status: 200,
          headers: { "content-type": METRICS_CONTENT_TYPE },
        });
      } catch (e) {
        opts.log.error("rendering metrics failed", { error: e instanceof Error ? e.message : String(e) });
        return text(500, "metrics unavailable\n");
      }
    }
    if (path === "/healthz") return text(200, "ok\n");
    const { ready, results } = await opts.readiness.evaluate();
    const body = results.map((r) => `[${r.ok ? "+" : "-"}] ${r.name}${r.ok ? " ok" : `: ${r.detail}`}`);
    body.push(ready ? "ready" : "not ready");
    return text(ready ? 200 : 503, body.join("\n") + "\n");
  };
}

function text(status: number, body: string, headers: Record<string, string> = {}): Response {
  return new Response(body, { status, headers: { "content-type": "text/plain; charset=utf-8", ...headers } });
}

/** A running HTTP endpoint server. */
export interface HttpEndpoints {
  hostname: string;
  /** The bound port (useful when 0 was asked for). */
  port: number;
  /** Stops listening and waits for open requests to finish. */
  close(): Promise<void>;
}

/** Serves {@linkcode httpHandler} on `hostname:port` (port 0: any free port). */
export function serveHttpEndpoints(
  opts: HttpEndpointsOptions & { hostname: string; port: number },
): Promise<HttpEndpoints> {
  const handler = httpHandler(opts);
  return new Promise((resolveListening, reject) => {
    let server: Deno.HttpServer<Deno.NetAddr>;
    try {
      server = Deno.serve({
        hostname: opts.hostname,
        port: opts.port,
        onListen: (addr) => {
          opts.log.info("http endpoints listening", {
            address: `${addr.hostname}:${addr.port}`,
            paths: ["/metrics", "/healthz", "/readyz"],
          });
          resolveListening({
            hostname: addr.hostname,
            port: addr.port,
            close: async () => {
              await server.shutdown();
            },
          });
        },
        onError: (e) => {
          opts.log.error("http endpoint request failed", {
            error: e instanceof Error ? e.message : String(e),
          });
          return text(500, "internal error\n");
        },
      }, handler);
    } catch (e) {
      // The one failure an operator causes here (another process on the port, an address this host does
      // not have) gets the same one clear line as the gRPC port, not "internal error: AddrInUse".
      reject(
        e instanceof Deno.errors.AddrInUse || e instanceof Deno.errors.AddrNotAvailable
          ? new UnavailableError(
            `cannot listen on ${opts.hostname}:${opts.port} for /metrics, /healthz, /readyz ` +
              `(port in use or address not available)`,
            { cause: e },
          )
          : e,
      );
    }
  });
}
