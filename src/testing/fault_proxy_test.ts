import { assert, assertEquals } from "./assert.ts";
import { FaultProxy } from "./fault_proxy.ts";

/** An echo server on 127.0.0.1. */
function echoServer(): { port: number; close: () => Promise<void> } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const loop = (async () => {
    for await (const c of l) {
      conns.add(c);
      (async () => {
        const buf = new Uint8Array(4096);
        try {
          for (;;) {
            const n = await c.read(buf);
            if (n === null) break;
            let off = 0;
            while (off < n) off += await c.write(buf.subarray(off, n));
          }
        } catch {
          // cut by the proxy
        } finally {
          conns.delete(c);
          try {
            c.close();
          } catch {
            // closed
          }
        }
      })();
    }
  })().catch(() => {});
  return {
    port: (l.addr as Deno.NetAddr).port,
    close: async () => {
      l.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // closed
        }
      }
      await loop;
    },
  };
}

async function readExactly(c: Deno.Conn, n: number): Promise<Uint8Array | null> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const r = await c.read(out.subarray(off)).catch(() => null);
    if (r === null) return null;
    off += r;
  }
  return out;
}

const enc = new TextEncoder();

Deno.test("fault proxy: pass, stall, slow, drop, refuse", async (t) => {
  const echo = echoServer();
  const proxy = await FaultProxy.start({ targetPort: echo.port, slowSliceBytes: 256, slowDelayMs: 1 });
  try {
    await t.step("pass forwards both ways", async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await c.write(enc.encode("hello"));
      assertEquals(new TextDecoder().decode((await readExactly(c, 5))!), "hello");
      c.close();
    });

    await t.step("stall holds bytes until the mode changes, connection stays open", async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await c.write(enc.encode("a"));
      assertEquals((await readExactly(c, 1))![0], "a".charCodeAt(0));
      proxy.mode = "stall";
      const before = proxy.forwarded;
      await c.write(enc.encode("b"));
      await new Promise((r) => setTimeout(r, 100));
      assertEquals(proxy.forwarded, before, "nothing forwarded while stalled");
      assertEquals(proxy.connections, 1);
      proxy.mode = "pass";
      assertEquals((await readExactly(c, 1))![0], "b".charCodeAt(0));
      c.close();
    });

    await t.step("slow delivers everything intact in slices", async () => {
      proxy.mode = "slow";
      const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      const data = crypto.getRandomValues(new Uint8Array(8192));
      await c.write(data);
      assertEquals(await readExactly(c, data.length), data);
      proxy.mode = "pass";
      c.close();
    });

    await t.step("drop cuts open connections", async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await c.write(enc.encode("x"));
      await readExactly(c, 1);
      proxy.drop();
      assertEquals(await readExactly(c, 1), null);
      assertEquals(proxy.connections, 0);
      c.close();
    });

    await t.step("refuse closes new connections at once", async () => {
      proxy.mode = "refuse";
      const accepted = proxy.accepted;
      const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await c.write(enc.encode("x")).catch(() => 0);
      assertEquals(await readExactly(c, 1), null);
      assert(proxy.accepted > accepted);
      c.close();
      proxy.mode = "pass";
    });
  } finally {
    await proxy.close();
    await echo.close();
  }
});
