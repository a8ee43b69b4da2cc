import { FakeClock } from "../clock.ts";
import { AuthenticationError, InvalidInputError, PermissionDeniedError } from "../errors.ts";
import { FileSecretStore, MemorySecretStore, type Secret } from "../store/mod.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import { SecretCache } from "./secret_cache.ts";
import {
  BOOTSTRAP_TOKEN_PREFIX,
  constantTimeEqual,
  IDENTITY_TOKEN_SECRET,
  TokenAuthority,
  tokenHash,
  validateClusterName,
} from "./tokens.ts";

const NOW = new Date("2026-03-01T00:00:00Z");
const HOUR = 3600_000;

Deno.test("constantTimeEqual compares whole values of any length", async (t) => {
  const cases: [string, string, boolean][] = [
    ["abc", "abc", true],
    ["abc", "abd", false],
    ["abc", "abcd", false],
    ["", "", true],
    ["", "x", false],
    ["ü", "ü", true],
  ];
  for (const [a, b, want] of cases) {
    await t.step(
      `${JSON.stringify(a)} vs ${JSON.stringify(b)}`,
      () => assertEquals(constantTimeEqual(a, b), want),
    );
  }
});

Deno.test("check compares through compareSecrets: the shared token as is, per-cluster secrets only hashed", async (t) => {
  const store = new MemorySecretStore();
  await store.put(IDENTITY_TOKEN_SECRET, { token: new TextEncoder().encode("shared-secret-value") });
  const seen: [string, string][] = [];
  const auth = new TokenAuthority({
    store,
    compareSecrets: (a, b) => {
      seen.push([a, b]);
      return constantTimeEqual(a, b);
    },
  });
  const { token } = await auth.create("c1", { now: NOW, ttlMs: HOUR });
  const secret = token.split(".")[2];
  const wrong = token.slice(0, -1) + (token.endsWith("A") ? "B" : "A");
  const cases: { name: string; token: string; ok: boolean; want: [string, string][] }[] = [
    {
      name: "shared",
      token: "shared-secret-value",
      ok: true,
      want: [["shared-secret-value", "shared-secret-value"]],
    },
    {
      name: "per-cluster",
      token,
      ok: true,
      want: [[token, "shared-secret-value"], [tokenHash(secret), tokenHash(secret)]],
    },
    {
      name: "per-cluster, wrong secret",
      token: wrong,
      ok: false,
      want: [[wrong, "shared-secret-value"], [tokenHash(wrong.split(".")[2]), tokenHash(secret)]],
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      seen.length = 0;
      const ok = await auth.check(c.token, "c1", { now: NOW, consume: false }).then(() => true, (e) => {
        assert(e instanceof AuthenticationError, String(e));
        return false;
      });
      assertEquals(ok, c.ok);
      assertEquals(seen, c.want);
    });
  }
});

Deno.test("shared token: accepted for any cluster name, read from the store on every check", async () => {
  const store = new MemorySecretStore();
  const auth = new TokenAuthority({ store });
  await assertRejects(() => auth.check("anything", "c1", { now: NOW, consume: true }), AuthenticationError);
  await store.put(IDENTITY_TOKEN_SECRET, { token: new TextEncoder().encode("1vafj9032npvr90n20fn\n") });
  assertEquals(await auth.check("1vafj9032npvr90n20fn", "c1", { now: NOW, consume: true }), {
    cluster: "c1",
    kind: "shared",
  });
  // Reusable: the shared token is the seeds' long-lived secret.
  assertEquals((await auth.check("1vafj9032npvr90n20fn", "c2", { now: NOW, consume: true })).cluster, "c2");
  await assertRejects(
    () => auth.check("1vafj9032npvr90n20fX", "c1", { now: NOW, consume: true }),
    AuthenticationError,
  );
  await store.put(IDENTITY_TOKEN_SECRET, { token: new TextEncoder().encode("rotated") });
  await assertRejects(
    () => auth.check("1vafj9032npvr90n20fn", "c1", { now: NOW, consume: true }),
    AuthenticationError,
  );
  assert(await auth.anyConfigured());
});

