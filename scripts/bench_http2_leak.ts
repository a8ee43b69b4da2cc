/**
 * `deno task bench:http2-leak`: what a closed HTTP/2 connection leaves behind in a Deno `node:http2`
 * server, next to what an open one costs, measured in the same server process.
 *
 * Why it exists: on the pinned Deno 2.9.3 a closed session is never collected (docs/relay.md, Known
 * limits), so a relay server grows with every Bootstrap and every reconnect. A bare `node:http2` server
 * (no grpc-js, no meshrelay) shows that the cost is the runtime's. When the Deno pin moves, run this:
 * "collected" should reach the number of closed sessions and the ratio should fall towards 0. It also
 * shows what an open connection keeps after carrying data (10 writes of 20 KB at once, twice): the first
 * round's growth stays, the second adds little, so a long-lived relay stream costs its peak for life.
 *
 * Usage: deno task bench:http2-leak [--connections 2000]
 * @module
 */
import http2 from "node:http2";
import { Driven, out, serveCommands } from "../bench/command_loop.ts";

const mib = (b: number) => (b / 2 ** 20).toFixed(1);

async function serve(): Promise<void> {
  let sessions = 0;
  let collected = 0;
  const registry = new FinalizationRegistry<null>(() => collected++);
  const server = http2.createServer();
  server.on("session", (s) => {
    sessions++;
    registry.register(s, null);
  });
  server.on("stream", (st, headers) => {
    st.respond({ ":status": 200 });
    if (headers[":path"] !== "/carry") return void st.end("ok");
    // CARRY_WRITES writes of CARRY_BYTES at once, as a relay stream sends a desired state or a diff.
    const chunk = new Uint8Array(CARRY_BYTES);
    for (let i = 0; i < CARRY_WRITES; i++) st.write(chunk);
    st.end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  out({ event: "ready", port: (server.address() as { port: number }).port });
  const gc = (globalThis as { gc?: () => void }).gc!;
  await serveCommands(async () => {
    for (let i = 0; i < 10; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 50));
    }
    return { rss: Deno.memoryUsage().rss, sessions, collected };
  });
  server.close();
}

const CARRY_WRITES = 10;
const CARRY_BYTES = 20_000;

/** One request on `c` for `path`, read to the end. */
function get(c: http2.ClientHttp2Session, path: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = c.request({ ":path": path });
    req.on("data", () => {});
    req.on("end", resolve);
    req.on("error", reject);
    req.end();
  });
}

/** One request on a new connection; the connection stays open unless `close`. */
async function connect(port: number, close: boolean): Promise<http2.ClientHttp2Session> {
  const c = http2.connect(`http://127.0.0.1:${port}`);
  await get(c, "/");
  if (close) await new Promise((r) => c.close(() => r(undefined)));
  return c;
}

async function main(): Promise<void> {
  const i = Deno.args.indexOf("--connections");
  const n = i >= 0 ? Number(Deno.args[i + 1]) : 2000;
  if (!Number.isInteger(n) || n <= 0) {
    console.error("--connections must be a positive whole number");
    Deno.exit(2);
  }
  const child = new Driven("http2 server", [
    "run",
    "-A",
    "--v8-flags=--expose-gc",
    new URL(import.meta.url).pathname,
    "--serve",
  ]);
  const measure = async () => await child.req({ cmd: "measure" }) as Record<string, number>;
  const { port } = await child.ready() as { port: number };
  const start = await measure();
  for (let k = 0; k < n; k++) await connect(port, true);
  const afterClosed = await measure();
  const open: http2.ClientHttp2Session[] = [];
  for (let k = 0; k < n; k++) open.push(await connect(port, false));
  const afterOpen = await measure();
  // The open connections then carry data, twice: what stays after each round.
  const carried: Record<string, number>[] = [];
  for (let round = 0; round < 2; round++) {
    await Promise.all(open.map((c) => get(c, "/carry")));
    carried.push(await measure());
  }
  for (const c of open) c.close();
  await child.kill("SIGTERM");

  const perClosed = (afterClosed.rss - start.rss) / n;
  const perOpen = (afterOpen.rss - afterClosed.rss) / n;
  console.log(`Deno ${Deno.version.deno}, bare node:http2 server, ${n} connections each way`);
  console.log(
    `  RSS per closed connection: ${(perClosed / 1024).toFixed(1)} KiB ` +
      `(sessions collected after GC: ${afterClosed.collected} of ${n})`,
  );
  console.log(`  RSS per open connection:   ${(perOpen / 1024).toFixed(1)} KiB (baseline)`);
  console.log(
    `  ratio closed / open: ${(perClosed / perOpen).toFixed(2)}  ` +
      `(server RSS ${mib(start.rss)} → ${mib(afterClosed.rss)} → ${mib(afterOpen.rss)} MiB)`,
  );
  const kb = CARRY_WRITES * CARRY_BYTES / 1000;
  for (const [i, m] of carried.entries()) {
    console.log(
      `  RSS per open connection after it carried ${kb} KB ${i === 0 ? "once" : "again"}: +` +
        `${
          ((m.rss - afterOpen.rss) / n / 1024).toFixed(1)
        } KiB (kept: the runtime holds a connection's peak)`,
    );
  }
}

if (import.meta.main) {
  if (Deno.args.includes("--serve")) await serve();
  else await main();
}
