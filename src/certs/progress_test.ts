import { FakeClock } from "../clock.ts";
import { assertEquals, assertRejects } from "../testing/assert.ts";
import { progressReporter } from "./progress.ts";

Deno.test("progressReporter", async (t) => {
  const cases = [
    {
      name: "terminal: step line, a dot per second, time",
      steps: true,
      ticks: true,
      want: /^p: key \.\.\.\.\. done \(2\.5 s\)\n$/,
    },
    {
      name: "--verbose in a pipe: no dots",
      steps: true,
      ticks: false,
      want: /^p: key \.\.\. done \(2\.5 s\)\n$/,
    },
    { name: "pipe without --verbose: silent", steps: false, ticks: false, want: /^$/ },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const clock = new FakeClock(new Date("2026-01-01T00:00:00Z"));
      let out = "";
      const p = progressReporter({
        write: (s) => out += s,
        steps: c.steps,
        ticks: c.ticks,
        clock,
        prefix: "p: ",
      });
      const got = await p.step("key", async () => {
        for (let i = 0; i < 5; i++) {
          await clock.advance(500);
        }
        return 7;
      });
      assertEquals(got, 7);
      assertEquals(c.want.test(out), true, JSON.stringify(out));
    });
  }
  await t.step("a failing step says so and rethrows; notes always print", async () => {
    const clock = new FakeClock(new Date(0));
    let out = "";
    const p = progressReporter({ write: (s) => out += s, steps: true, ticks: false, clock, prefix: "" });
    await assertRejects(() => p.step("x", () => Promise.reject(new RangeError("no"))), RangeError);
    const quiet = progressReporter({ write: (s) => out += s, steps: false, ticks: false, clock, prefix: "" });
    quiet.note("kept the key in k");
    assertEquals(out, "x ... failed\nkept the key in k\n");
  });
});
