import { PermissionDeniedError } from "../errors.ts";
import { MemorySecretStore } from "../store/mod.ts";
import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { normalizeSerial, RevocationList } from "./revocation.ts";

const T = (m: number) => new Date(Date.UTC(2026, 0, 1) + m * 60_000);

Deno.test("revoked serials are refused, others pass; the list survives a reload", async () => {
  const store = new MemorySecretStore();
  const r = await RevocationList.load(store);
  const cert = { serial: "00:AB:cd", cluster: "c1", notBefore: T(0) };
  r.check(cert);
  await r.revokeSerial("ABCD", { now: T(1), reason: "key compromised", cluster: "c1", notAfter: T(100) });
  assertThrows(() => r.check(cert), PermissionDeniedError);
  r.check({ ...cert, serial: "abce" });
  const again = await RevocationList.load(store);
  assert(again.reasonRefused(cert)?.includes("key compromised"));
  assertEquals(await again.prune(T(50)), 0);
  assertEquals(await again.prune(T(101)), 1);
  again.check(cert);
});

Deno.test("a deregistered cluster's earlier certificates stay refused; later ones pass", async (t) => {
  const r = await RevocationList.load(new MemorySecretStore());
  await r.revokeCluster("c1", T(10));
  const cases: [string, { serial: string; cluster: string; notBefore: Date }, boolean][] = [
    ["issued before", { serial: "1", cluster: "c1", notBefore: T(0) }, false],
    ["issued after", { serial: "2", cluster: "c1", notBefore: T(11) }, true],
    ["other cluster", { serial: "3", cluster: "c2", notBefore: T(0) }, true],
  ];
  for (const [name, cert, ok] of cases) {
    await t.step(name, () => assertEquals(r.reasonRefused(cert) === undefined, ok));
  }
  await t.step("reissued after re-registration despite backdating", async () => {
    const backdated = { serial: "4", cluster: "c1", notBefore: T(8) };
    assert(r.reasonRefused(backdated));
    await r.allowReissued("c1", "4", T(8));
    assertEquals(r.reasonRefused(backdated), undefined);
  });
});

Deno.test("concurrent writers through one store never lose an entry", async () => {
  const store = new MemorySecretStore();
  const lists = await Promise.all(Array.from({ length: 5 }, () => RevocationList.load(store)));
  await Promise.all(lists.map((l, i) => l.revokeSerial(String(i + 1), { now: T(0), reason: "test" })));
  const final = await RevocationList.load(store);
  assertEquals(Object.keys(final.snapshot().serials).sort(), ["1", "2", "3", "4", "5"]);
});

Deno.test("normalizeSerial", () => {
  assertEquals(normalizeSerial("00:0A:bC"), "abc");
  assertEquals(normalizeSerial("0"), "0");
});
