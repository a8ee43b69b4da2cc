import { Command, Option } from "commander";
import { runProgram } from "./cli_run.ts";
import { assertEquals } from "./testing/assert.ts";

/** A program with one boolean flag fed by `VAR`, run with `VAR=value`; what the action saw, the code, stderr. */
async function withEnv(value: string | undefined, args: string[] = []) {
  const VAR = "MESHRELAY_TEST_STRICT_BOOL";
  let seen: unknown = "not run";
  const err: string[] = [];
  const program = new Command("t").exitOverride()
    .addOption(new Option("--insecure", "plaintext").env(VAR))
    .action((opts) => {
      seen = opts.insecure;
    });
  if (value === undefined) Deno.env.delete(VAR);
  else Deno.env.set(VAR, value);
  try {
    const code = await runProgram("test", program, args, () => 0, (l) => err.push(l));
    return { seen, code, err: err.join("") };
  } finally {
    Deno.env.delete(VAR);
  }
}

Deno.test("a boolean flag from the environment follows its value, not its mere presence", async (t) => {
  for (const v of ["false", "0", "no", "off", "", "FALSE"]) {
    await t.step(`${JSON.stringify(v)} is off`, async () => {
      const r = await withEnv(v);
      assertEquals([r.seen, r.code], [false, 0]);
    });
  }
  for (const v of ["true", "1", "yes", "on", "True"]) {
    await t.step(`${JSON.stringify(v)} is on`, async () => {
      assertEquals((await withEnv(v)).seen, true);
    });
  }
  await t.step("unset: off (commander's undefined)", async () => {
    assertEquals((await withEnv(undefined)).seen, undefined);
  });
  await t.step("the flag on the command line wins over the environment", async () => {
    assertEquals((await withEnv("false", ["--insecure"])).seen, true);
  });
  await t.step("any other value is refused with one line, exit 2, before the action runs", async () => {
    const r = await withEnv("maybe");
    assertEquals(r.seen, "not run");
    assertEquals(r.code, 2);
    assertEquals(
      r.err,
      'meshrelay test: MESHRELAY_TEST_STRICT_BOOL must be true or false (1/0, yes/no, on/off), got "maybe"\n',
    );
  });
});
