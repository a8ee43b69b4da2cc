/**
 * Progress lines on stderr for slow steps (an RSA-4096 key takes seconds). On a terminal every step
 * prints as it starts and a dot each second while it runs, so the tool is never silent for long;
 * in a pipe it is quiet unless `--verbose`. Warnings ({@linkcode Progress.note}) always print.
 * @module
 */
import type { Clock } from "../clock.ts";

/** Reports slow steps and notes. */
export interface Progress {
  /** Runs `fn`, announcing `label` before and the time taken after. */
  step<T>(label: string, fn: () => Promise<T>): Promise<T>;
  /** A line that always prints (warnings, where something was written). */
  note(line: string): void;
}

/** Options of {@linkcode progressReporter}. */
export interface ProgressOptions {
  /** Writes text as is (no newline added). */
  write: (text: string) => void;
  /** Print steps at all (stderr is a terminal, or --verbose). */
  steps: boolean;
  /** Print a dot per `tickMs` while a step runs (stderr is a terminal). */
  ticks: boolean;
  clock: Clock;
  /** Default 1000. */
  tickMs?: number;
  /** Default "meshrelay certs: ". */
  prefix?: string;
}

/** A {@linkcode Progress} that writes to `opts.write`. */
export function progressReporter(opts: ProgressOptions): Progress {
  const prefix = opts.prefix ?? "meshrelay certs: ";
  const tickMs = opts.tickMs ?? 1000;
  return {
    async step<T>(label: string, fn: () => Promise<T>): Promise<T> {
      if (!opts.steps) return await fn();
      const start = opts.clock.now().getTime();
      opts.write(`${prefix}${label} ...`);
      const stop = new AbortController();
      const ticker = opts.ticks
        ? (async () => {
          try {
            while (true) {
              await opts.clock.sleep(tickMs, stop.signal);
              opts.write(".");
            }
          } catch { /* stopped */ }
        })()
        : Promise.resolve();
      try {
        const out = await fn();
        stop.abort();
        await ticker;
        const s = (opts.clock.now().getTime() - start) / 1000;
        opts.write(` done (${s.toFixed(s < 10 ? 1 : 0)} s)\n`);
        return out;
      } catch (e) {
        stop.abort();
        await ticker;
        opts.write(" failed\n");
        throw e;
      }
    },
    note(line: string) {
      opts.write(`${prefix}${line}\n`);
    },
  };
}

/** A {@linkcode Progress} that prints nothing (library callers, tests). */
export const silentProgress: Progress = { step: (_label, fn) => fn(), note: () => {} };
