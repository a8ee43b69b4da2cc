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
 * Then, on a `node:http2` TLS server (the relay's test PKI, as bench:relay's baseline), what
 * a connection keeps after it *received* one burst of N bytes at once, for each `--burst-sizes` size in a
 * fresh server process (what a connection keeps is its peak, so sizes must not share one). This is why an
 * agent sends at most `DISCOVERY_PUSH_BYTES` (src/relay/wire.ts) at once. 1,000 connections, two or three
 * runs per size, per connection: 3.5-3.7 KiB at 1 KiB, 6.2-6.5 at 2 KiB, 9.6-9.7 at 3 KiB, then a step:
 * 24.4 at 4 KiB, 47.8 at 8 KiB, 90 at 16 KiB; a second burst of the same size adds next to nothing up to
 * 8 KiB. The rows are printed as a table
 * and then as one JSON line (`{"received": [...]}`). `--received-only` skips the closed / open measurement.
 *
 * Usage: deno task bench:http2-leak [--connections 2000] [--burst-sizes 2048,3072,4096,8192]
 *   [--received-only]
 * @module
 */
import http2 from "node:http2";
import { writeBaselineTls } from "../bench/baseline_driver.ts";
import { Driven, out, serveCommands } from "../bench/command_loop.ts";
import { makeTestPki } from "../src/relay/testing_pki.ts";

const mib = (b: number) => (b / 2 ** 20).toFixed(1);

/** RSS after several full collections (the child runs with --expose-gc), so garbage does not count. */
async function rssAfterGc(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc!;
  for (let i = 0; i < 10; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 50));
  }
  return Deno.memoryUsage().rss;
}

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
  await serveCommands(async () => ({ rss: await rssAfterGc(), sessions, collected }));
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