Deno.test("per-cluster token: bound, expiring, single-use, hash only in the store", async (t) => {
  const store = new MemorySecretStore();
  const auth = new TokenAuthority({ store });
  const { token, id } = await auth.create("cluster-1", { now: NOW, ttlMs: HOUR });
  assert(/^mrbt\.[a-f0-9]{16}\.[A-Za-z0-9_-]{43}$/.test(token), token);

  await t.step("the store holds no usable token", async () => {
    const s = await store.get(BOOTSTRAP_TOKEN_PREFIX + id);
    const all = Object.values(s!.data).map((v) => new TextDecoder().decode(v)).join("\n");
    assert(!all.includes(token.split(".")[2]));
    assert(all.includes(tokenHash(token.split(".")[2])));
  });
  await t.step("another cluster is refused", async () => {
    await assertRejects(
      () => auth.check(token, "cluster-2", { now: NOW, consume: true }),
      PermissionDeniedError,
    );
  });
  await t.step("a wrong secret with the right id is refused", async () => {
    const bad = token.slice(0, -3) + (token.endsWith("AAA") ? "BBB" : "AAA");
    await assertRejects(() => auth.check(bad, "cluster-1", { now: NOW, consume: true }), AuthenticationError);
  });
  await t.step("checking without consuming leaves it usable", async () => {
    await auth.check(token, "cluster-1", { now: NOW, consume: false });
    assertEquals((await auth.list())[0].usedAt, undefined);
  });
  await t.step("first use wins, second is refused", async () => {
    assertEquals(await auth.check(token, "cluster-1", { now: NOW, consume: true }), {
      cluster: "cluster-1",
      kind: "cluster",
      tokenId: id,
    });
    await assertRejects(
      () => auth.check(token, "cluster-1", { now: NOW, consume: true }),
      AuthenticationError,
    );
    assertEquals((await auth.list())[0].usedAt, NOW);
  });
  await t.step("expired is refused", async () => {
    const t2 = await auth.create("cluster-1", { now: NOW, ttlMs: HOUR });
    const later = new Date(NOW.getTime() + HOUR);
    await assertRejects(
      () => auth.check(t2.token, "cluster-1", { now: later, consume: true }),
      AuthenticationError,
    );
  });
  await t.step("revoked is refused", async () => {
    const t3 = await auth.create("cluster-1", { now: NOW, ttlMs: HOUR });
    assert(await auth.revoke(t3.id));
    await assertRejects(
      () => auth.check(t3.token, "cluster-1", { now: NOW, consume: true }),
      AuthenticationError,
    );
  });
  await t.step("prune drops used and expired records after the grace period", async () => {
    const n = await auth.prune(new Date(NOW.getTime() + 48 * HOUR));
    assertEquals(n, 2);
    assertEquals(await auth.list(), []);
  });
});

