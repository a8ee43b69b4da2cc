/**
 * Every `--help` of every mode and subcommand, as a user sees it: it exits 0, and the defaults it
 * prints read as what a user would type (durations as `1h`, not the milliseconds the code keeps).
 */
import { assert, assertEquals } from "../src/testing/assert.ts";

const MOD = new URL("../mod.ts", import.meta.url).pathname;

async function help(words: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MOD, ...words, "--help"],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assertEquals(out.code, 0, `${words.join(" ")} --help exited ${out.code}`);
  return text;
}

/** Subcommand names listed under "Commands:" (commander's layout), without commander's own `help`. */
function subcommands(text: string): string[] {
  const i = text.indexOf("\nCommands:\n");
  if (i < 0) return [];
  const names: string[] = [];
  for (const line of text.slice(i + 11).split("\n")) {
    if (line.trim() === "") break;
    const m = /^ {2}([a-z][a-z-]*)\b/.exec(line);
    if (m && m[1] !== "help") names.push(m[1]);
  }
  return names;
}

/** Each option with its wrapped description joined into one line. */
export function optionBlocks(text: string): string[] {
  const blocks: string[] = [];
  for (const line of text.split("\n")) {
    if (/^ {2}-/.test(line)) blocks.push(line.trim());
    else if (blocks.length && /^ {10,}\S/.test(line)) blocks[blocks.length - 1] += " " + line.trim();
    else if (!/^ {10,}/.test(line)) blocks.push("");
  }
  return blocks.filter(Boolean);
}

Deno.test("every --help exits 0 and prints readable defaults", async (t) => {
  const queue: string[][] = [["server"], ["agent"], ["certs"]];
  const seen: string[] = [];
  while (queue.length) {
    const words = queue.shift()!;
    await t.step(words.join(" "), async () => {
      const text = await help(words);
      seen.push(words.join(" "));
      for (const sub of subcommands(text)) queue.push([...words, sub]);
      for (const block of optionBlocks(text)) {
        assert(!/default: (undefined|NaN|\[object)/.test(block), `${words.join(" ")}: ${block}`);
        if (block.includes("<duration>")) {
          assert(
            !/\(default: \d{4,}\)/.test(block),
            `${words.join(" ")}: a duration default shown in milliseconds: ${block}`,
          );
        }
      }
    });
  }
  // The walk reached the nested commands, so the checks above covered them.
  for (const c of ["server token", "server token create", "certs register", "certs init"]) {
    assert(seen.includes(c), `${c} --help was not reached (${seen.join(", ")})`);
  }
});

Deno.test("optionBlocks joins wrapped option descriptions", () => {
  const text = [
    "Options:",
    "  --token-ttl <duration>        lifetime of the bootstrap",
    "                                token (default: 3600000)",
    "  --wait                        wait",
    "",
  ].join("\n");
  assertEquals(optionBlocks(text), [
    "--token-ttl <duration>        lifetime of the bootstrap token (default: 3600000)",
    "--wait                        wait",
  ]);
});
