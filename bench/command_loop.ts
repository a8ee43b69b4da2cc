/**
 * The benchmark child processes' control channel: one JSON command per stdin line, one JSON reply per
 * stdout line (`{id, ok: true, ...result}` or `{id, ok: false, error}`). Commands run concurrently, so
 * the orchestrator can ask for counts while a long wait is in progress.
 * @module
 */

const enc = new TextEncoder();

/** Writes one JSON line to stdout (replies and events such as `{event: "ready"}`). */
export function out(o: unknown): void {
  Deno.stdout.writeSync(enc.encode(JSON.stringify(o) + "\n"));
}

/** Answers every command read from stdin with `handle` until stdin closes. */
export async function serveCommands<C extends { id?: unknown }>(
  handle: (c: C) => Promise<Record<string, unknown>>,
): Promise<void> {
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let buf = "";
  for await (const chunk of lines) {
    buf += chunk;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      const c = JSON.parse(line) as C;
      handle(c).then(
        (r) => out({ id: c.id, ok: true, ...r }),
        (e) => out({ id: c.id, ok: false, error: e instanceof Error ? e.message : String(e) }),
      );
    }
  }
}
