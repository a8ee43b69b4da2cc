/**
 * A small JSON client for the Kubernetes REST API: one request, a paginated list, a watch stream.
 * Authentication and TLS come from a client-node `KubeConfig` (tokens, client certificates, exec
 * plugins, proxies), but bodies stay plain JSON: the generated typed models would convert
 * timestamps to `Date`s and drop fields they do not know, which breaks content hashes and arbitrary
 * kinds. Every call takes an `AbortSignal` that really closes the connection.
 * @module
 */
import * as http from "node:http";
import * as https from "node:https";
import type { KubeConfig } from "@kubernetes/client-node";
import { type ErrorCode, MeshrelayError, UnavailableError } from "../errors.ts";

/** The `Status` object the API server answers failures with. */
export interface KubeStatus {
  kind?: string;
  status?: string;
  message?: string;
  reason?: string;
  code?: number;
  details?: { name?: string; group?: string; kind?: string; causes?: { message?: string; field?: string }[] };
}

/**
 * A failure answered by the API server. `code` follows the HTTP status as `kubeError` in
 * api_error.ts maps it (404 → not_found, 409 → conflict or already_exists, 410 → failed_precondition,
 * 401/403 → permission_denied, 400/422 → invalid_argument, 429 → resource_exhausted, others →
 * unavailable); `reason` is the server's own word
 * (`NotFound`, `AlreadyExists`, `Conflict`, `Expired`, `Gone`, `Invalid`, `Forbidden`, …).
 */
export class KubeApiError extends MeshrelayError {
  /** HTTP status of the answer (for watch ERROR events: the Status `code`). */
  readonly httpStatus: number;
  /** The Status `reason`, or "" when the server sent none. */
  readonly reason: string;
  /** The server's message alone (the error message also names the request). */
  readonly apiMessage: string;
  constructor(httpStatus: number, status: KubeStatus, what: string) {
    const apiMessage = status.message || status.reason || `HTTP ${httpStatus}`;
    super(codeOfHttpStatus(httpStatus, status.reason ?? ""), `${what}: ${apiMessage}`);
    this.httpStatus = httpStatus;
    this.reason = status.reason ?? "";
    this.apiMessage = apiMessage;
  }
}

/** The error code for an API server answer. */
export function codeOfHttpStatus(httpStatus: number, reason = ""): ErrorCode {
  switch (httpStatus) {
    case 400:
    case 422:
      return "invalid_argument";
    case 401:
      // Our own credentials were refused: like src/kube/api_error.ts, a permission problem of ours.
      return "permission_denied";
    case 403:
      return "permission_denied";
    case 404:
      return "not_found";
    case 409:
      return reason === "AlreadyExists" ? "already_exists" : "conflict";
    case 410:
      return "failed_precondition";
    case 412:
      return "conflict";
    case 429:
      return "resource_exhausted";
    case 504:
      return "deadline_exceeded";
    default:
      return "unavailable";
  }
}

/** Whether `e` is an API answer with this HTTP status. */
export function isKubeStatus(e: unknown, httpStatus: number): e is KubeApiError {
  return e instanceof KubeApiError && e.httpStatus === httpStatus;
}

/** Query parameters; `undefined` values are left out. */
export type Query = Record<string, string | number | boolean | undefined>;

/** One request. */
export interface RestRequest {
  method?: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** Absolute API path, e.g. `/api/v1/namespaces/x/configmaps`. */
  path: string;
  query?: Query;
  /** Sent as JSON (JSON is valid YAML, so it also serves `application/apply-patch+yaml`). */
  body?: unknown;
  /** Default `application/json` when there is a body. */
  contentType?: string;
  signal?: AbortSignal;
}

/** An event of a watch stream as the server sends it. */
export interface RawWatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: Record<string, unknown>;
}

/** A list answer: the items and the collection's resourceVersion to watch from. */
export interface ListResult {
  items: Record<string, unknown>[];
  resourceVersion: string;
}

