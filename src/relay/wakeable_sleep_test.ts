import { assertEquals } from "../testing/assert.ts";
import { FakeClock } from "../clock.ts";
import { WakeableSleep } from "./wakeable_sleep.ts";

Deno.test("WakeableSleep", async (t) => {
  const cases: [string, (s: WakeableSleep, clock: FakeClock, stop: AbortController) => Promise<void>][] = [
    ["ends when its time comes", (_s, clock) => clock.advance(1000)],
    ["wake ends it early", (s) => Promise.resolve(s.wake())],
    ["the stop signal ends it early", (_s, _c, stop) => Promise.resolve(stop.abort())],
  ];
  for (const [name, end] of cases) {
    await t.step(name, async () => {
      const clock = new FakeClock();
      const s = new WakeableSleep();
      const stop = new AbortController();
      const slept = s.sleep(clock, 1000, stop.signal);
      await clock.waitForSleepers(1);
      await end(s, clock, stop);
      await slept;
      assertEquals(clock.pending, 0);
    });
  }
});
