import { assertEquals } from "../testing/assert.ts";
import { CHECK_EXIT, checkExitCode, renderCheck } from "./check.ts";

Deno.test("checkExitCode: expired beats renew beats ok", () => {
  const table: [string[], number][] = [
    [[], CHECK_EXIT.ok],
    [["ok", "ok"], CHECK_EXIT.ok],
    [["ok", "renew"], CHECK_EXIT.renew],
    [["not_yet_valid"], CHECK_EXIT.renew],
    [["renew", "expired", "ok"], CHECK_EXIT.expired],
  ];
  for (const [statuses, want] of table) {
    assertEquals(
      checkExitCode(statuses.map((status) => ({ status: status as "ok" }))),
      want,
      statuses.join(","),
    );
  }
});

Deno.test("renderCheck aligns columns and counts duplicates", () => {
  const out = renderCheck([
    {
      subject: "CN=root",
      notAfter: "2036-01-01T00:00:00.000Z",
      daysLeft: 3650,
      status: "ok",
      paths: ["a/ca.crt", "b/ca.crt"],
    },
    {
      subject: "CN=server",
      notAfter: "2026-02-01T00:00:00.000Z",
      daysLeft: -3,
      status: "expired",
      paths: ["b/tls.crt"],
    },
  ]);
  assertEquals(out.split("\n"), [
    "STATUS   DAYS LEFT  NOT AFTER   SUBJECT    FILE",
    "ok       3650       2036-01-01  CN=root    a/ca.crt (+1 more)",
    "expired  -3         2026-02-01  CN=server  b/tls.crt",
    "",
  ]);
});