/** Options of {@linkcode KubeRest}. */
export interface KubeRestOptions {
  kubeConfig: KubeConfig;
  /** Give up on a request (not a watch) after this long. Default 30,000 ms. */
  requestTimeoutMs?: number;
}

/**
 * JSON over HTTPS to the API server of `kubeConfig`'s current context. Errors: {@linkcode KubeApiError}
 * for answers, `UnavailableError` when the server cannot be reached, the signal's reason when aborted.
 */
export class KubeRest {
  readonly #kc: KubeConfig;
  readonly #server: URL;
  readonly #timeoutMs: number;

  constructor(opts: KubeRestOptions) {
    this.#kc = opts.kubeConfig;
    const cluster = opts.kubeConfig.getCurrentCluster();
    if (!cluster) throw new UnavailableError("the kubeconfig has no current cluster");
    this.#server = new URL(cluster.server);
    this.#timeoutMs = opts.requestTimeoutMs ?? 30_000;
  }

  /** The API server's base URL. */
  get server(): string {
    return this.#server.toString().replace(/\/$/, "");
  }

  /** Sends one request and returns the decoded JSON answer. */
  async request<T = Record<string, unknown>>(req: RestRequest): Promise<T> {
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = req.signal ? AbortSignal.any([req.signal, timeout]) : timeout;
    const method = req.method ?? "GET";
    const what = `${method} ${req.path}`;
    let res: http.IncomingMessage;
    let text: string;
    try {
      res = await this.#open(method, req, signal);
      text = await untilAborted(res, signal, () => readAll(res));
    } catch (e) {
      throw this.#transportError(e, what, req.signal, timeout);
    }
    const status = res.statusCode ?? 0;
    const parsed = parseJson(text);
    if (status < 200 || status > 299) throw new KubeApiError(status, statusOf(parsed, text), what);
    return parsed as T;
  }

  /**
   * Lists a collection completely, page by page (`limit`), and returns its items (with `apiVersion`
   * and `kind` filled in, which list answers leave out) and the collection's resourceVersion. A page
   * token that expired in between restarts the list from the beginning.
   */
  async list(
    path: string,
    opts: { apiVersion: string; kind: string; query?: Query; pageSize?: number; signal?: AbortSignal },
  ): Promise<ListResult> {
    for (let attempt = 0;; attempt++) {
      const items: Record<string, unknown>[] = [];
      let cont: string | undefined;
      let rv = "";
      try {
        do {
          const page = await this.request<
            { items?: Record<string, unknown>[]; metadata?: Record<string, string> }
          >(
            {
              path,
              query: { ...opts.query, limit: opts.pageSize ?? 500, continue: cont },
              signal: opts.signal,
            },
          );
          for (const it of page.items ?? []) {
            items.push({ apiVersion: opts.apiVersion, kind: opts.kind, ...it });
          }
          cont = page.metadata?.continue || undefined;
          rv = page.metadata?.resourceVersion ?? rv;
        } while (cont);
        return { items, resourceVersion: rv };
      } catch (e) {
        if (isKubeStatus(e, 410) && cont !== undefined && attempt < 3) continue;
        throw e;
      }
    }
  }