Deno.test("per-cluster token: concurrent uses, only one wins (file store, separate authorities)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-tokens-" });
  try {
    const { token } = await new TokenAuthority({ store: new FileSecretStore(dir) }).create("c1", {
      now: NOW,
      ttlMs: HOUR,
    });
    const results = await Promise.allSettled(
      Array.from(
        { length: 8 },
        () =>
          new TokenAuthority({ store: new FileSecretStore(dir) }).check(token, "c1", {
            now: NOW,
            consume: true,
          }),
      ),
    );
    assertEquals(results.filter((r) => r.status === "fulfilled").length, 1);
    for (const r of results) {
      if (r.status === "rejected") assert(r.reason instanceof AuthenticationError, String(r.reason));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A memory store counting reads per secret name. */
class CountingStore extends MemorySecretStore {
  reads = new Map<string, number>();
  override get(name: string): Promise<Secret | undefined> {
    this.reads.set(name, (this.reads.get(name) ?? 0) + 1);
    return super.get(name);
  }
}

Deno.test("with a secret cache: the shared token is read once per bound, per-cluster tokens stay single-use", async (t) => {
  const store = new CountingStore();
  const clock = new FakeClock(NOW);
  const cache = new SecretCache({ store, clock, maxAgeMs: 5000 });
  const auth = new TokenAuthority({ store, sharedTokenReader: cache });
  await store.put(IDENTITY_TOKEN_SECRET, { token: new TextEncoder().encode("shared-1") });

  await t.step("many shared-token checks, one store read", async () => {
    for (let i = 0; i < 20; i++) await auth.check("shared-1", `c${i}`, { now: NOW, consume: true });
    assertEquals(store.reads.get(IDENTITY_TOKEN_SECRET), 1);
  });

  await t.step("deleting the shared token takes effect once the bound passed", async () => {
    await store.delete(IDENTITY_TOKEN_SECRET);
    await clock.advance(4999);
    await auth.check("shared-1", "c1", { now: NOW, consume: true }); // stale, within the documented bound
    await clock.advance(1);
    await assertRejects(() => auth.check("shared-1", "c1", { now: NOW, consume: true }), AuthenticationError);
  });

  await t.step("a per-cluster token is single-use even with its record warm in the cache", async () => {
    const { token, id } = await auth.create("cluster-1", { now: NOW, ttlMs: HOUR });
    const name = BOOTSTRAP_TOKEN_PREFIX + id;
    // The worst case: the record as it was before any use sits in the cache, which never expires here.
    const stale = new SecretCache({ store, clock, maxAgeMs: Number.MAX_SAFE_INTEGER });
    await stale.get(name);
    const cached = new TokenAuthority({ store, sharedTokenReader: stale });
    const before = store.reads.get(name) ?? 0;
    await cached.check(token, "cluster-1", { now: NOW, consume: true });
    await assertRejects(
      () => cached.check(token, "cluster-1", { now: NOW, consume: true }),
      AuthenticationError,
    );
    await assertRejects(
      () => auth.check(token, "cluster-1", { now: NOW, consume: true }),
      AuthenticationError,
    );
    assertEquals((store.reads.get(name) ?? 0) - before, 3, "every check read the record from the store");
  });

  await t.step("concurrent uses through cached authorities: exactly one wins", async () => {
    const { token } = await auth.create("cluster-2", { now: NOW, ttlMs: HOUR });
    const results = await Promise.allSettled(
      Array.from(
        { length: 8 },
        () =>
          new TokenAuthority({ store, sharedTokenReader: cache }).check(token, "cluster-2", {
            now: NOW,
            consume: true,
          }),
      ),
    );
    assertEquals(results.filter((r) => r.status === "fulfilled").length, 1);
    for (const r of results) {
      if (r.status === "rejected") assert(r.reason instanceof AuthenticationError, String(r.reason));
    }
  });
});

Deno.test("create validates its input", async (t) => {
  const auth = new TokenAuthority({ store: new MemorySecretStore() });
  const cases: [string, () => Promise<unknown>][] = [
    ["bad cluster", () => auth.create("Not_DNS", { now: NOW, ttlMs: HOUR })],
    ["bad ttl", () => auth.create("c1", { now: NOW, ttlMs: 0 })],
  ];
  for (const [name, fn] of cases) {
    await t.step(name, async () => {
      await assertRejects(fn, InvalidInputError);
    });
  }
  await t.step("cluster names", () => {
    for (const ok of ["c1", "cluster-1", "a.b.c", "x".repeat(63)]) validateClusterName(ok);
    for (const bad of ["", "-a", "a-", "A", "a..b", "x".repeat(64), "a_b"]) {
      assertThrows(() => validateClusterName(bad), InvalidInputError);
    }
  });
  await t.step("an invalid name is echoed only when it is short plain text", () => {
    const cases: { name: string; shown: boolean }[] = [
      { name: "My_Cluster", shown: true },
      { name: "cluster-2\u001a\u0003-----BEGIN CERTIFICATE REQUEST-----", shown: false },
      { name: "bad\nforged log line", shown: false },
      { name: "x".repeat(300), shown: false },
    ];
    for (const { name, shown } of cases) {
      const e = assertThrows(() => validateClusterName(name), InvalidInputError);
      assertEquals(e.message.includes(JSON.stringify(name)), shown, e.message);
      assert(!e.message.includes("-----BEGIN") && !e.message.includes("\n"), e.message);
    }
  });
});
