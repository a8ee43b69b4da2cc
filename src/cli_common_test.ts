import { assertEquals, assertRejects, assertStringIncludes, assertThrows } from "./testing/assert.ts";
import { Command } from "commander";
import { checkDirOrAbsent, logLevelOf, metricsOptions, securityModeOf } from "./cli_common.ts";
import { InvalidInputError } from "./errors.ts";
import type { SecurityMode } from "./relay/mod.ts";

Deno.test("securityModeOf", async (t) => {
  const cases: [boolean | undefined, SecurityMode, SecurityMode | undefined][] = [
    [undefined, "mtls", "mtls"],
    [undefined, "tls", "tls"],
    [true, "mtls", "insecure"],
    [true, "insecure", "insecure"],
    [true, "tls", undefined],
  ];
  for (const [insecure, tlsMode, want] of cases) {
    await t.step(`--insecure=${insecure} --tls-mode ${tlsMode}`, () => {
      if (want) assertEquals(securityModeOf({ insecure, tlsMode }), want);
      else {
        const e = assertThrows(() => securityModeOf({ insecure, tlsMode }), InvalidInputError);
        assertStringIncludes(e.message, "contradicts");
      }
    });
  }
});

Deno.test("logLevelOf names the flag when the level is unknown", () => {
  assertEquals(logLevelOf("warn"), "warn");
  assertStringIncludes(assertThrows(() => logLevelOf("loud"), InvalidInputError).message, "--log-level");
});

Deno.test("metricsOptions: defaults, a port, and --no-metrics", async (t) => {
  const cases: [string[], Record<string, unknown>][] = [
    [[], { metricsHost: "0.0.0.0", metricsPort: 9091, metrics: true }],
    [["--metrics-port", "0", "--metrics-host", "127.0.0.1"], { metricsHost: "127.0.0.1", metricsPort: 0 }],
    [["--no-metrics"], { metrics: false }],
  ];
  for (const [args, want] of cases) {
    await t.step(args.join(" ") || "(none)", () => {
      const cmd = new Command().exitOverride();
      for (const o of metricsOptions()) cmd.addOption(o);
      const opts = cmd.parse(args, { from: "user" }).opts();
      for (const [k, v] of Object.entries(want)) assertEquals(opts[k], v, k);
    });
  }
});

Deno.test("checkDirOrAbsent: a folder or nothing is fine, a file in the way is one clear error", async () => {
  const d = await Deno.makeTempDir();
  try {
    await checkDirOrAbsent(d, "--apply-dir");
    await checkDirOrAbsent(`${d}/not-yet`, "--apply-dir");
    await Deno.writeTextFile(`${d}/file`, "x");
    const e = await assertRejects(() => checkDirOrAbsent(`${d}/file`, "--secrets-dir"), InvalidInputError);
    assertEquals(e.message, `--secrets-dir: ${d}/file exists and is not a directory`);
  } finally {
    await Deno.remove(d, { recursive: true });
  }
});
