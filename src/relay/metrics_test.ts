import { InvalidInputError } from "../errors.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { MetricsRegistry } from "./metrics.ts";

Deno.test("MetricsRegistry renders the text exposition format", async (t) => {
  const cases: { name: string; build: (r: MetricsRegistry) => void; want: string }[] = [
    { name: "empty registry renders nothing", build: () => {}, want: "" },
    {
      name: "counter without labels",
      build: (r) => {
        const c = r.counter("meshrelay_discovery_pushes_total", "Discovery diffs applied.");
        c.inc();
        c.inc(undefined, 2);
      },
      want: "# HELP meshrelay_discovery_pushes_total Discovery diffs applied.\n" +
        "# TYPE meshrelay_discovery_pushes_total counter\n" +
        "meshrelay_discovery_pushes_total 3\n",
    },
    {
      name: "labels sorted by name, series sorted, values escaped",
      build: (r) => {
        const c = r.counter("errs_total", "Errors.");
        c.inc({ reason: 'a"b\\c\nd', cluster: "x" });
        c.inc({ cluster: "a", reason: "z" });
      },
      want: "# HELP errs_total Errors.\n# TYPE errs_total counter\n" +
        'errs_total{cluster="a",reason="z"} 1\n' +
        'errs_total{cluster="x",reason="a\\"b\\\\c\\nd"} 1\n',
    },
    {
      name: "gauge set, inc, dec, remove",
      build: (r) => {
        const g = r.gauge("relay_push_clients_connected", "Agents connected.");
        g.inc();
        g.inc();
        g.dec();
        g.set(7, { cluster: "c1" });
        g.set(1, { cluster: "gone" });
        g.remove({ cluster: "gone" });
      },
      want: "# HELP relay_push_clients_connected Agents connected.\n" +
        "# TYPE relay_push_clients_connected gauge\n" +
        "relay_push_clients_connected 1\n" +
        'relay_push_clients_connected{cluster="c1"} 7\n',
    },
    {
      name: "histogram: cumulative buckets, +Inf, sum and count",
      build: (r) => {
        const h = r.histogram("reconcile_seconds", "Reconcile time.", [0.1, 1]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(3);
        h.observe(0.1, { phase: "x" });
      },
      want: "# HELP reconcile_seconds Reconcile time.\n# TYPE reconcile_seconds histogram\n" +
        'reconcile_seconds_bucket{le="0.1"} 1\n' +
        'reconcile_seconds_bucket{le="1"} 2\n' +
        'reconcile_seconds_bucket{le="+Inf"} 3\n' +
        "reconcile_seconds_sum 3.55\n" +
        "reconcile_seconds_count 3\n" +
        'reconcile_seconds_bucket{phase="x",le="0.1"} 1\n' +
        'reconcile_seconds_bucket{phase="x",le="1"} 1\n' +
        'reconcile_seconds_bucket{phase="x",le="+Inf"} 1\n' +
        'reconcile_seconds_sum{phase="x"} 0.1\n' +
        'reconcile_seconds_count{phase="x"} 1\n',
    },
    {
      name: "families sorted by name; help escaped",
      build: (r) => {
        r.gauge("b_g", "line1\nline2 \\ end").set(Infinity);
        r.counter("a_c", "A.").inc();
      },
      want: "# HELP a_c A.\n# TYPE a_c counter\na_c 1\n" +
        "# HELP b_g line1\\nline2 \\\\ end\n# TYPE b_g gauge\nb_g +Inf\n",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const r = new MetricsRegistry();
      c.build(r);
      assertEquals(r.render(), c.want);
    });
  }
});

Deno.test("MetricsRegistry shares a family by name and kind, refuses bad input", async (t) => {
  await t.step("same name and kind returns the same metric", () => {
    const r = new MetricsRegistry();
    r.counter("x_total", "X.").inc();
    r.counter("x_total", "X.").inc();
    assertEquals(r.render(), "# HELP x_total X.\n# TYPE x_total counter\nx_total 2\n");
  });
  const bad: { name: string; fn: (r: MetricsRegistry) => void }[] = [
    { name: "same name, other kind", fn: (r) => (r.counter("m", "h"), r.gauge("m", "h")) },
    { name: "invalid metric name", fn: (r) => r.counter("1bad", "h") },
    { name: "invalid label name", fn: (r) => r.counter("m", "h").inc({ "a-b": "x" }) },
    { name: "reserved label name", fn: (r) => r.counter("m", "h").inc({ __name__: "x" }) },
    { name: "counter decrease", fn: (r) => r.counter("m", "h").inc(undefined, -1) },
    { name: "non-finite increment", fn: (r) => r.gauge("m", "h").inc(undefined, NaN) },
    { name: "unsorted buckets", fn: (r) => r.histogram("m", "h", [1, 0.5]) },
  ];
  for (const c of bad) {
    await t.step(c.name, () => {
      assertThrows(() => c.fn(new MetricsRegistry()), InvalidInputError);
    });
  }
});
