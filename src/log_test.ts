import { assertEquals } from "./testing/assert.ts";
import { jsonLogger, type LogFields } from "./log.ts";

function capture(level?: "debug" | "info" | "warn" | "error", fields?: LogFields) {
  const lines: LogFields[] = [];
  const log = jsonLogger({
    level,
    fields,
    write: (s) => lines.push(JSON.parse(s)),
    now: () => new Date("2026-12-02T00:00:00Z"),
  });
  return { log, lines };
}

Deno.test("jsonLogger", async (t) => {
  await t.step("drops lines below the level", () => {
    const cases: { level: "debug" | "info" | "warn" | "error"; want: string[] }[] = [
      { level: "debug", want: ["debug", "info", "warn", "error"] },
      { level: "info", want: ["info", "warn", "error"] },
      { level: "warn", want: ["warn", "error"] },
      { level: "error", want: ["error"] },
    ];
    for (const c of cases) {
      const { log, lines } = capture(c.level);
      log.debug("d");
      log.info("i");
      log.warn("w");
      log.error("e");
      assertEquals(lines.map((l) => l.level), c.want, c.level);
    }
  });

  await t.step("children add fields without changing their parent", () => {
    const { log, lines } = capture("info", { component: "x" });
    const a = log.child({ stream: 1 });
    const b = a.child({ cluster: "c1", stream: 2 });
    log.info("root");
    a.info("a");
    b.info("b", { extra: true });
    assertEquals(lines, [
      { ts: "2026-12-02T00:00:00.000Z", level: "info", msg: "root", component: "x" },
      { ts: "2026-12-02T00:00:00.000Z", level: "info", msg: "a", component: "x", stream: 1 },
      {
        ts: "2026-12-02T00:00:00.000Z",
        level: "info",
        msg: "b",
        component: "x",
        stream: 2,
        cluster: "c1",
        extra: true,
      },
    ]);
  });

  await t.step("children share the level and the output", () => {
    const { log, lines } = capture("warn");
    const c = log.child({ k: "v" });
    c.info("dropped");
    c.warn("kept");
    assertEquals(lines.map((l) => l.msg), ["kept"]);
  });

  await t.step("errors become their message, bigints their digits", () => {
    const { log, lines } = capture("info");
    log.info("m", { error: new Error("boom"), n: 12345678901234567890n });
    assertEquals(lines[0].error, "boom");
    assertEquals(lines[0].n, "12345678901234567890");
  });
});
