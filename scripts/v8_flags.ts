/**
 * The V8 flags meshrelay runs with: baked into the compiled binary (scripts/compile.ts) and passed by the
 * `server` and `agent` tasks of deno.json (scripts/v8_flags_test.ts keeps them equal).
 *
 * Why: with V8's defaults the young generation grows to 64 MiB and the old generation keeps twice what is
 * live, which is most of a relay server's resident memory. Measured with `deno task bench:relay` (1,000
 * agents, same machine, same run of the load generator): RSS 505 MiB with the defaults, 355 MiB with
 * these flags (JS heap reserved 234 → 119 MiB), fan-out and bootstrap times within the run-to-run noise.
 * - `--max-semi-space-size=4`: young generation at most 2 × 4 MiB (MiB units in V8 ≥ 11);
 * - `--optimize-for-size`: V8 favours memory over speed (smaller heap growth steps, fewer caches).
 * @module
 */
export const RUNTIME_V8_FLAGS: readonly string[] = ["--max-semi-space-size=4", "--optimize-for-size"];

/** As one `--v8-flags=` argument of `deno run` / `deno compile`. */
export function v8FlagsArg(): string {
  return `--v8-flags=${RUNTIME_V8_FLAGS.join(",")}`;
}
