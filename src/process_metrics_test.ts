import { MetricsRegistry } from "./relay/mod.ts";
import { registerProcessMetrics } from "./process_metrics.ts";
import { assert } from "./testing/assert.ts";

Deno.test("process metrics are read at every scrape", async (t) => {
  const m = new MetricsRegistry();
  let rss = 100;
  registerProcessMetrics(m, {
    memoryUsage: () => ({ rss, heapTotal: 50, heapUsed: 20, external: 5 }),
    startTime: new Date("2026-01-01T00:00:00Z"),
  });
  const cases: { name: string; rss: number; expect: string[] }[] = [
    {
      name: "first scrape",
      rss: 100,
      expect: [
        "process_resident_memory_bytes 100",
        "process_start_time_seconds 1767225600",
        'meshrelay_js_heap_bytes{kind="used"} 20',
        'meshrelay_js_heap_bytes{kind="total"} 50',
        "meshrelay_js_external_memory_bytes 5",
      ],
    },
    { name: "a later scrape sees the new value", rss: 4096, expect: ["process_resident_memory_bytes 4096"] },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      rss = c.rss;
      const text = m.render();
      for (const line of c.expect) assert(text.split("\n").includes(line), `${line} in\n${text}`);
    });
  }
});
