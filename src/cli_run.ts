/**
 * How every CLI mode turns a commander program into an exit code: help and version are success,
 * commander's own usage errors are 2, a MeshrelayError (or a permission denial) is its one line, and
 * anything else is one truncated "internal error" line, never a stack trace.
 * @module
 */
import { type Command, CommanderError } from "commander";
import { describeError, exitCodeOf, MeshrelayError } from "./errors.ts";

const QUIET_EXITS = new Set(["commander.helpDisplayed", "commander.version", "commander.help"]);

/**
 * Parses `args` with `program` (built with `exitOverride()`); returns the code the action set through
 * `code()`, or the code of the error it threw, after writing one line for it through `err`.
 */
export async function runProgram(
  mode: string,
  program: Command,
  args: string[],
  code: () => number,
  err: (line: string) => void,
): Promise<number> {
  try {
    await program.parseAsync(args, { from: "user" });
    return code();
  } catch (e) {
    if (e instanceof CommanderError) return QUIET_EXITS.has(e.code) ? 0 : 2;
    // A reader that went away (`meshrelay certs --help | head`) is not an error of ours.
    if (e instanceof Deno.errors.BrokenPipe) return 0;
    const line = e instanceof MeshrelayError || e instanceof Deno.errors.NotCapable
      ? describeError(e)
      : `internal error: ${e instanceof Error ? `${e.name}: ${e.message.slice(0, 200)}` : "unknown"}`;
    err(`meshrelay ${mode}: ${line.split("\n")[0]}\n`);
    return exitCodeOf(e);
  }
}
