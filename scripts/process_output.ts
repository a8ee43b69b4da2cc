/**
 * Reading what a running meshrelay process prints, shared by `deno task demo` and the e2e test harness
 * (tests/relay_e2e_harness.ts): its JSON log lines, and the files an applier wrote.
 * @module
 */

/** One JSON log line. */
export type LogLine = Record<string, unknown> & { msg: string; level: string };

/**
 * Reads `stream` to its end, line by line, into `into.raw` and (the JSON ones) `into.lines`; `tee` sees
 * every chunk first. Returns quietly when the process is killed mid-stream.
 */
export async function collectLines(
  stream: ReadableStream<Uint8Array>,
  into: { raw: string[]; lines: LogLine[] },
  tee?: (chunk: Uint8Array) => void,
): Promise<void> {
  const dec = new TextDecoder();
  let buf = "";
  try {
    for await (const chunk of stream) {
      tee?.(chunk);
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        into.raw.push(line);
        if (line.startsWith("{")) {
          try {
            into.lines.push(JSON.parse(line));
          } catch { /* not a log line */ }
        }
      }
    }
  } catch { /* killed */ }
}

/** The files below `dir` as sorted relative paths, hidden ones (an applier's state file) left out. */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string): Promise<void> => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`, `${rel}${e.name}/`);
      else if (!e.name.startsWith(".")) out.push(rel + e.name);
    }
  };
  await walk(dir, "").catch(() => {});
  return out.sort();
}
