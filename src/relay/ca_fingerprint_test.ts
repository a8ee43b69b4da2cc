import { assertEquals, assertNotEquals } from "../testing/assert.ts";
import { caFingerprint } from "./ca_fingerprint.ts";

const PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIQ\nAbCdEf==\n-----END CERTIFICATE-----\n";

Deno.test("caFingerprint: white space does not matter, content does", async (t) => {
  const cases: [string, string, boolean][] = [
    ["CRLF line endings", PEM.replace(/\n/g, "\r\n"), true],
    ["other line wrapping", PEM.replace("AgIQ\nAbCd", "AgIQAb\nCd"), true],
    ["no trailing newline", PEM.trimEnd(), true],
    ["another byte", PEM.replace("AbCd", "AbCe"), false],
    ["a second certificate", PEM + PEM, false],
  ];
  for (const [name, other, same] of cases) {
    await t.step(name, () => {
      if (same) assertEquals(caFingerprint(other), caFingerprint(PEM));
      else assertNotEquals(caFingerprint(other), caFingerprint(PEM));
    });
  }
  await t.step("hex SHA-256", () => assertEquals(caFingerprint(PEM).length, 64));
});
