/**
 * Structured JSON logging with levels. One line per event; fields are flat JSON values.
 * Never pass tokens, keys or PEM as fields.
 * @module
 */

/** Log levels, in increasing severity. */
export type LogLevel = "debug" | "info" | "warn" | "error";
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Extra key/value context on a log line. */
export type LogFields = Record<string, unknown>;

/** A structured logger. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

/** Options of {@linkcode jsonLogger}. */
export interface JsonLoggerOptions {
  level?: LogLevel;
  /** Where lines go; defaults to stderr. */
  write?: (line: string) => void;
  now?: () => Date;
  fields?: LogFields;
}

const encoder = new TextEncoder();

/** Parses a level name, for flags and env. */
export function parseLogLevel(s: string): LogLevel {
  if (s in RANK) return s as LogLevel;
  throw new Error(`unknown log level "${s}" (expected debug, info, warn or error)`);
}

/** A logger that writes one JSON object per line. */
export function jsonLogger(opts: JsonLoggerOptions = {}): Logger {
  const min = RANK[opts.level ?? "info"];
  const write = opts.write ?? ((line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n")));
  const now = opts.now ?? (() => new Date());
  const base = opts.fields ?? {};
  const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (RANK[level] < min) return;
    const rec: LogFields = { ts: now().toISOString(), level, msg, ...base };
    for (const [k, v] of Object.entries(fields ?? {})) {
      rec[k] = v instanceof Error ? v.message : v;
    }
    write(JSON.stringify(rec, (_k, v) => typeof v === "bigint" ? v.toString() : v));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => jsonLogger({ ...opts, fields: { ...base, ...fields } }),
  };
}

/** A logger that drops everything (tests). */
export const nullLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => nullLogger,
};

/** A logger that records lines in memory (tests). */
export function memoryLogger(): Logger & { lines: LogFields[] } {
  const lines: LogFields[] = [];
  const l = jsonLogger({ level: "debug", write: (s) => lines.push(JSON.parse(s)) });
  return Object.assign(l, { lines });
}
