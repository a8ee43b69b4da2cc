/**
 * The V8 flags meshrelay runs with: baked into the compiled binary (scripts/compile.ts) and passed by the
 * `server` and `agent` tasks of deno.json (scripts/v8_flags_test.ts keeps them equal).
 *
 * Why: with V8's defaults the young generation grows to 64 MiB under load and stays there, a large part of
 * a relay server's resident memory. `--max-semi-space-size=4` bounds it to 2 × 4 MiB. Measured with
 * `deno task bench:relay` on the 2-core machine: 1,000 agents held in 396 MiB instead of 505 MiB with a
 * 2 MiB bound (JS heap reserved 154 instead of 234 MiB), fan-out p99 618 instead of 632 ms; 4 MiB keeps a
 * little more headroom for bursts of Sync traffic.
 * Not `--optimize-for-size`: it saved another 15 % (2,000 agents: 428 instead of 500 MiB) but made
 * fan-out about 1.5× slower (p99 1,184 instead of 803 ms; 4.3 s at 5,000 agents).
 * @module
 */
export const RUNTIME_V8_FLAGS: readonly string[] = ["--max-semi-space-size=4"];

/** As one `--v8-flags=` argument of `deno run` / `deno compile`. */
export function v8FlagsArg(): string {
  return `--v8-flags=${RUNTIME_V8_FLAGS.join(",")}`;
}