  /**
   * One watch connection on `path` (a collection). Yields events until the server ends the stream
   * (`timeoutSeconds`) or `signal` aborts; throws {@linkcode KubeApiError} when the server refuses
   * to start (e.g. 410 Gone for a resourceVersion too old). ERROR events are yielded as they come.
   */
  async *watch(path: string, query: Query, signal: AbortSignal): AsyncGenerator<RawWatchEvent> {
    const what = `WATCH ${path}`;
    const ctl = new AbortController();
    const both = AbortSignal.any([signal, ctl.signal]);
    let res: http.IncomingMessage;
    try {
      res = await this.#open("GET", { path, query: { ...query, watch: true } }, both);
    } catch (e) {
      throw this.#transportError(e, what, signal);
    }
    // Closing the response is what ends a blocked read of the stream when the caller gives up.
    const onAbort = () => res.destroy();
    both.addEventListener("abort", onAbort, { once: true });
    try {
      const status = res.statusCode ?? 0;
      if (status !== 200) {
        const text = await readAll(res);
        throw new KubeApiError(status, statusOf(parseJson(text), text), what);
      }
      const decoder = new TextDecoder();
      let buf = "";
      try {
        for await (const chunk of res) {
          buf += decoder.decode(chunk as Uint8Array, { stream: true });
          let nl: number;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line === "") continue;
            const ev = parseJson(line) as RawWatchEvent | undefined;
            if (ev && typeof ev.type === "string" && ev.object && typeof ev.object === "object") yield ev;
          }
        }
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        // The stream broke (server restart, network): the caller re-watches from its last version.
        throw new UnavailableError(`${what}: stream ended: ${errorText(e)}`, { cause: e });
      }
    } finally {
      both.removeEventListener("abort", onAbort);
      ctl.abort();
      res.destroy();
    }
  }

  async #open(
    method: string,
    req: Omit<RestRequest, "signal">,
    signal: AbortSignal,
  ): Promise<http.IncomingMessage> {
    signal.throwIfAborted();
    const url = new URL(this.#server.toString().replace(/\/$/, "") + req.path);
    for (const [k, v] of Object.entries(req.query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, String(v));
    }
    const opts: https.RequestOptions = {};
    // Resolves tokens (exec plugins, OIDC), client certificates and the CA, and builds the agent.
    await this.#kc.applyToHTTPSOptions(opts);
    const headers: Record<string, string> = { Accept: "application/json" };
    for (const [k, v] of Object.entries(opts.headers ?? {})) {
      if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(", ") : String(v);
    }
    const auth = (opts as { auth?: string }).auth;
    if (auth) headers["Authorization"] = `Basic ${btoa(auth)}`;
    let body: Uint8Array | undefined;
    if (req.body !== undefined) {
      body = new TextEncoder().encode(JSON.stringify(req.body));
      headers["Content-Type"] = req.contentType ?? "application/json";
      headers["Content-Length"] = String(body.length);
    }
    const mod = url.protocol === "http:" ? http : https;
    return await new Promise<http.IncomingMessage>((resolve, reject) => {
      const r = mod.request(url, { method, headers, agent: opts.agent }, resolve);
      const onAbort = () => {
        r.destroy(signal.reason instanceof Error ? signal.reason : new Error("aborted"));
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      r.on("error", (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      });
      r.on("response", () => signal.removeEventListener("abort", onAbort));
      r.end(body);
    });
  }

  #transportError(e: unknown, what: string, callerSignal?: AbortSignal, timeout?: AbortSignal): unknown {
    if (callerSignal?.aborted) return callerSignal.reason;
    if (e instanceof MeshrelayError) return e;
    if (timeout?.aborted) return new UnavailableError(`${what}: no answer within ${this.#timeoutMs} ms`);
    return new UnavailableError(`${what}: ${errorText(e)} (API server ${this.#server.host})`, { cause: e });
  }
}

/** Runs `read` on `res`, destroying the response (so `read` fails) if `signal` aborts first. */
async function untilAborted<T>(
  res: http.IncomingMessage,
  signal: AbortSignal,
  read: () => Promise<T>,
): Promise<T> {
  const onAbort = () => res.destroy(new Error("aborted"));
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    return await read();
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

function readAll(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    res.on("data", (c: Uint8Array) => chunks.push(c));
    res.on("end", () => {
      let n = 0;
      for (const c of chunks) n += c.length;
      const all = new Uint8Array(n);
      let off = 0;
      for (const c of chunks) {
        all.set(c, off);
        off += c.length;
      }
      resolve(new TextDecoder().decode(all));
    });
    res.on("error", reject);
    // A destroyed response may only close; rejecting after "end" is a no-op.
    res.on("close", () => reject(new Error("connection closed before the answer was complete")));
  });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function statusOf(parsed: unknown, text: string): KubeStatus {
  if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) return parsed as KubeStatus;
  // Not a Status (a proxy in between?): keep a short, single-line excerpt.
  return { message: text.replace(/\s+/g, " ").trim().slice(0, 200) };
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
