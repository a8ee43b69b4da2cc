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
 * Re-measured at 5,000 agents (one `--no-storm` run each, RSS held, fan-out p50 / p99):
 * - V8 defaults: 1,028 MiB, 659 / 1,386 ms;
 * - `--max-semi-space-size=4` alone: 1,071 MiB, 904 / 1,929 ms (no gain without the next flag);
 * - `--max-semi-space-size=16 --optimize-for-size`: 720 MiB, 1,099 / 1,871 ms (a larger young
 *   generation buys nothing back);
 * - these flags: 719 MiB, 1,203 / 1,775 ms. In a CPU profile of that fan-out half the time is the garbage
 *   collector: the cost of `--optimize-for-size`'s tighter heap on a 220 MiB live heap.
 * @module
 */
export const RUNTIME_V8_FLAGS: readonly string[] = ["--max-semi-space-size=4", "--optimize-for-size"];

/** As one `--v8-flags=` argument of `deno run` / `deno compile`. */
export function v8FlagsArg(): string {
  return `--v8-flags=${RUNTIME_V8_FLAGS.join(",")}`;
}
