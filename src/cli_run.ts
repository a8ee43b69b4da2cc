/**
 * How every CLI mode turns a commander program into an exit code: help and version are success,
 * commander's own usage errors are 2, a MeshrelayError (or a permission denial) is its one line, and
 * anything else is one truncated "internal error" line, never a stack trace.
 * @module
 */
import { type Command, CommanderError } from "commander";
import { describeError, exitCodeOf, InvalidInputError, MeshrelayError } from "./errors.ts";

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
    program.hook("preAction", (_program, action) => strictBooleanEnv(action));
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

const TRUE_WORDS = new Set(["1", "true", "yes", "on"]);
const FALSE_WORDS = new Set(["", "0", "false", "no", "off"]);

/**
 * Commander turns a boolean flag on whenever its environment variable is set, whatever the value: so
 * `MESHRELAY_INSECURE=false` meant plaintext. Here a boolean flag taken from the environment follows the
 * value (1/true/yes/on, 0/false/no/off or empty), and any other value is refused instead of guessed.
 */
export function strictBooleanEnv(
  cmd: Command,
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): void {
  for (const option of cmd.options) {
    if (!option.envVar || !option.isBoolean() || option.negate) continue;
    const key = option.attributeName();
    if (cmd.getOptionValueSource(key) !== "env") continue;
    const raw = env(option.envVar) ?? "";
    const word = raw.trim().toLowerCase();
    if (TRUE_WORDS.has(word)) cmd.setOptionValueWithSource(key, true, "env");
    else if (FALSE_WORDS.has(word)) cmd.setOptionValueWithSource(key, false, "env");
    else {
      throw new InvalidInputError(
        `${option.envVar} must be true or false (1/0, yes/no, on/off), got ${
          JSON.stringify(raw.slice(0, 40))
        }`,
      );
    }
  }
}
