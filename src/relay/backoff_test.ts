import { InvalidInputError } from "../errors.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { Backoff, backoffCeiling, backoffDelay } from "./backoff.ts";

Deno.test("backoffCeiling grows by the factor up to the cap", async (t) => {
  const cases: { attempt: number; opts?: Parameters<typeof backoffCeiling>[1]; want: number }[] = [
    { attempt: 0, want: 500 },
    { attempt: 1, want: 1000 },
    { attempt: 5, want: 16_000 },
    { attempt: 6, want: 30_000 },
    { attempt: 10_000, want: 30_000 },
    { attempt: -3, want: 500 },
    { attempt: 2, opts: { initialMs: 100, factor: 3, maxMs: 1000 }, want: 900 },
    { attempt: 3, opts: { initialMs: 100, factor: 3, maxMs: 1000 }, want: 1000 },
    { attempt: 4, opts: { initialMs: 100, factor: 1, maxMs: 1000 }, want: 100 },
  ];
  for (const c of cases) {
    await t.step(`attempt ${c.attempt} ${JSON.stringify(c.opts ?? {})}`, () => {
      assertEquals(backoffCeiling(c.attempt, c.opts), c.want);
    });
  }
});

Deno.test("backoffDelay is full jitter: random() scales the whole ceiling", async (t) => {
  const cases: { r: number; attempt: number; want: number }[] = [
    { r: 0, attempt: 3, want: 0 },
    { r: 0.5, attempt: 0, want: 250 },
    { r: 0.999, attempt: 1, want: 999 },
    { r: 0.25, attempt: 20, want: 7500 },
    { r: 1.7, attempt: 0, want: 500 }, // a misbehaving random is clamped, never beyond the ceiling
    { r: -1, attempt: 0, want: 0 },
    { r: NaN, attempt: 0, want: 0 },
  ];
  for (const c of cases) {
    await t.step(`r=${c.r} attempt=${c.attempt}`, () => {
      assertEquals(backoffDelay(c.attempt, () => c.r), c.want);
    });
  }
});

Deno.test("Backoff counts attempts and resets", async (t) => {
  await t.step("successive waits follow the ceilings, reset starts over", () => {
    const b = new Backoff(() => 0.5, { initialMs: 100, maxMs: 1000 });
    assertEquals([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()], [50, 100, 200, 400, 500, 500]);
    assertEquals(b.attempt, 6);
    b.reset();
    assertEquals(b.attempt, 0);
    assertEquals(b.next(), 50);
  });
  const bad = [{ initialMs: 0 }, { initialMs: 10, maxMs: 5 }, { factor: 0.5 }, { maxMs: Infinity }];
  for (const opts of bad) {
    await t.step(`refuses ${JSON.stringify(opts)}`, () => {
      assertThrows(() => new Backoff(Math.random, opts), InvalidInputError);
    });
  }
});
