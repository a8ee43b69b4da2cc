/**
 * Token guessing against a real `meshrelay server` process:
 *
 * - failures are rate-limited per peer: after the burst, even the right token is refused with
 *   RESOURCE_EXHAUSTED from that address, while another address (::1 next to 127.0.0.1) still gets
 *   through; the refusals are counted in the metrics;
 * - the time a guess takes does not tell how much of it is right: interleaved samples of Bootstrap
 *   calls through the server with a far miss (first secret character wrong), a near miss (all but the
 *   last character right) and a wrong length have medians within a generous bound of each other, for
 *   the shared token and for a per-cluster token;
 * - right vs wrong: the token check itself (TokenAuthority.check on the server's file store) takes the
 *   same time for the right token and a near miss. Through the server a right token necessarily does
 *   more work afterwards (and answers another status), so that comparison is made at the check.
 *
 * The timing comparisons are robust by construction: classes are interleaved in a shuffled order per
 * round (machine noise hits all alike), medians ignore outliers, and the bounds (30% of the median or
 * a floor far above jitter) are generous; they are not speed targets.
 */
import { AuthenticationError, GrpcStatus } from "../src/errors.ts";
import { IdentityService } from "../src/proto/mod.ts";
import { TokenAuthority } from "../src/relay/mod.ts";
import { FileSecretStore } from "../src/store/mod.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";
import { localServerArgs, metricValue, runCli, startServer, workspace } from "./relay_e2e_harness.ts";
import { rawClient, rawUnary, secretText, seeded } from "./support/hostile.ts";

const hasIpv6Loopback = (() => {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
})();

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Flips the last character of `t` to another allowed one. */
function nearMiss(t: string): string {
  const last = t[t.length - 1];
  return t.slice(0, -1) + (last === "A" ? "B" : "A");
}

/** Flips the first character of the secret part (after `mrbt.<id>.` for a per-cluster token). */
function farMiss(t: string): string {
  const at = t.startsWith("mrbt.") ? t.lastIndexOf(".") + 1 : 0;
  return t.slice(0, at) + (t[at] === "A" ? "B" : "A") + t.slice(at + 1);
}

