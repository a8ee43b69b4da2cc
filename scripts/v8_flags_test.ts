import { assert } from "../src/testing/assert.ts";
import { v8FlagsArg } from "./v8_flags.ts";

Deno.test("the server and agent tasks run with the V8 flags the binary is compiled with", async (t) => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  for (const task of ["server", "agent"]) {
    await t.step(task, () => {
      const cmd = String(config.tasks[task]);
      assert(cmd.split(" ").includes(v8FlagsArg()), `task ${task} lacks ${v8FlagsArg()}: ${cmd}`);
    });
  }
});
