import { FakeClock } from "../clock.ts";
import { InvalidInputError, UnavailableError } from "../errors.ts";
import { MemorySecretStore, type Secret } from "../store/mod.ts";
import { assertEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import { SecretCache } from "./secret_cache.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const NAME = "relay-identity-token-secret";

/** A memory store that counts reads, can hold them until released, and can fail the next one. */
function countingStore() {
  const inner = new MemorySecretStore();
  const s = {
    inner,
    reads: 0,
    hold: undefined as Promise<void> | undefined,
    failNext: false,
    async get(name: string): Promise<Secret | undefined> {
      s.reads++;
      if (s.hold) await s.hold;
      if (s.failNext) {
        s.failNext = false;
        throw new UnavailableError("store unreachable");
      }
      return await inner.get(name);
    },
  };
  return s;
}

const text = (sec: Secret | undefined) => sec ? dec.decode(sec.data.token) : undefined;

Deno.test("secret cache: concurrent gets share one store read (singleflight)", async () => {
  const store = countingStore();
  await store.inner.put(NAME, { token: enc.encode("t1") });
  let release!: () => void;
  store.hold = new Promise((r) => release = r);
  const cache = new SecretCache({ store, clock: new FakeClock(), maxAgeMs: 5000 });
  const all = Promise.all(Array.from({ length: 50 }, () => cache.get(NAME)));
  release();
  const got = await all;
  assertEquals(store.reads, 1);
  assertEquals(new Set(got.map(text)), new Set(["t1"]));
});

Deno.test("secret cache: staleness is bounded by maxAgeMs from the start of the read", async (t) => {
  const cases: { name: string; advanceMs: number; reads: number; value: string | undefined }[] = [
    { name: "just inside the bound: the cached value", advanceMs: 4999, reads: 1, value: "t1" },
    { name: "at the bound: a new version is picked up", advanceMs: 5000, reads: 2, value: "t2" },
    { name: "well after: a new version is picked up", advanceMs: 60_000, reads: 2, value: "t2" },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const store = countingStore();
      const clock = new FakeClock();
      await store.inner.put(NAME, { token: enc.encode("t1") });
      const cache = new SecretCache({ store, clock, maxAgeMs: 5000 });
      const first = await cache.get(NAME);
      await store.inner.put(NAME, { token: enc.encode("t2") });
      await clock.advance(c.advanceMs);
      const second = await cache.get(NAME);
      assertEquals([store.reads, text(second)], [c.reads, c.value]);
      assertEquals(second!.version === first!.version, c.value === "t1");
    });
  }

  await t.step("a deletion is seen after the bound (absence is cached the same way)", async () => {
    const store = countingStore();
    const clock = new FakeClock();
    await store.inner.put(NAME, { token: enc.encode("t1") });
    const cache = new SecretCache({ store, clock, maxAgeMs: 5000 });
    await cache.get(NAME);
    await store.inner.delete(NAME);
    assertEquals(text(await cache.get(NAME)), "t1");
    await clock.advance(5000);
    assertEquals(await cache.get(NAME), undefined);
    await store.inner.put(NAME, { token: enc.encode("t3") });
    assertEquals(await cache.get(NAME), undefined, "absence is reused within the bound too");
    assertEquals(store.reads, 2);
  });
});

Deno.test("secret cache: failures are not cached; maxAgeMs 0 reads every time", async (t) => {
  await t.step("a failed read is retried by the next get", async () => {
    const store = countingStore();
    await store.inner.put(NAME, { token: enc.encode("t1") });
    const cache = new SecretCache({ store, clock: new FakeClock(), maxAgeMs: 5000 });
    store.failNext = true;
    await assertRejects(() => cache.get(NAME), UnavailableError);
    assertEquals(text(await cache.get(NAME)), "t1");
    assertEquals(store.reads, 2);
  });

  await t.step("maxAgeMs 0", async () => {
    const store = countingStore();
    await store.inner.put(NAME, { token: enc.encode("t1") });
    const cache = new SecretCache({ store, clock: new FakeClock(), maxAgeMs: 0 });
    await cache.get(NAME);
    await cache.get(NAME);
    assertEquals(store.reads, 2);
  });

  for (const bad of [-1, NaN, Infinity]) {
    await t.step(`maxAgeMs ${bad} is refused`, () => {
      assertThrows(
        () => new SecretCache({ store: countingStore(), clock: new FakeClock(), maxAgeMs: bad }),
        InvalidInputError,
      );
    });
  }
});