/** Interleaves `classes` in a shuffled order per round; returns each class's median in ms. */
async function interleavedMedians(
  classes: Record<string, () => Promise<void>>,
  rounds: number,
  seed: number,
): Promise<Record<string, number>> {
  const names = Object.keys(classes);
  const samples: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const r = seeded(seed);
  for (let i = 0; i < 40; i++) await classes[names[i % names.length]](); // warm-up: JIT, connection
  for (let round = 0; round < rounds; round++) {
    const order = [...names];
    for (let i = order.length - 1; i > 0; i--) {
      const j = r.int(i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (const n of order) {
      const t0 = performance.now();
      await classes[n]();
      samples[n].push(performance.now() - t0);
    }
  }
  return Object.fromEntries(names.map((n) => [n, median(samples[n])]));
}

function checkSpread(what: string, med: Record<string, number>, floorMs: number): void {
  const lo = Math.min(...Object.values(med));
  const hi = Math.max(...Object.values(med));
  const bound = Math.max(0.3 * lo, floorMs);
  const text = Object.entries(med).map(([n, v]) => `${n}=${v.toFixed(4)}`).join(" ");
  assert(hi - lo <= bound, `${what}: medians differ by ${(hi - lo).toFixed(4)} ms (bound ${bound}): ${text}`);
  console.log(`${what}: median ms ${text} (spread ${(hi - lo).toFixed(4)}, bound ${bound.toFixed(4)})`);
}

Deno.test("token guessing: failures are rate-limited per peer", async (t) => {
  const ws = await workspace("hostile-token-limit");
  const secrets = `${ws.dir}/secrets`;
  const { proc, port, metricsPort } = await startServer([
    "--host",
    hasIpv6Loopback ? "::" : "127.0.0.1",
    ...localServerArgs(ws.config, { metrics: true }),
    "--secrets-dir",
    secrets,
    "--bootstrap-failure-burst",
    "5",
    "--bootstrap-failures-per-minute",
    "1",
  ], "token-limit-server");
  const clients: { close(): void }[] = [];
  try {
    const rootPem = await secretText(secrets, "relay-root-tls-secret", "ca.crt");
    const token = await secretText(secrets, "relay-identity-token-secret", "token");
    const v4 = rawClient(port, rootPem, undefined, "127.0.0.1");
    clients.push(v4);
    const call = (c: typeof v4, tok: string) =>
      rawUnary(
        c,
        "bootstrap",
        IdentityService.bootstrap.requestSerialize({ token: tok, cluster: "cluster-1", csrPem: "x" }),
      );

    await t.step("the burst of wrong guesses, then even the right token is refused", async () => {
      const r = seeded(31);
      for (let i = 0; i < 5; i++) {
        const res = await call(v4, Array.from({ length: 43 }, () => "abcdefgh"[r.int(8)]).join(""));
        assertEquals(res.code, GrpcStatus.UNAUTHENTICATED, res.details);
      }
      for (const tok of ["guess", token]) {
        const res = await call(v4, tok);
        assertEquals(res.code, GrpcStatus.RESOURCE_EXHAUSTED, res.details);
        assert(/retry in \d+ s/.test(res.details), res.details);
      }
      // Refusals while limited do not extend the penalty further than one refill per attempt.
      const exhausted = await metricValue(metricsPort!, "meshrelay_bootstrap_failures_total", {
        reason: "resource_exhausted",
      });
      assert(exhausted >= 2, `resource_exhausted counted: ${exhausted}`);
    });

    await t.step({
      name: "another peer address is not affected",
      ignore: !hasIpv6Loopback,
      fn: async () => {
        const v6 = rawClient(port, rootPem, undefined, "::1");
        clients.push(v6);
        const res = await call(v6, token);
        // Past the limiter and the token: refused only for the junk CSR.
        assertEquals(res.code, GrpcStatus.INVALID_ARGUMENT, res.details);
      },
    });
    assertEquals(proc.exited, undefined);
  } finally {
    for (const c of clients) c.close();
    await proc.stop("SIGTERM");
    await ws.cleanup();
  }
});

Deno.test("token guessing: a guess's timing does not tell how much of it is right", async (t) => {
  const ws = await workspace("hostile-token-timing");
  const secrets = `${ws.dir}/secrets`;
  const { proc, port } = await startServer([
    ...localServerArgs(ws.config, { metrics: true }),
    "--secrets-dir",
    secrets,
    "--bootstrap-failure-burst",
    "1000000",
  ], "token-timing-server");
  const c = { close() {} };
  try {
    const rootPem = await secretText(secrets, "relay-root-tls-secret", "ca.crt");
    const shared = await secretText(secrets, "relay-identity-token-secret", "token");
    const created = await runCli("server", [
      "token",
      "create",
      "--cluster",
      "cluster-1",
      "--ttl",
      "1h",
      "--secrets-dir",
      secrets,
    ]);
    assertEquals(created.code, 0, created.stderr);
    const perCluster = created.stdout.trim();
    const client = rawClient(port, rootPem);
    c.close = () => client.close();
    // A CSR that is refused right after the token check, so a right token issues nothing and is not
    // consumed (single-use per-cluster tokens are consumed only after signing).
    const call = (tok: string) =>
      rawUnary(
        client,
        "bootstrap",
        IdentityService.bootstrap.requestSerialize({ token: tok, cluster: "cluster-1", csrPem: "not a csr" }),
      );

    for (const [kind, token] of [["shared", shared], ["per-cluster", perCluster]] as const) {
      await t.step(`${kind} token: wrong guesses through the server`, async () => {
        const guess = (tok: string) => async () => {
          const res = await call(tok);
          assertEquals(res.code, GrpcStatus.UNAUTHENTICATED, res.details);
        };
        const med = await interleavedMedians(
          {
            near: guess(nearMiss(token)),
            far: guess(farMiss(token)),
            length: guess(token + "x"),
          },
          300,
          kind === "shared" ? 41 : 42,
        );
        checkSpread(`${kind} via server`, med, 0.5);
      });

      await t.step(`${kind} token: right vs wrong at the token check`, async () => {
        const tokens = new TokenAuthority({ store: new FileSecretStore(secrets) });
        const now = new Date();
        const med = await interleavedMedians(
          {
            right: async () => {
              await tokens.check(token, "cluster-1", { now, consume: false });
            },
            near: async () => {
              await tokens.check(nearMiss(token), "cluster-1", { now, consume: false }).then(
                () => Promise.reject(new Error("a near miss was accepted")),
                (e) => assert(e instanceof AuthenticationError),
              );
            },
          },
          2000,
          kind === "shared" ? 43 : 44,
        );
        checkSpread(`${kind} check`, med, 0.05);
      });
    }
    assertEquals(proc.exited, undefined);
  } finally {
    c.close();
    await proc.stop("SIGTERM");
    await ws.cleanup();
  }
});
