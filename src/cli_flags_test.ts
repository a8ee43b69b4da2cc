import { InvalidArgumentError } from "commander";
import { assertEquals, assertThrows } from "./testing/assert.ts";
import { parseDuration, parsePort, parsePositiveInt, parseRatio } from "./cli_flags.ts";

Deno.test("parseDuration", async (t) => {
  const ok: [string, number][] = [
    ["500ms", 500],
    ["10s", 10_000],
    ["30m", 1_800_000],
    ["1h", 3_600_000],
    [
      "365d",
      31_536_000_000,
    ],
    ["1h30m", 5_400_000],
    ["1.5s", 1500],
  ];
  for (const [v, want] of ok) await t.step(v, () => assertEquals(parseDuration(v), want));
  for (const bad of ["", "10", "1x", "-1s", "0s", "h", "1h 2m"]) {
    await t.step(`refuses ${JSON.stringify(bad)}`, () => {
      assertThrows(() => parseDuration(bad), InvalidArgumentError);
    });
  }
});

Deno.test("parsePort, parsePositiveInt, parseRatio", () => {
  assertEquals(parsePort("0"), 0);
  assertEquals(parsePort("9900"), 9900);
  assertThrows(() => parsePort("65536"), InvalidArgumentError);
  assertThrows(() => parsePort("x"), InvalidArgumentError);
  assertEquals(parsePositiveInt("3"), 3);
  assertThrows(() => parsePositiveInt("0"), InvalidArgumentError);
  assertEquals(parseRatio("0.1"), 0.1);
  assertThrows(() => parseRatio("1"), InvalidArgumentError);
  assertThrows(() => parseRatio(""), InvalidArgumentError);
});
