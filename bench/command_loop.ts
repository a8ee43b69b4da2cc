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

/**
 * A child Deno process driven through {@linkcode serveCommands}: `req` sends a command and resolves with
 * its reply; `ready` resolves with the child's `{event: "ready"}` line.
 */
export class Driven {
  readonly proc: Deno.ChildProcess;
  readonly name: string;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #pending = new Map<number, (r: Record<string, unknown>) => void>();
  #nextId = 1;
  #ready: Promise<Record<string, unknown>>;

  /** Runs `deno <args>` in `cwd`; its stderr is appended to `stderrFile`, or inherited without one. */
  constructor(name: string, args: string[], opts: { cwd?: string; stderrFile?: string } = {}) {
    this.name = name;
    this.proc = new Deno.Command(Deno.execPath(), {
      args,
      cwd: opts.cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: opts.stderrFile ? "piped" : "inherit",
    }).spawn();
    this.#writer = this.proc.stdin.getWriter();
    if (opts.stderrFile) {
      void this.proc.stderr.pipeTo(
        Deno.openSync(opts.stderrFile, { write: true, create: true, append: true }).writable,
      ).catch(() => {});
    }
    let ready!: (r: Record<string, unknown>) => void;
    this.#ready = new Promise((r) => ready = r);
    const stdout = this.proc.stdout;
    (async () => {
      let buf = "";
      for await (const chunk of stdout.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(line);
          } catch {
            continue;
          }
          if (msg.event === "ready") ready(msg);
          else if (typeof msg.id === "number") {
            this.#pending.get(msg.id)?.(msg);
            this.#pending.delete(msg.id);
          }
        }
      }
    })().catch(() => {});
  }

  /** The child's ready line. */
  ready(): Promise<Record<string, unknown>> {
    return this.#ready;
  }

  /** Sends `cmd` and waits for its reply; a failed command throws with the child's message. */
  // deno-lint-ignore no-explicit-any
  async req(cmd: Record<string, unknown>): Promise<Record<string, any>> {
    const id = this.#nextId++;
    const p = new Promise<Record<string, unknown>>((r) => this.#pending.set(id, r));
    await this.#writer.write(new TextEncoder().encode(JSON.stringify({ ...cmd, id }) + "\n"));
    const r = await p;
    if (!r.ok) throw new Error(`${this.name}: ${cmd.cmd}: ${r.error}`);
    return r;
  }

  /** Signals the child (SIGKILL by default), closes its stdin and waits for its exit. */
  async kill(sig: Deno.Signal = "SIGKILL"): Promise<Deno.CommandStatus> {
    try {
      this.proc.kill(sig);
    } catch {
      // already gone
    }
    await this.#writer.close().catch(() => {});
    return await this.proc.status;
  }
}
