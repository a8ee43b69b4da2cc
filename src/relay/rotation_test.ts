import { InvalidInputError } from "../errors.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { isExpired, renewAt, rotationWindow, shouldRotate, validateRotationOptions } from "./rotation.ts";

const DAY = 86_400_000;
const NB = new Date(Date.UTC(2026, 0, 1));
const cert = { notBefore: NB, notAfter: new Date(NB.getTime() + 100 * DAY) };
const day = (n: number) => new Date(NB.getTime() + n * DAY);

Deno.test("renewAt: uniformly in [70%, 90%] of the lifetime by default", async (t) => {
  const cases: [number, Date][] = [[0, day(70)], [0.5, day(80)], [0.75, day(85)], [1, day(90)]];
  for (const [r, want] of cases) {
    await t.step(`random ${r}`, () => assertEquals(renewAt(cert, undefined, r).getTime(), want.getTime()));
  }
});

Deno.test("renewAt: knobs move and narrow the window", async (t) => {
  const cases: { opts: { graceRatio?: number; jitterRatio?: number }; r: number; want: Date }[] = [
    { opts: { graceRatio: 0.5, jitterRatio: 0 }, r: 0.7, want: day(50) }, // Istio-like half life, no jitter
    { opts: { graceRatio: 1 / 3, jitterRatio: 0 }, r: 0, want: new Date(NB.getTime() + (200 / 3) * DAY) },
    { opts: { graceRatio: 0.1, jitterRatio: 0.4 }, r: 0, want: day(50) },
  ];
  for (const c of cases) {
    await t.step(JSON.stringify(c.opts), () => {
      const got = renewAt(cert, c.opts, c.r).getTime();
      assertEquals(Math.abs(got - c.want.getTime()) <= 1, true, `${new Date(got).toISOString()}`);
    });
  }
});

Deno.test("shouldRotate: from the start of the window on, and when expired", async (t) => {
  const cases: [Date, boolean][] = [[day(0), false], [day(69.99), false], [day(70), true], [day(95), true], [
    day(200),
    true,
  ]];
  for (const [now, want] of cases) {
    await t.step(now.toISOString(), () => assertEquals(shouldRotate(now, cert), want));
  }
  assertEquals(rotationWindow(cert).end.getTime(), day(90).getTime());
});

Deno.test("isExpired", () => {
  assertEquals(isExpired(day(-1), cert), true);
  assertEquals(isExpired(day(50), cert), false);
  assertEquals(isExpired(day(100), cert), true);
});

Deno.test("rotation options are validated", async (t) => {
  const bad = [{ graceRatio: 0 }, { graceRatio: 1 }, { graceRatio: 0.5, jitterRatio: 0.5 }, {
    jitterRatio: -0.1,
  }, {
    graceRatio: NaN,
  }];
  for (const o of bad) {
    await t.step(JSON.stringify(o), () => {
      assertThrows(() => validateRotationOptions(o), InvalidInputError);
    });
  }
  validateRotationOptions({ graceRatio: 0.1, jitterRatio: 0 });
});
