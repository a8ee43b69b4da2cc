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

/** Where a logger's lines go, shared by it and all its children. */
interface Sink {
  min: number;
  write: (line: string) => void;
  now: () => Date;
}

/**
 * Methods live on the prototype and the sink is shared, so a child costs one object and its fields:
 * a server makes a child per Sync stream, thousands of them held for as long as the agents stay.
 */
class JsonLogger implements Logger {
  readonly #sink: Sink;
  readonly #fields: LogFields;

  constructor(sink: Sink, fields: LogFields) {
    this.#sink = sink;
    this.#fields = fields;
  }

  debug(msg: string, fields?: LogFields): void {
    this.#emit("debug", msg, fields);
  }

  info(msg: string, fields?: LogFields): void {
    this.#emit("info", msg, fields);
  }

  warn(msg: string, fields?: LogFields): void {
    this.#emit("warn", msg, fields);
  }

  error(msg: string, fields?: LogFields): void {
    this.#emit("error", msg, fields);
  }

  child(fields: LogFields): Logger {
    return new JsonLogger(this.#sink, { ...this.#fields, ...fields });
  }

  #emit(level: LogLevel, msg: string, fields?: LogFields): void {
    if (RANK[level] < this.#sink.min) return;
    const rec: LogFields = { ts: this.#sink.now().toISOString(), level, msg, ...this.#fields };
    for (const [k, v] of Object.entries(fields ?? {})) {
      rec[k] = v instanceof Error ? v.message : v;
    }
    this.#sink.write(JSON.stringify(rec, (_k, v) => typeof v === "bigint" ? v.toString() : v));
  }
}

/** A logger that writes one JSON object per line. */
export function jsonLogger(opts: JsonLoggerOptions = {}): Logger {
  return new JsonLogger({
    min: RANK[opts.level ?? "info"],
    write: opts.write ?? ((line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n"))),
    now: opts.now ?? (() => new Date()),
  }, { ...opts.fields });
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