async function closedVersusOpen(n: number): Promise<void> {
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

/** The TLS server child: acks every 'data' event with one byte and counts the bytes that arrived. */
async function serveTls(dir: string): Promise<void> {
  let received = 0;
  const server = http2.createSecureServer({
    key: await Deno.readTextFile(`${dir}/baseline-server.key`),
    cert: await Deno.readTextFile(`${dir}/baseline-server.crt`),
  });
  server.on("stream", (st) => {
    st.respond({ ":status": 200 });
    // The ack keeps the server writing too, as a relay stream answers each message with a DiscoveryAck.
    st.on("data", (d: Uint8Array) => {
      received += d.byteLength;
      st.write(ACK);
    });
    st.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  out({ event: "ready", port: (server.address() as { port: number }).port });
  await serveCommands<{ id?: unknown; expect: number }>(async ({ expect }) => {
    // The client's acks come per 'data' event, not per write, so only the server knows that a whole
    // burst arrived: measuring earlier would miss what its reads keep.
    const deadline = Date.now() + 60_000;
    while (received < expect) {
      if (Date.now() > deadline) throw new Error(`only ${received} of ${expect} bytes arrived in 60 s`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return { rss: await rssAfterGc(), received };
  });
  server.close();
}

const ACK = new Uint8Array(1);
/** What each connection received before the bursts: enough to open the stream and read on it once. */
const TINY_BYTES = 100;

/** One client stream of the received-burst measurement, with a promise for its next ack. */
interface Pusher {
  session: http2.ClientHttp2Session;
  stream: http2.ClientHttp2Stream;
  nextAck: () => Promise<void>;
}

async function openPusher(port: number, ca: string): Promise<Pusher> {
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca, servername: "localhost" });
  session.on("error", () => {});
  const stream = session.request({ ":method": "POST", ":path": "/push" }, { endStream: false });
  let waiting: (() => void)[] = [];
  stream.on("data", () => {
    const w = waiting;
    waiting = [];
    for (const r of w) r();
  });
  const failed = new Promise<never>((_, reject) => stream.on("error", reject));
  failed.catch(() => {});
  const nextAck = () => Promise.race([new Promise<void>((r) => waiting.push(r)), failed]);
  const ack = nextAck();
  stream.write(new Uint8Array(TINY_BYTES));
  await ack;
  return { session, stream, nextAck };
}

/** One row of the received-burst table; RSS in bytes, growth in bytes per connection. */
interface ReceivedRow {
  burstBytes: number;
  rssBefore: number;
  rssAfterFirst: number;
  rssAfterSecond: number;
  growthPerConnection: number;
}

/** Server RSS before and after each of `n` TLS connections received one and then a second `burst` bytes. */
async function receivedBurst(n: number, burst: number, tls: string): Promise<ReceivedRow> {
  const child = new Driven(`http2 TLS server (${burst} B)`, [
    "run",
    "-A",
    "--v8-flags=--expose-gc",
    new URL(import.meta.url).pathname,
    "--serve-tls",
    tls,
  ]);
  try {
    const { port } = await child.ready() as { port: number };
    const ca = await Deno.readTextFile(`${tls}/baseline-ca.crt`);
    const pushers: Pusher[] = [];
    // Opened a few at a time: 1,000 TLS handshakes one by one take long, all at once overflow the backlog.
    for (let k = 0; k < n; k += 50) {
      const batch = Math.min(50, n - k);
      pushers.push(...await Promise.all(Array.from({ length: batch }, () => openPusher(port, ca))));
    }
    let expect = n * TINY_BYTES;
    const measure = async () => (await child.req({ cmd: "measure", expect })).rss as number;
    const before = await measure();
    const after: number[] = [];
    for (let round = 0; round < 2; round++) {
      const chunk = new Uint8Array(burst);
      await Promise.all(pushers.map((p) => {
        const ack = p.nextAck();
        p.stream.write(chunk);
        return ack;
      }));
      expect += n * burst;
      after.push(await measure());
    }
    for (const p of pushers) p.session.destroy();
    return {
      burstBytes: burst,
      rssBefore: before,
      rssAfterFirst: after[0],
      rssAfterSecond: after[1],
      growthPerConnection: (after[0] - before) / n,
    };
  } finally {
    await child.kill("SIGTERM");
  }
}

/** The relay's test PKI (the same server certificate bench:relay's baseline uses) in a new temp dir. */
async function makeTls(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "bench_http2_tls_" });
  await writeBaselineTls(await makeTestPki(), dir);
  return dir;
}

async function received(n: number, sizes: number[]): Promise<void> {
  const tls = await makeTls();
  const rows: ReceivedRow[] = [];
  try {
    for (const size of sizes) rows.push(await receivedBurst(n, size, tls));
  } finally {
    await Deno.remove(tls, { recursive: true });
  }
  console.log(
    `Deno ${Deno.version.deno}, bare node:http2 TLS server, ${n} connections, each received ` +
      `${TINY_BYTES} B, then one burst, then a second (RSS after GC, fresh server per size)`,
  );
  const head = ["burst bytes", "RSS before", "after 1st burst", "after 2nd", "growth / conn"];
  const table = rows.map((r) => [
    String(r.burstBytes),
    `${mib(r.rssBefore)} MiB`,
    `${mib(r.rssAfterFirst)} MiB`,
    `${mib(r.rssAfterSecond)} MiB`,
    `${(r.growthPerConnection / 1024).toFixed(1)} KiB`,
  ]);
  const widths = head.map((h, c) => Math.max(h.length, ...table.map((t) => t[c].length)));
  for (const line of [head, ...table]) {
    console.log("  " + line.map((cell, c) => cell.padStart(widths[c])).join(" | "));
  }
  console.log(JSON.stringify({ deno: Deno.version.deno, connections: n, received: rows }));
}

/** The value after `flag` in the command line, or `fallback` without one. */
function flagValue(flag: string, fallback: string): string {
  const i = Deno.args.indexOf(flag);
  return i >= 0 ? Deno.args[i + 1] ?? "" : fallback;
}

async function main(): Promise<void> {
  const n = Number(flagValue("--connections", "2000"));
  if (!Number.isInteger(n) || n <= 0) {
    console.error("--connections must be a positive whole number");
    Deno.exit(2);
  }
  const sizes = flagValue("--burst-sizes", "2048,3072,4096,8192").split(",").map(Number);
  if (sizes.some((s) => !Number.isInteger(s) || s <= 0)) {
    console.error("--burst-sizes must be a comma-separated list of positive whole numbers");
    Deno.exit(2);
  }
  if (!Deno.args.includes("--received-only")) await closedVersusOpen(n);
  await received(n, sizes);
}

if (import.meta.main) {
  if (Deno.args.includes("--serve")) await serve();
  else if (Deno.args.includes("--serve-tls")) await serveTls(flagValue("--serve-tls", ""));
  else await main();
}
