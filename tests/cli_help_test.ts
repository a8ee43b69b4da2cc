/**
 * Every `--help` of every mode and subcommand, as a user sees it: it exits 0, and the defaults it
 * prints read as what a user would type (durations as `1h`, not the milliseconds the code keeps).
 */
import { assert, assertEquals } from "../src/testing/assert.ts";
import { helpText, subcommandsOf } from "./support/help.ts";

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
      const text = await helpText(words);
      seen.push(words.join(" "));
      for (const sub of subcommandsOf(text)) queue.push([...words, sub]);
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
