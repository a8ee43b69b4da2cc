/**
 * A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text
 * exposition format 0.0.4 that `/metrics` serves. No global default registry: the server and the
 * agent each build one and hand it to the pieces that count.
 * @module
 */
import { InvalidInputError } from "../errors.ts";

/** Label name → value of one series. */
export type Labels = Record<string, string>;

/** A value that only goes up (resets with the process). */
export interface Counter {
  inc(labels?: Labels, by?: number): void;
}

/** A value that goes up and down. */
export interface Gauge {
  set(value: number, labels?: Labels): void;
  inc(labels?: Labels, by?: number): void;
  dec(labels?: Labels, by?: number): void;
  /** Drops the series with exactly these labels (e.g. a deregistered cluster), so it is not rendered. */
  remove(labels?: Labels): void;
}

/** Observations counted into cumulative buckets, with their sum and count. */
export interface Histogram {
  observe(value: number, labels?: Labels): void;
}

/** Prometheus' default buckets (seconds). */
export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

type Kind = "counter" | "gauge" | "histogram";

interface Family {
  name: string;
  help: string;
  kind: Kind;
  render(out: string[]): void;
}

/** The canonical identity of a label set: sorted `name="value"` pairs, already escaped. */
function seriesKey(labels: Labels | undefined): string {
  if (!labels) return "";
  const names = Object.keys(labels).sort();
  for (const n of names) {
    if (!LABEL_NAME.test(n) || n.startsWith("__")) throw new InvalidInputError(`invalid label name "${n}"`);
  }
  return names.map((n) => `${n}="${escapeLabelValue(String(labels[n]))}"`).join(",");
}

function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** A sample value as Prometheus writes it. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function braces(key: string): string {
  return key === "" ? "" : `{${key}}`;
}

function checkAmount(by: number): void {
  if (!Number.isFinite(by)) {
    throw new InvalidInputError(`metric increment must be a finite number, got ${by}`);
  }
}

class CounterImpl implements Counter, Family {
  readonly kind = "counter";
  #values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}

  inc(labels?: Labels, by = 1): void {
    checkAmount(by);
    if (by < 0) throw new InvalidInputError(`counter ${this.name} cannot decrease`);
    const k = seriesKey(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }

  render(out: string[]): void {
    for (const [k, v] of [...this.#values].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
      out.push(`${this.name}${braces(k)} ${formatValue(v)}`);
    }
  }
}

class GaugeImpl implements Gauge, Family {
  readonly kind = "gauge";
  #values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}

  set(value: number, labels?: Labels): void {
    this.#values.set(seriesKey(labels), value);
  }

  inc(labels?: Labels, by = 1): void {
    checkAmount(by);
    const k = seriesKey(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }

  dec(labels?: Labels, by = 1): void {
    this.inc(labels, -by);
  }

  remove(labels?: Labels): void {
    this.#values.delete(seriesKey(labels));
  }

  render(out: string[]): void {
    for (const [k, v] of [...this.#values].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
      out.push(`${this.name}${braces(k)} ${formatValue(v)}`);
    }
  }
}

interface HistogramSeries {
  counts: number[];
  sum: number;
  count: number;
}

class HistogramImpl implements Histogram, Family {
  readonly kind = "histogram";
  #buckets: number[];
  #series = new Map<string, HistogramSeries>();

  constructor(readonly name: string, readonly help: string, buckets: readonly number[]) {
    const sorted = buckets.filter((b) => b !== Infinity);
    for (let i = 0; i < sorted.length; i++) {
      if (!Number.isFinite(sorted[i]) || (i > 0 && !(sorted[i] > sorted[i - 1]))) {
        throw new InvalidInputError(`histogram ${name}: buckets must be finite and strictly increasing`);
      }
    }
    this.#buckets = sorted;
  }

  observe(value: number, labels?: Labels): void {
    if (Number.isNaN(value)) return;
    const k = seriesKey(labels);
    let s = this.#series.get(k);
    if (!s) {
      s = { counts: this.#buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(k, s);
    }
    for (let i = 0; i < this.#buckets.length; i++) if (value <= this.#buckets[i]) s.counts[i]++;
    s.sum += value;
    s.count++;
  }

  render(out: string[]): void {
    for (const [k, s] of [...this.#series].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
      const sep = k === "" ? "" : ",";
      this.#buckets.forEach((b, i) => {
        out.push(`${this.name}_bucket{${k}${sep}le="${formatValue(b)}"} ${s.counts[i]}`);
      });
      out.push(`${this.name}_bucket{${k}${sep}le="+Inf"} ${s.count}`);
      out.push(`${this.name}_sum${braces(k)} ${formatValue(s.sum)}`);
      out.push(`${this.name}_count${braces(k)} ${s.count}`);
    }
  }
}

/**
 * Holds metric families by name. Asking twice for the same name and kind returns the same metric,
 * so independent components can share one (e.g. stream errors counted by server and hub).
 */
export class MetricsRegistry {
  #families = new Map<string, Family>();
  #collectors: (() => void)[] = [];

  /**
   * Runs `collect` before every render, for values read on demand rather than counted as they happen
   * (process memory, say): it sets gauges of this registry.
   */
  onCollect(collect: () => void): void {
    this.#collectors.push(collect);
  }

  /** A counter called `name` (created on first use). */
  counter(name: string, help: string): Counter {
    return this.#get(name, "counter", () => new CounterImpl(name, help)) as CounterImpl;
  }

  /** A gauge called `name` (created on first use). */
  gauge(name: string, help: string): Gauge {
    return this.#get(name, "gauge", () => new GaugeImpl(name, help)) as GaugeImpl;
  }

  /** A histogram called `name` (created on first use); buckets default to {@linkcode DEFAULT_BUCKETS}. */
  histogram(name: string, help: string, buckets: readonly number[] = DEFAULT_BUCKETS): Histogram {
    return this.#get(name, "histogram", () => new HistogramImpl(name, help, buckets)) as HistogramImpl;
  }

  /** Prometheus text exposition format 0.0.4. */
  render(): string {
    for (const collect of this.#collectors) collect();
    const out: string[] = [];
    for (const name of [...this.#families.keys()].sort()) {
      const f = this.#families.get(name)!;
      out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`);
      out.push(`# TYPE ${f.name} ${f.kind}`);
      f.render(out);
    }
    return out.length === 0 ? "" : out.join("\n") + "\n";
  }

  #get(name: string, kind: Kind, make: () => Family): Family {
    if (!METRIC_NAME.test(name)) throw new InvalidInputError(`invalid metric name "${name}"`);
    const existing = this.#families.get(name);
    if (existing) {
      if (existing.kind !== kind) {
        throw new InvalidInputError(`metric ${name} is already registered as a ${existing.kind}`);
      }
      return existing;
    }
    const f = make();
    this.#families.set(name, f);
    return f;
  }
}

/** Content type of {@linkcode MetricsRegistry.render}'s output. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
