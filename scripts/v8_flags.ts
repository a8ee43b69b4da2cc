/**
 * The V8 flags meshrelay runs with: baked into the compiled binary (scripts/compile.ts) and passed by the
 * `server` and `agent` tasks of deno.json (scripts/v8_flags_test.ts keeps them equal).
 *
 * Why: with V8's defaults the young generation grows to 64 MiB under load and stays there, and the old
 * generation keeps far more than is live: most of a relay server's resident memory. Measured with
 * `deno task bench:relay` on the 2-core machine, 1,000 agents held:
 * - V8 defaults: 505 MiB RSS (JS heap reserved 234 MiB for 108 MiB used);
 * - `--max-semi-space-size=4` alone: 430 MiB (young generation at most 2 × 4 MiB);
 * - with `--optimize-for-size` too: 304 MiB (smaller heap growth steps, bytecode flushed sooner).
 * The price is CPU: fan-out p99 at 1,000 agents 667 ms instead of 530 ms (the target is 1 s), at 2,000
 * agents 1,184 ms instead of 803 ms. Memory is what limits how many agents one server holds, so it wins.
 * @module
 */
export const RUNTIME_V8_FLAGS: readonly string[] = ["--max-semi-space-size=4", "--optimize-for-size"];

/** As one `--v8-flags=` argument of `deno run` / `deno compile`. */
export function v8FlagsArg(): string {
  return `--v8-flags=${RUNTIME_V8_FLAGS.join(",")}`;
}
