/**
 * `deno task bench:message-size`: what an open gRPC connection keeps after carrying the same bytes as one
 * large message or as many small ones, on a bare grpc-js mTLS server in Deno (no meshrelay code).
 *
 * Why it exists: on the pinned Deno 2.9.3 a connection's resident memory rises with the largest message
 * it carried, in either direction, and stays there for as long as the connection is open. The relay holds
 * one connection per agent for months, so it fills its Sync messages only to `SYNC_FILL_BYTES`
 * (src/relay/wire.ts) instead of to the 4 MiB message limit. This prints the growth per connection for
 * each way of sending the same bytes, as a ratio to the smallest messages, measured in the same run; each
 * variant gets a fresh server process, since what a connection keeps is its peak. Measured here (1,000
 * connections, 16,000 bytes): one message kept 80-105 KiB per connection, 16 × 1,024 bytes 13-16 KiB. Every variant is run
 * twice on its connections, so the second column shows whether the growth stays at the first peak.
 *
 * Usage: deno task bench:message-size [--connections 1000] [--bytes 16000]
 * @module
 */
import { Command } from "commander";
import { Driven } from "../bench/command_loop.ts";
import { rssOf } from "../bench/proc.ts";
import { type BaselineTls, startBaselineServer, writeBaselineTls } from "../bench/baseline_driver.ts";
import { FileSecretStore } from "../src/store/mod.ts";
import { makeTestPki } from "../src/relay/testing_pki.ts";
import { SYNC_FILL_BYTES } from "../src/relay/wire.ts";
import { RUNTIME_V8_FLAGS } from "./v8_flags.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One way of carrying `total` bytes: `count` messages of `bytes`, server to client or client to server. */
export interface Variant {
  name: string;
  direction: "out" | "in";
  bytes: number;
  count: number;
}

/** The variants for `total` bytes, both ways: one message, 4,000-byte messages, `SYNC_FILL_BYTES` messages. */
export function variants(total: number): Variant[] {
  const split = (direction: "out" | "in", bytes: number): Variant => ({
    name: `${direction === "out" ? "server → client" : "client → server"}: ${
      Math.ceil(total / bytes)
    } × ${bytes} B`,
    direction,
    bytes,
    count: Math.ceil(total / bytes),
  });
  const sizes = [...new Set([total, 4000, SYNC_FILL_BYTES])].filter((b) => b <= total);
  return (["out", "in"] as const).flatMap((d) => sizes.map((b) => split(d, b)));
}

async function measure(v: Variant, n: number, f: BaselineTls, tmp: string): Promise<number[]> {
  const { srv, port } = startBaselineServer({
    tls: f,
    stderrFile: `${tmp}/baseline.log`,
    v8Flags: RUNTIME_V8_FLAGS.join(","),
  });
  const gen = new Driven("loadgen", ["run", "-A", "bench/relay_loadgen.ts"], {
    cwd: ROOT,
    stderrFile: `${tmp}/loadgen.log`,
  });
  try {
    await Promise.all([srv.ready(), gen.ready()]);
    await gen.req({
      cmd: "baseline",
      port,
      n,
      rootCaPem: f.rootPem,
      certPem: f.clientChain,
      keyPem: f.clientKey,
    });
    const open = await gen.req({ cmd: "waitBaselineOpen", timeoutMs: 120_000 });
    if (!open.complete) throw new Error(`only part of ${n} streams opened: ${open.firstFailure}`);
    await sleep(2000);
    const held = rssOf(srv.proc.pid);
    const grown: number[] = [];
    let received = 0;
    for (let round = 0; round < 2; round++) {
      if (v.direction === "out") {
        const stamp = `r${round}`;
        await srv.req({ cmd: "broadcast", stamp, bytes: v.bytes, count: v.count });
        const got = await gen.req({ cmd: "waitBaselineStamp", stamp, timeoutMs: 120_000 });
        if (!got.complete) throw new Error(`${v.name}: not every stream received round ${round}`);
      } else {
        await gen.req({ cmd: "baselineIngest", perStream: v.count, bytes: v.bytes });
        received += n * v.count;
        const got = await srv.req({ cmd: "waitReceived", count: received, timeoutMs: 120_000 });
        if (!got.complete) throw new Error(`${v.name}: the server did not receive round ${round}`);
      }
      await sleep(1500);
      grown.push((rssOf(srv.proc.pid) - held) / n);
    }
    return grown;
  } finally {
    await gen.req({ cmd: "stop" }).catch(() => {});
    srv.proc.kill("SIGKILL");
    await Promise.all([srv.proc.status, gen.proc.status]);
  }
}

if (import.meta.main) {
  const opts = new Command("bench:message-size")
    .option("--connections <n>", "mTLS connections, one bidi stream each", "1000")
    .option("--bytes <n>", "bytes carried per stream in each variant", "16000")
    .parse(["deno", "bench", ...Deno.args]).opts();
  const n = Number(opts.connections);
  const total = Number(opts.bytes);
  const tmp = await Deno.makeTempDir({ prefix: "mr-bench-msgsize-" });
  try {
    const pki = await makeTestPki(new Date(), new FileSecretStore(`${tmp}/secrets`));
    const f = await writeBaselineTls(pki, tmp);
    console.error(
      `bench:message-size: ${n} connections, ${total} bytes per stream, Deno ${Deno.version.deno}`,
    );
    const rows: { v: Variant; grown: number[] }[] = [];
    for (const v of variants(total)) {
      const grown = await measure(v, n, f, tmp);
      console.error(`  ${v.name}: +${(grown[0] / 1024).toFixed(1)} KiB per connection`);
      rows.push({ v, grown });
    }
    const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;
    const lines = [
      ["variant", "RSS kept per connection", "after a second round", "ratio to SYNC_FILL_BYTES messages"],
    ];
    for (const r of rows) {
      const small = rows.find((x) => x.v.direction === r.v.direction && x.v.bytes === SYNC_FILL_BYTES)!;
      lines.push([
        r.v.name,
        kib(r.grown[0]),
        kib(r.grown[1]),
        `${(r.grown[1] / Math.max(small.grown[1], 1)).toFixed(1)}×`,
      ]);
    }
    const w = lines[0].map((_, i) => Math.max(...lines.map((l) => l[i].length)));
    for (const l of lines) console.log(`| ${l.map((c, i) => c.padEnd(w[i])).join(" | ")} |`);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}
