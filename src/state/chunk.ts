/**
 * Splitting large snapshots into messages below the gRPC message limit, instead of raising the
 * limit (the complaint in argocd-agent#748).
 * @module
 */
import { ResourceExhaustedError } from "../errors.ts";

/** Options of {@linkcode chunkBySize}. */
export interface ChunkOptions<T> {
  /** Fixed bytes every chunk costs besides its items (message envelope, headers). Default 0. */
  baseBytes?: number;
  /** Names an item in the error for one that cannot fit (never its content). */
  describe?: (item: T, index: number) => string;
  /**
   * Stop filling a chunk once the next item would take it past this many bytes (base included), even
   * though `maxBytes` would allow more. An item larger than this still travels, alone, up to `maxBytes`
   * (so a target at or below `baseBytes` means one item per chunk). Default `maxBytes`: fill as far as
   * the limit goes.
   */
  fillBytes?: number;
}

/**
 * Groups `items`, in order, into chunks whose `baseBytes + Σ sizeOf(item)` never exceeds `maxBytes`,
 * filling each chunk as far as it goes (or, with `fillBytes`, as far as that). No items → no chunks. An
 * item that cannot fit even alone is a ResourceExhaustedError naming it: better to refuse clearly than to
 * send a message the peer drops.
 */
export function chunkBySize<T>(
  items: readonly T[],
  maxBytes: number,
  sizeOf: (item: T) => number,
  opts: ChunkOptions<T> = {},
): T[][] {
  const base = opts.baseBytes ?? 0;
  if (!(maxBytes > base)) {
    throw new RangeError(`chunk limit ${maxBytes} must exceed the per-chunk overhead ${base}`);
  }
  const fill = Math.min(opts.fillBytes ?? maxBytes, maxBytes);
  const chunks: T[][] = [];
  let cur: T[] = [];
  let used = base;
  items.forEach((item, i) => {
    const size = sizeOf(item);
    if (!(size >= 0) || !Number.isFinite(size)) throw new RangeError(`size of item ${i} is not a byte count`);
    if (base + size > maxBytes) {
      const name = opts.describe ? opts.describe(item, i) : `item ${i}`;
      throw new ResourceExhaustedError(
        `${name} is ${size} bytes and cannot fit in a message of at most ${maxBytes} bytes`,
      );
    }
    if (cur.length > 0 && used + size > fill) {
      chunks.push(cur);
      cur = [];
      used = base;
    }
    cur.push(item);
    used += size;
  });
  if (cur.length > 0) chunks.push(cur);
  return chunks;
}

const utf8 = new TextEncoder();

/**
 * Bytes of `value` as JSON text (UTF-8): a sizeOf for objects carried as JSON strings. Add the
 * field's framing (tag + length varint, ≤ 6 bytes below 2 GiB) when the wire wraps each item.
 */
export function jsonSize(value: unknown): number {
  return utf8.encode(JSON.stringify(value)).byteLength;
}
