import { KubeConfig } from "@kubernetes/client-node";
import { UnavailableError } from "../errors.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { codeOfHttpStatus, KubeApiError, KubeRest, type RawWatchEvent } from "./kube_rest.ts";

Deno.test("codeOfHttpStatus follows api_error.ts", async (t) => {
  const cases: [number, string, string][] = [
    [400, "BadRequest", "invalid_argument"],
    [401, "Unauthorized", "permission_denied"],
    [403, "Forbidden", "permission_denied"],
    [404, "NotFound", "not_found"],
    [409, "AlreadyExists", "already_exists"],
    [409, "Conflict", "conflict"],
    [410, "Expired", "failed_precondition"],
    [412, "", "conflict"],
    [422, "Invalid", "invalid_argument"],
    [429, "TooManyRequests", "resource_exhausted"],
    [500, "InternalError", "unavailable"],
    [504, "Timeout", "deadline_exceeded"],
  ];
  for (const [status, reason, want] of cases) {
    await t.step(`${status} ${reason}`, () => assertEquals(codeOfHttpStatus(status, reason), want));
  }
});

/** A plain-HTTP stand-in for the API server's wire behaviour (the real server is in tests/kube/). */
function kubeConfigFor(url: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "c", server: url, skipTLSVerify: true }],
    users: [{ name: "u", token: "t0k3n" }],
    contexts: [{ name: "c", cluster: "c", user: "u" }],
    currentContext: "c",
  });
  return kc;
}

Deno.test("KubeRest on the wire", async (t) => {
  const seen: { path: string; query: string; auth: string | null; contentType: string | null }[] = [];
  let watchClosed: () => void = () => {};
  const watchClosedP = new Promise<void>((r) => watchClosed = r);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const u = new URL(req.url);
    seen.push({
      path: u.pathname,
      query: u.search,
      auth: req.headers.get("authorization"),
      contentType: req.headers.get("content-type"),
    });
    if (u.pathname === "/api/v1/namespaces/x/configmaps/missing") {
      return Response.json(
        {
          kind: "Status",
          status: "Failure",
          reason: "NotFound",
          code: 404,
          message: 'configmaps "missing" not found',
        },
        { status: 404 },
      );
    }
    if (u.pathname === "/proxy-error") return new Response("<html>\n bad gateway\n</html>", { status: 502 });
    if (u.pathname === "/api/v1/configmaps" && !u.searchParams.has("watch")) {
      const page = u.searchParams.get("continue") ?? "";
      return Response.json(
        page === ""
          ? { metadata: { resourceVersion: "5", continue: "p2" }, items: [{ metadata: { name: "a" } }] }
          : { metadata: { resourceVersion: "7" }, items: [{ metadata: { name: "b" } }] },
      );
    }
    if (u.pathname === "/api/v1/configmaps" && u.searchParams.get("resourceVersion") === "1") {
      return Response.json({ kind: "Status", reason: "Expired", code: 410, message: "too old" }, {
        status: 410,
      });
    }
    if (u.pathname === "/api/v1/configmaps") {
      // Events split across chunks, then an idle stream that only the client's abort ends.
      const enc = new TextEncoder();
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(
            enc.encode(
              '{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"8"}}}\n{"type":"MOD',
            ),
          );
          c.enqueue(enc.encode('IFIED","object":{"metadata":{"name":"a","resourceVersion":"9"}}}\n'));
          req.signal.addEventListener("abort", () => {
            watchClosed();
            try {
              c.close();
            } catch {
              // Already closed.
            }
          });
        },
      });
      return new Response(body, { headers: { "content-type": "application/json" } });
    }
    return Response.json({ echo: await req.text() });
  });
  const url = `http://127.0.0.1:${server.addr.port}`;
  const rest = new KubeRest({ kubeConfig: kubeConfigFor(url) });
  try {
    await t.step(
      "sends the kubeconfig's credentials and JSON bodies with the given content type",
      async () => {
        const res = await rest.request<{ echo: string }>({
          method: "PATCH",
          path: "/api/v1/namespaces/x/configmaps/c",
          query: { fieldManager: "meshrelay", force: true, skipped: undefined },
          body: { a: 1 },
          contentType: "application/apply-patch+yaml",
        });
        assertEquals(res.echo, '{"a":1}');
        const last = seen.at(-1)!;
        assertEquals(last.auth, "Bearer t0k3n");
        assertEquals(last.contentType, "application/apply-patch+yaml");
        assertEquals(last.query, "?fieldManager=meshrelay&force=true");
      },
    );
    await t.step("a Status answer becomes a KubeApiError with the server's reason and message", async () => {
      const e = await assertRejects(
        () => rest.request({ path: "/api/v1/namespaces/x/configmaps/missing" }),
        KubeApiError,
      );
      const k = e as KubeApiError;
      assertEquals([k.httpStatus, k.reason, k.code, k.apiMessage], [
        404,
        "NotFound",
        "not_found",
        'configmaps "missing" not found',
      ]);
    });
    await t.step("a non-Status answer keeps a one-line excerpt", async () => {
      const e = await assertRejects(
        () => rest.request({ path: "/proxy-error" }),
        KubeApiError,
      ) as KubeApiError;
      assertEquals([e.httpStatus, e.code, e.apiMessage], [502, "unavailable", "<html> bad gateway </html>"]);
    });
    await t.step("list follows continue tokens and fills in apiVersion and kind", async () => {
      const r = await rest.list("/api/v1/configmaps", { apiVersion: "v1", kind: "ConfigMap", pageSize: 1 });
      assertEquals(r, {
        resourceVersion: "7",
        items: [
          { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "a" } },
          { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "b" } },
        ],
      });
    });
    await t.step("watch reassembles events across chunks and an abort closes the idle stream", async () => {
      const ctl = new AbortController();
      const events: RawWatchEvent[] = [];
      const done = (async () => {
        try {
          for await (const ev of rest.watch("/api/v1/configmaps", { resourceVersion: "5" }, ctl.signal)) {
            events.push(ev);
            if (events.length === 2) ctl.abort();
          }
        } catch (e) {
          assert(ctl.signal.aborted, `unexpected ${e}`);
        }
      })();
      await done;
      await watchClosedP;
      assertEquals(events.map((e) => e.type), ["ADDED", "MODIFIED"]);
      assert(seen.at(-1)!.query.includes("watch=true"));
    });
    await t.step("a refused watch throws the answer (410 for a version too old)", async () => {
      const e = await assertRejects(async () => {
        for await (
          const _ of rest.watch("/api/v1/configmaps", { resourceVersion: "1" }, new AbortController().signal)
        ) {
          // none
        }
      }, KubeApiError) as KubeApiError;
      assertEquals(e.httpStatus, 410);
    });
  } finally {
    await server.shutdown();
  }
  await t.step("an unreachable server is UnavailableError", async () => {
    await assertRejects(() => rest.request({ path: "/api/v1/namespaces" }), UnavailableError);
  });
});
