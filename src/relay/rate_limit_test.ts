import { ResourceExhaustedError } from "../errors.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { FailureLimiter, peerAddress } from "./rate_limit.ts";

const T0 = Date.UTC(2026, 0, 1);
const at = (ms: number) => new Date(T0 + ms);

Deno.test("FailureLimiter: burst, refusal, refill, per peer", async (t) => {
  const l = new FailureLimiter({ burst: 3, perMinute: 6 });
  await t.step("a burst of failures is allowed", () => {
    for (let i = 0; i < 3; i++) {
      l.check("10.0.0.1", at(0));
      l.fail("10.0.0.1", at(0));
    }
  });
  await t.step("then refused with the wait in the message", () => {
    assertEquals(l.retryAfterMs("10.0.0.1", at(0)), 10_000);
    const e = assertThrows(() => l.check("10.0.0.1", at(0)), ResourceExhaustedError);
    assertEquals(e.message, "too many failed attempts from this address; retry in 10 s");
  });
  await t.step("other peers are not affected", () => l.check("10.0.0.2", at(0)));
  await t.step("one token back after 10 s", () => {
    assertEquals(l.retryAfterMs("10.0.0.1", at(9_999)) > 0, true);
    l.check("10.0.0.1", at(10_000));
    l.fail("10.0.0.1", at(10_000));
    assertThrows(() => l.check("10.0.0.1", at(10_000)), ResourceExhaustedError);
  });
  await t.step("refill is capped at the burst", () => {
    const later = 3600_000;
    for (let i = 0; i < 3; i++) l.fail("10.0.0.1", at(later));
    assertThrows(() => l.check("10.0.0.1", at(later)), ResourceExhaustedError);
  });
});

Deno.test("FailureLimiter: memory is bounded", () => {
  const l = new FailureLimiter({ burst: 1, perMinute: 60, maxPeers: 100 });
  for (let i = 0; i < 1000; i++) l.fail(`10.0.${i >> 8}.${i & 255}`, at(i));
  assertEquals(l.size, 100);
  // The most recent offenders are the ones remembered.
  assertThrows(() => l.check("10.0.3.231", at(999)), ResourceExhaustedError);
});

Deno.test("peerAddress strips scheme and port", async (t) => {
  const cases: [string, string][] = [
    ["ipv4:127.0.0.1:5555", "127.0.0.1"],
    ["127.0.0.1:5555", "127.0.0.1"],
    ["ipv6:[::1]:5555", "::1"],
    ["[2001:db8::1]:80", "2001:db8::1"],
    ["2001:db8::1", "2001:db8::1"],
    ["unix:/tmp/s", "/tmp/s"],
  ];
  for (const [input, want] of cases) await t.step(input, () => assertEquals(peerAddress(input), want));
});
