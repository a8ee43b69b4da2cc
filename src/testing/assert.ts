/**
 * Assertions for every test in the project, built on node:assert/strict (jsr:@std/assert cannot
 * be fetched here). Tests import from here so failures read the same everywhere.
 * @module
 */
import nodeAssert from "node:assert/strict";

/** Asserts truthiness. */
export function assert(v: unknown, msg?: string): asserts v {
  nodeAssert.ok(v, msg);
}
/** Deep strict equality. */
export function assertEquals<T>(a: T, b: T, msg?: string): void {
  nodeAssert.deepStrictEqual(a, b, msg);
}
/** Deep strict inequality. */
export function assertNotEquals<T>(a: T, b: T, msg?: string): void {
  nodeAssert.notDeepStrictEqual(a, b, msg);
}
/** Asserts the promise returned by `fn` rejects with an instance of `cls`. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  cls: new (...args: any[]) => Error,
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    nodeAssert.ok(
      e instanceof cls,
      `expected ${cls.name}, got ${e instanceof Error ? e.name + ": " + e.message : e}`,
    );
    return e as Error;
  }
  throw new nodeAssert.AssertionError({ message: `expected ${cls.name}, but it resolved` });
}
/** Asserts `fn` throws an instance of `cls` synchronously. */
export function assertThrows(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  cls: new (...args: any[]) => Error,
): Error {
  try {
    fn();
  } catch (e) {
    nodeAssert.ok(
      e instanceof cls,
      `expected ${cls.name}, got ${e instanceof Error ? e.name + ": " + e.message : e}`,
    );
    return e as Error;
  }
  throw new nodeAssert.AssertionError({ message: `expected ${cls.name}, but it returned` });
}
/** Asserts `s` contains `part`. */
export function assertStringIncludes(s: string, part: string, msg?: string): void {
  nodeAssert.ok(
    s.includes(part),
    msg ?? `expected ${JSON.stringify(s.slice(0, 500))} to include ${JSON.stringify(part)}`,
  );
}
/** Asserts `s` matches `re`. */
export function assertMatch(s: string, re: RegExp, msg?: string): void {
  nodeAssert.match(s, re, msg);
}
