import { assertEquals, assertStringIncludes, assertThrows } from "./testing/assert.ts";
import { logLevelOf, securityModeOf } from "./cli_common.ts";
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
