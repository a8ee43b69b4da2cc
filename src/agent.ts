/**
 * `meshrelay agent`: builds real dependencies and runs the mode.
 * @module
 */
import { PreconditionError } from "./errors.ts";

/** Entry point of the mode; returns the exit code. */
// deno-lint-ignore require-await
export async function main(_args: string[]): Promise<number> {
  throw new PreconditionError("the agent mode is being built (see the open issues)");
}
