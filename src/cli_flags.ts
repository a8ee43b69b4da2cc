/**
 * Flag value parsers shared by `meshrelay server` and `meshrelay agent` (commander argument parsers:
 * they throw commander's InvalidArgumentError, which commander turns into one line and exit code 2).
 * @module
 */
import { InvalidArgumentError } from "commander";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `500ms`, `10s`, `30m`, `1h`, `365d`, `1h30m` → milliseconds (positive). */
export function parseDuration(v: string): number {
  const s = v.trim();
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y;
  let total = 0;
  let pos = 0;
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) throw new InvalidArgumentError("expected a duration such as 500ms, 10s, 30m, 1h or 365d");
    total += Number(m[1]) * UNITS[m[2]];
    pos = re.lastIndex;
  }
  if (s === "" || !(total > 0) || !Number.isFinite(total)) {
    throw new InvalidArgumentError("expected a positive duration such as 500ms, 10s, 30m, 1h or 365d");
  }
  return Math.round(total);
}

/** A TCP port, 0 (any free port) to 65535. */
export function parsePort(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 65535) throw new InvalidArgumentError("expected a port number from 0 to 65535");
  return n;
}

/** A whole number of at least 1. */
export function parsePositiveInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || !Number.isSafeInteger(n)) {
    throw new InvalidArgumentError("expected a whole number of at least 1");
  }
  return n;
}

/** A ratio strictly between 0 and 1. */
export function parseRatio(v: string): number {
  const n = Number(v);
  if (v.trim() === "" || !(n >= 0 && n < 1)) {
    throw new InvalidArgumentError("expected a number from 0 to below 1");
  }
  return n;
}

/** Collects a repeatable option. */
export function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}
