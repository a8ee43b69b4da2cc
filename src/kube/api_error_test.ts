import { ApiException } from "@kubernetes/client-node";
import { assert, assertEquals } from "../testing/assert.ts";
import {
  AlreadyExistsError,
  ConflictError,
  InvalidInputError,
  type MeshrelayError,
  NotFoundError,
  PermissionDeniedError,
  PreconditionError,
  ResourceExhaustedError,
  UnavailableError,
} from "../errors.ts";
import { kubeApiStatusOf, kubeError, type KubeRequest } from "./api_error.ts";

const req: KubeRequest = {
  verb: "update",
  resource: "secrets",
  namespace: "gloo-mesh",
  name: "relay-root-tls-secret",
};

function status(code: number, reason: string, message: string): ApiException<unknown> {
  // What client-node throws for a non-2xx answer: the Status body parsed from JSON.
  return new ApiException(code, "Unknown API Status Code!", { kind: "Status", code, reason, message }, {});
}

Deno.test("kubeError maps API statuses to project errors", async (t) => {
  const cases: [string, unknown, new (...a: never[]) => MeshrelayError][] = [
    ["400 bad request", status(400, "BadRequest", "bad"), InvalidInputError],
    [
      "401 unauthorized (client-node drops the body)",
      new ApiException(401, "Unauthorized", undefined, {}),
      PermissionDeniedError,
    ],
    ["403 forbidden", status(403, "Forbidden", 'secrets "x" is forbidden'), PermissionDeniedError],
    ["404 not found", status(404, "NotFound", 'secrets "x" not found'), NotFoundError],
    ["409 AlreadyExists", status(409, "AlreadyExists", 'secrets "x" already exists'), AlreadyExistsError],
    ["409 Conflict", status(409, "Conflict", "the object has been modified"), ConflictError],
    [
      "410 Gone (expired resourceVersion)",
      status(410, "Expired", "too old resource version"),
      PreconditionError,
    ],
    ["422 Invalid", status(422, "Invalid", 'Secret "x" is invalid'), InvalidInputError],
    ["429 TooManyRequests", status(429, "TooManyRequests", "slow down"), ResourceExhaustedError],
    ["500 InternalError", status(500, "InternalError", "etcd"), UnavailableError],
    ["503 ServiceUnavailable", status(503, "ServiceUnavailable", "not ready"), UnavailableError],
    [
      "connection refused (node-fetch FetchError shape)",
      Object.assign(new Error("request to https://127.0.0.1:1/ failed, reason: connect ECONNREFUSED"), {
        code: "ECONNREFUSED",
      }),
      UnavailableError,
    ],
    [
      "connection refused nested in cause",
      new TypeError("fetch failed", { cause: Object.assign(new Error("x"), { code: "ECONNREFUSED" }) }),
      UnavailableError,
    ],
    ["anything else", new Error("boom"), UnavailableError],
  ];
  for (const [name, err, cls] of cases) {
    await t.step(name, () => {
      const e = kubeError(err, req);
      assert(e instanceof cls, `${name}: got ${e.name}: ${e.message}`);
      assert(
        e.message.startsWith("kubernetes update secrets/relay-root-tls-secret in namespace gloo-mesh"),
        e.message,
      );
      assertEquals(e.cause, err);
    });
  }
});

Deno.test("kubeError messages name the verb and resource, and carry the server's reason", () => {
  const e = kubeError(
    status(
      403,
      "Forbidden",
      'secrets "relay-root-tls-secret" is forbidden: User "bob" cannot update resource',
    ),
    req,
  );
  assertEquals(
    e.message,
    "kubernetes update secrets/relay-root-tls-secret in namespace gloo-mesh: forbidden (403): " +
      'secrets "relay-root-tls-secret" is forbidden: User "bob" cannot update resource',
  );
  const list = kubeError(status(403, "Forbidden", "no"), { verb: "list", resource: "namespaces" });
  assertEquals(list.message, "kubernetes list namespaces: forbidden (403): no");
});

Deno.test("kubeError keeps long server messages short and passes project errors through", () => {
  const long = kubeError(status(422, "Invalid", "x".repeat(1000)), req);
  assert(long.message.length < 400, String(long.message.length));
  const own = new ConflictError("mine");
  assertEquals(kubeError(own, req), own);
});

Deno.test("kubeApiStatusOf reads code and Status reason, also from a string body", () => {
  assertEquals(kubeApiStatusOf(status(409, "AlreadyExists", "m")), {
    code: 409,
    reason: "AlreadyExists",
    message: "m",
  });
  assertEquals(
    kubeApiStatusOf(new ApiException(404, "x", JSON.stringify({ reason: "NotFound", message: "gone" }), {})),
    { code: 404, reason: "NotFound", message: "gone" },
  );
  assertEquals(kubeApiStatusOf(new ApiException(502, "x", "<html>", {})), {
    code: 502,
    reason: undefined,
    message: undefined,
  });
  assertEquals(kubeApiStatusOf(new Error("plain")), undefined);
});
