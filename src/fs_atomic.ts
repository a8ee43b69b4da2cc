/**
 * Atomic file replacement shared by the certs output, the directory applier and the file secret store:
 * readers see the old content or the new, never a partial file, and a failed write leaves no temp file.
 * @module
 */

/** Options of {@linkcode replaceFileAtomic}. */
export interface ReplaceFileOptions {
  /** Permission bits of the new file. Default 0600. */
  mode?: number;
  /** Temp file name suffix (callers with injected randomness pass their own). Default {@linkcode randomSuffix}. */
  suffix?: string;
}

/** 12 random hex characters for temp names (collisions would make `createNew` fail, not corrupt). */
export function randomSuffix(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

/** Writes all of `data` (a single write may be short). */
export async function writeAll(f: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await f.write(data.subarray(off));
}

/**
 * Writes `data` to a temp file beside `path` (same directory, so the rename cannot cross filesystems),
 * syncs it, and renames it over `path`.
 */
export async function replaceFileAtomic(
  path: string,
  data: Uint8Array,
  opts: ReplaceFileOptions = {},
): Promise<void> {
  const i = path.lastIndexOf("/");
  const dir = i < 0 ? "." : path.slice(0, i) || "/";
  const tmp = `${dir}/.${path.slice(i + 1)}.tmp-${opts.suffix ?? randomSuffix()}`;
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: opts.mode ?? 0o600 });
    try {
      await writeAll(f, data);
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}
