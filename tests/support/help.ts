/**
 * `meshrelay … --help` as the tests read it: the text of a command path (run once per path and run), and
 * the subcommands it lists.
 * @module
 */
import { assertEquals } from "../../src/testing/assert.ts";

const MOD = new URL("../../mod.ts", import.meta.url).pathname;
const cache = new Map<string, Promise<string>>();

/** The `--help` text of `meshrelay <words…>`; fails the test when it does not exit 0. */
export function helpText(words: string[]): Promise<string> {
  const id = words.join(" ");
  let text = cache.get(id);
  if (!text) {
    text = (async () => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", "-A", MOD, ...words, "--help"],
        env: { NO_COLOR: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      const t = dec.decode(out.stdout) + dec.decode(out.stderr);
      assertEquals(out.code, 0, `meshrelay ${id} --help exited ${out.code}:\n${t}`);
      return t;
    })();
    cache.set(id, text);
  }
  return text;
}

/** The subcommands a help text lists under `Commands:` (`Modes:` at the top), without commander's `help`. */
export function subcommandsOf(text: string): string[] {
  const m = /\n(?:Commands|Modes):\n([\s\S]*?)(\n\S|$)/.exec(text);
  const names: string[] = [];
  for (const l of (m?.[1] ?? "").split("\n")) {
    const w = /^\s{2}([a-z][a-z0-9-]*)/.exec(l);
    if (w && w[1] !== "help") names.push(w[1]);
  }
  return names;
}
