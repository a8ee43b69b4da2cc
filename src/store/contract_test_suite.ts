/**
 * The contract every {@linkcode SecretStore} passes. Each implementation's test file calls
 * {@linkcode secretStoreContract} with a factory; Kubernetes runs it against a real API server.
 * @module
 */
import { assert, assertEquals, assertNotEquals, assertRejects } from "../testing/assert.ts";
import { ConflictError, InvalidInputError } from "../errors.ts";
import type { SecretStore } from "./secret_store.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Runs the shared contract as steps of test `t`. `fresh` must return an empty store. */
export async function secretStoreContract(
  t: Deno.TestContext,
  fresh: () => Promise<SecretStore>,
): Promise<void> {
  const cases: [string, (s: SecretStore) => Promise<void>][] = [
    ["get of a missing secret is undefined", async (s) => {
      assertEquals(await s.get("nope"), undefined);
    }],
    ["put then get returns the same bytes and version", async (s) => {
      const put = await s.put("relay-server-tls-secret", {
        "tls.crt": enc.encode("crt"),
        "tls.key": enc.encode("key"),
        "ca.crt": new Uint8Array([0, 1, 2, 255]),
      });
      const got = await s.get("relay-server-tls-secret");
      assert(got);
      assertEquals(got.version, put.version);
      assertEquals(Object.keys(got.data).sort(), ["ca.crt", "tls.crt", "tls.key"]);
      assertEquals(dec.decode(got.data["tls.crt"]), "crt");
      assertEquals([...got.data["ca.crt"]], [0, 1, 2, 255]);
    }],
    ["put replaces the whole secret (dropped keys disappear)", async (s) => {
      await s.put("x", { a: enc.encode("1"), b: enc.encode("2") });
      await s.put("x", { a: enc.encode("3") });
      const got = await s.get("x");
      assertEquals(Object.keys(got!.data), ["a"]);
      assertEquals(dec.decode(got!.data.a), "3");
    }],
    ["version changes when content changes", async (s) => {
      const a = await s.put("x", { a: enc.encode("1") });
      const b = await s.put("x", { a: enc.encode("2") });
      assertNotEquals(a.version, b.version);
    }],
    ["expectedVersion null creates only when absent", async (s) => {
      await s.put("x", { a: enc.encode("1") }, { expectedVersion: null });
      await assertRejects(() => s.put("x", { a: enc.encode("2") }, { expectedVersion: null }), ConflictError);
      assertEquals(dec.decode((await s.get("x"))!.data.a), "1");
    }],
    ["expectedVersion must match the current version", async (s) => {
      const v1 = await s.put("x", { a: enc.encode("1") });
      const v2 = await s.put("x", { a: enc.encode("2") }, { expectedVersion: v1.version });
      await assertRejects(
        () => s.put("x", { a: enc.encode("3") }, { expectedVersion: v1.version }),
        ConflictError,
      );
      assertEquals(dec.decode((await s.get("x"))!.data.a), "2");
      await s.put("x", { a: enc.encode("4") }, { expectedVersion: v2.version });
    }],
    ["expectedVersion on a missing secret conflicts", async (s) => {
      await assertRejects(
        () => s.put("gone", { a: enc.encode("1") }, { expectedVersion: "1" }),
        ConflictError,
      );
    }],
    ["concurrent compare-and-swap: exactly one writer wins", async (s) => {
      const base = await s.put("x", { n: enc.encode("0") });
      const results = await Promise.allSettled(
        [1, 2, 3, 4].map((i) => s.put("x", { n: enc.encode(String(i)) }, { expectedVersion: base.version })),
      );
      assertEquals(results.filter((r) => r.status === "fulfilled").length, 1);
      for (const r of results) {
        if (r.status === "rejected") assert(r.reason instanceof ConflictError, String(r.reason));
      }
    }],
    ["delete", async (s) => {
      assertEquals(await s.delete("x"), false);
      const v = await s.put("x", { a: enc.encode("1") });
      await assertRejects(() => s.delete("x", { expectedVersion: "stale" }), ConflictError);
      assertEquals(await s.delete("x", { expectedVersion: v.version }), true);
      assertEquals(await s.get("x"), undefined);
    }],
    ["list names every secret", async (s) => {
      await s.put("b", { k: enc.encode("1") });
      await s.put("a", { k: enc.encode("1") });
      assertEquals((await s.list()).filter((n) => n === "a" || n === "b"), ["a", "b"]);
    }],
    ["invalid names and keys are refused", async (s) => {
      await assertRejects(() => s.put("../etc", { a: enc.encode("1") }), InvalidInputError);
      await assertRejects(() => s.put("Upper", { a: enc.encode("1") }), InvalidInputError);
      await assertRejects(() => s.put("x", { "a/b": enc.encode("1") }), InvalidInputError);
    }],
    ["returned data is a copy", async (s) => {
      await s.put("x", { a: enc.encode("1") });
      const got = await s.get("x");
      got!.data.a[0] = 0;
      assertEquals(dec.decode((await s.get("x"))!.data.a), "1");
    }],
  ];
  for (const [name, fn] of cases) {
    await t.step(name, async () => await fn(await fresh()));
  }
}
