/**
 * A TCP proxy on 127.0.0.1 that injects network faults between an agent and the relay server, for
 * the fault tests and benchmarks: it forwards bytes unchanged until told to
 *
 * - `drop()`: cut every open connection at once (both sides see a reset or EOF mid-stream),
 * - `mode = "stall"`: stop forwarding in both directions while keeping connections open (a hung
 *   peer or a black-holed route: only keepalive or deadlines notice),
 * - `mode = "slow"`: forward in small slices with a delay (a congested link),
 * - `mode = "refuse"`: accept new connections and close them at once (server unreachable).
 *
 * Built on Deno's own TCP (not node:net), so the proxy's sockets never share code paths with the
 * grpc-js peers it sits between. Loopback only.
 * @module
 */

/** How the proxy treats traffic now. */
export type FaultMode = "pass" | "stall" | "slow" | "refuse";

/** Options of {@linkcode FaultProxy.start}. */
export interface FaultProxyOptions {
  /** Where to forward, on 127.0.0.1. */
  targetPort: number;
  /** Port to listen on (0: any free port). */
  listenPort?: number;
  /** "slow": bytes per slice and delay per slice. Default 512 bytes every 20 ms (~25 KB/s). */
  slowSliceBytes?: number;
  slowDelayMs?: number;
}

interface Pair {
  client: Deno.TcpConn;
  server?: Deno.TcpConn;
  closed: boolean;
}

/** See the module comment. */
export class FaultProxy {
  readonly port: number;
  #listener: Deno.TcpListener;
  #o: Required<FaultProxyOptions>;
  #mode: FaultMode = "pass";
  #pairs = new Set<Pair>();
  #modeWaiters: (() => void)[] = [];
  #accepting: Promise<void>;
  #closed = false;
  /** Connections accepted so far (tests check the proxy was really in the path). */
  accepted = 0;
  /** Bytes forwarded so far, both directions. */
  forwarded = 0;

  private constructor(listener: Deno.TcpListener, o: Required<FaultProxyOptions>) {
    this.#listener = listener;
    this.#o = o;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept();
  }

  /** Listens on 127.0.0.1 and starts forwarding. */
  static start(o: FaultProxyOptions): Promise<FaultProxy> {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: o.listenPort ?? 0 });
    return Promise.resolve(
      new FaultProxy(listener, { listenPort: 0, slowSliceBytes: 512, slowDelayMs: 20, ...o }),
    );
  }

  /** Current mode. */
  get mode(): FaultMode {
    return this.#mode;
  }

  /** Changes the mode; stalled pumps resume when it leaves "stall". */
  set mode(m: FaultMode) {
    this.#mode = m;
    for (const w of this.#modeWaiters.splice(0)) w();
  }

  /** Points new connections at another port (a server restarted elsewhere). */
  set targetPort(p: number) {
    this.#o.targetPort = p;
  }

  /** Open connection pairs. */
  get connections(): number {
    return this.#pairs.size;
  }

  /** Cuts every open connection now. */
  drop(): void {
    for (const p of [...this.#pairs]) this.#close(p);
  }

  /** Stops listening and cuts everything. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    this.drop();
    this.mode = "pass";
    await this.#accepting;
  }

  async #accept(): Promise<void> {
    while (!this.#closed) {
      let client: Deno.TcpConn;
      try {
        client = await this.#listener.accept();
      } catch {
        return;
      }
      this.accepted++;
      if (this.#mode === "refuse") {
        try {
          client.close();
        } catch {
          // gone
        }
        continue;
      }
      const pair: Pair = { client, closed: false };
      this.#pairs.add(pair);
      this.#connect(pair).catch(() => this.#close(pair));
    }
  }

  async #connect(p: Pair): Promise<void> {
    try {
      p.server = await Deno.connect({ hostname: "127.0.0.1", port: this.#o.targetPort });
    } catch {
      this.#close(p);
      return;
    }
    if (p.closed) {
      this.#close(p);
      return;
    }
    await Promise.all([this.#pump(p, p.client, p.server), this.#pump(p, p.server, p.client)]);
    this.#close(p);
  }

  async #gate(p: Pair): Promise<void> {
    while (this.#mode === "stall" && !p.closed) {
      await new Promise<void>((r) => this.#modeWaiters.push(r));
    }
  }

  async #pump(p: Pair, from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (!p.closed) {
        await this.#gate(p);
        const n = await from.read(buf);
        if (n === null) break;
        let chunk = buf.subarray(0, n);
        while (chunk.length > 0 && !p.closed) {
          await this.#gate(p);
          const slice = this.#mode === "slow" ? chunk.subarray(0, this.#o.slowSliceBytes) : chunk;
          if (this.#mode === "slow") await new Promise((r) => setTimeout(r, this.#o.slowDelayMs));
          let off = 0;
          while (off < slice.length) off += await to.write(slice.subarray(off));
          this.forwarded += slice.length;
          chunk = chunk.subarray(slice.length);
        }
      }
      // EOF: pass the half-close on, the other direction may still carry data.
      await to.closeWrite().catch(() => {});
    } catch {
      this.#close(p);
    }
  }

  #close(p: Pair): void {
    if (!this.#pairs.has(p)) return;
    p.closed = true;
    this.#pairs.delete(p);
    for (const c of [p.client, p.server]) {
      try {
        c?.close();
      } catch {
        // already closed
      }
    }
    for (const w of this.#modeWaiters.splice(0)) w();
  }
}
