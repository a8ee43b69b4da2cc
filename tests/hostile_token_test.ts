/**
 * Token guessing against the relay server:
 *
 * - failures are rate-limited per peer (a real `meshrelay server` process): after the burst, even the
 *   right token is refused with RESOURCE_EXHAUSTED from that address, while another address (::1 next
 *   to 127.0.0.1) still gets through; the refusals are counted in the metrics;
 * - the bucket refills over time (an in-process server on a clock the test moves, so no sleeping): one
 *   attempt back per refill interval, not before, a success costs nothing, and the refill stops at the
 *   burst;
 * - the time a guess takes does not tell how much of it is right, nor whether it is right, by a
 *   statistic that is shown to flag a leak: see "Timing" below.
 *
 * Timing. Every comparison times its classes in rounds: each round runs every class once, in a fresh
 * random order, so drift and bursts of machine noise fall on all classes alike. The statistic for two
 * classes a and b is the share of rounds in which a took longer than b (a paired sign test). With no
 * timing difference each round is a fair coin: the share is 0.5 with standard deviation 0.5/√n, so a
 * share further than 6 standard deviations (3/√n) from 0.5 is flagged as a difference; by chance that
 * happens about twice in 10⁹ comparisons. A flagged difference must also shift the median of the
 * rounds' differences by 1% of the operation's time, so that nanoseconds of no consequence, seen
 * consistently on a quiet machine, do not count. Both depend on signs and medians, not on sizes, so a
 * loaded machine's long outliers cannot push them past the bounds; they only make the test less
 * sensitive. How sensitive it is, is shown, not assumed: in the same rounds, in the same process, a
 * control comparator — the real one plus an early exit that does a little work per leading character
 * the guess shares with the secret — is measured too, and the same statistic must flag it. Its leak is
 * set to a fixed fraction of what the real comparison costs on this machine at this moment (measured
 * just before), so the control stays as hard to see on a fast idle machine as on a slow loaded one.
 *
 * Where: the comparator (constantTimeEqual: right vs wrong, near vs far miss, wrong length), the token
 * check (TokenAuthority.check: near vs far miss and wrong length, shared and per-cluster; the leaky
 * control goes through `check` itself via its comparator option), and through a real server (near vs
 * far miss and wrong length; no control can be injected into that process, so that comparison only says
 * that the network view shows no difference the statistic can see). Right vs wrong is not compared at
 * the check or through the server: there a right token necessarily does other work (a grant instead of
 * an error, a CSR check instead of UNAUTHENTICATED), and the answer tells right from wrong anyway.
 */
import type { Clock } from "../src/clock.ts";
import { systemClock } from "../src/clock.ts";
import { AuthenticationError, GrpcStatus } from "../src/errors.ts";
import { nullLogger } from "../src/log.ts";
import { createCsr, generateKeyPair } from "../src/pki/mod.ts";
import { IdentityService } from "../src/proto/mod.ts";
import { constantTimeEqual, IDENTITY_TOKEN_SECRET, RelayServer, TokenAuthority } from "../src/relay/mod.ts";
import { DirectoryConfigSource } from "../src/state/mod.ts";
import { MemorySecretStore } from "../src/store/mod.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";
import { EXAMPLES, metricValue, runCli } from "./relay_e2e_harness.ts";
import { hasIpv6Loopback, rawClient, rawUnary, seeded, withHostileServer } from "./support/hostile.ts";

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

/**
 * The same characters in a new flat string, as a token decoded off the wire is: a guess built by
 * concatenation is a rope in V8, which may cost more to read than a flat string, and would then differ
 * by that alone.
 */
function copyOf(t: string): string {
  return new TextDecoder().decode(new TextEncoder().encode(t));
}

type Run = () => unknown;

/** Runs `run` and waits for it when it returned a promise (sync classes stay free of await overhead). */
async function once(run: Run): Promise<void> {
  const r = run();
  if (r instanceof Promise) await r;
}

/** Times each class once per round, in a fresh random order per round; samples in ms, index = round. */
async function pairedSamples(
  classes: Record<string, Run>,
  rounds: number,
  seed: number,
): Promise<Record<string, number[]>> {
  const names = Object.keys(classes);
  const samples: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const r = seeded(seed);
  for (let i = 0; i < 10 * names.length; i++) await once(classes[names[i % names.length]]); // JIT, caches
  for (let round = 0; round < rounds; round++) {
    const order = [...names];
    for (let i = order.length - 1; i > 0; i--) {
      const j = r.int(i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (const n of order) {
      const t0 = performance.now();
      await once(classes[n]);
      samples[n].push(performance.now() - t0);
    }
  }
  return samples;
}

/** Share of rounds in which `a` took longer than `b` (ties count half). */
function slowerShare(a: number[], b: number[]): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] > b[i] ? 1 : a[i] === b[i] ? 0.5 : 0;
  return s / a.length;
}

/**
 * Smallest difference flagged, as a fraction of the operation's time: a consistent difference far below
 * any leak worth the name (guesses of another length cost a few nanoseconds more to hash) must not fail
 * the test on a quiet machine where the sign test alone would see it. The control leaks 25 times this.
 */
const MIN_EFFECT = 0.01;

/** Median of the rounds' differences `a − b`, relative to `b`'s median. */
function relativeShift(a: number[], b: number[]): number {
  return median(a.map((x, i) => x - b[i])) / median(b);
}

/**
 * Whether the statistic tells `a` from `b`: a share 6 standard deviations of a fair coin's from 0.5
 * (header), and a shift of at least MIN_EFFECT.
 */
function flagged(a: number[], b: number[]): boolean {
  return Math.abs(slowerShare(a, b) - 0.5) >= 3 / Math.sqrt(a.length) &&
    Math.abs(relativeShift(a, b)) >= MIN_EFFECT;
}

function summary(samples: Record<string, number[]>, a: string, b: string): string {
  const n = samples[a].length;
  const share = slowerShare(samples[a], samples[b]);
  return `${a} slower than ${b} in ${(100 * share).toFixed(1)}% of ${n} rounds ` +
    `(flagged beyond 50 ± ${(300 / Math.sqrt(n)).toFixed(1)}%), median shift ` +
    `${(100 * relativeShift(samples[a], samples[b])).toFixed(2)}% (flagged from ${100 * MIN_EFFECT}%); ` +
    `median ms ${a}=${median(samples[a]).toFixed(4)} ${b}=${median(samples[b]).toFixed(4)}`;
}

/** Asserts the statistic does not tell `a` from `b`, and logs what it saw. */
function assertIndistinguishable(
  what: string,
  samples: Record<string, number[]>,
  a: string,
  b: string,
): void {
  const text = `${what}: ${summary(samples, a, b)}`;
  console.log(text);
  assert(!flagged(samples[a], samples[b]), `timing difference: ${text}`);
}

/** Asserts the statistic tells `a` (slower) from `b`: the control proving the statistic's sensitivity. */
function assertFlagged(what: string, samples: Record<string, number[]>, a: string, b: string): void {
  const text = `${what}: ${summary(samples, a, b)}`;
  console.log(text);
  assert(
    slowerShare(samples[a], samples[b]) > 0.5 && flagged(samples[a], samples[b]),
    `the leaky control was not flagged: ${text}`,
  );
}

/**
 * What the control's near miss (all but one character shared) takes longer than its far miss (none
 * shared), as a fraction of the measured operation's own time (header: "Timing").
 */
const LEAK_FRACTION = 0.25;

let sink = 0;

/** Busy work the optimiser cannot drop: its result feeds `sink`. */
function spin(units: number): void {
  let x = sink | 0;
  for (let i = 0; i < units; i++) x = (Math.imul(x, 1103515245) + 12345) | 0;
  sink = x;
}

/** How many `spin` units take `ms` here and now. */
function spinUnitsFor(ms: number): number {
  const probe = 200_000;
  spin(probe); // JIT
  const ts: number[] = [];
  for (let i = 0; i < 21; i++) {
    const t0 = performance.now();
    spin(probe);
    ts.push(performance.now() - t0);
  }
  return Math.max(1, Math.round(probe * ms / median(ts)));
}

/** Median ms of `run` over `n` runs (after a warm-up). */
async function medianMs(run: Run, n: number): Promise<number> {
  for (let i = 0; i < 10; i++) await once(run);
  const ts: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await once(run);
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

/**
 * The control: the real comparison, then `units` of busy work per leading character the two strings
 * share (an early-exit comparison's leak, made big enough to measure).
 */
function leakyEqual(units: number): (a: string, b: string) => boolean {
  return (a, b) => {
    const equal = constantTimeEqual(a, b);
    for (let i = 0; i < a.length && i < b.length && a[i] === b[i]; i++) spin(units);
    return equal;
  };
}

/**
 * The control for an operation of `perOpMs` on secrets of `length` characters: {@linkcode leakyEqual}
 * leaking LEAK_FRACTION of the operation's time between a near miss (`length - 1` leading characters
 * shared) and a far one (none). Logs what it calibrated to.
 */
function controlComparator(
  what: string,
  op: string,
  perOpMs: number,
  length: number,
): (a: string, b: string) => boolean {
  const leakMs = LEAK_FRACTION * perOpMs / (length - 1);
  console.log(
    `${what}: ${(perOpMs * 1000).toFixed(2)} µs per ${op}; the control leaks ` +
      `${(leakMs * 1000).toFixed(3)} µs per shared leading character`,
  );
  return leakyEqual(spinUnitsFor(leakMs));
}

/** A 43-character base64url secret like a generated shared token, from a seed. */
function secretFrom(seed: number): string {
  const r = seeded(seed);
  const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  return Array.from({ length: 43 }, () => abc[r.int(64)]).join("");
}

Deno.test("token guessing: failures are rate-limited per peer", async (t) => {
  await withHostileServer({
    name: "hostile-token-limit",
    host: hasIpv6Loopback ? "::" : "127.0.0.1",
    args: ["--bootstrap-failure-burst", "5", "--bootstrap-failures-per-minute", "1"],
  }, async ({ port, metricsPort, rootPem, token, held }) => {
    const v4 = rawClient(port, rootPem, undefined, "127.0.0.1");
    held.push(v4);
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
      // Each of the two refusals while limited is counted once, under its own reason (a fresh server:
      // nothing else was refused so).
      const exhausted = await metricValue(metricsPort, "meshrelay_bootstrap_failures_total", {
        reason: "resource_exhausted",
      });
      assertEquals(exhausted, 2, "resource_exhausted counted");
    });

    await t.step({
      name: "another peer address is not affected",
      ignore: !hasIpv6Loopback,
      fn: async () => {
        const v6 = rawClient(port, rootPem, undefined, "::1");
        held.push(v6);
        const res = await call(v6, token);
        // Past the limiter and the token: refused only for the junk CSR.
        assertEquals(res.code, GrpcStatus.INVALID_ARGUMENT, res.details);
      },
    });
  });
});

Deno.test("token guessing: the failure budget refills over time, one attempt per interval, up to the burst", async (t) => {
  // The server's clock, moved by the test: the limiter reads it on every call, so no sleeping.
  let nowMs = Date.now();
  const clock: Clock = { now: () => new Date(nowMs), sleep: systemClock.sleep };
  const store = new MemorySecretStore();
  const server = await RelayServer.start({
    mode: "mtls",
    store,
    config: new DirectoryConfigSource({
      root: `${EXAMPLES}/config`,
      clock: systemClock,
      log: nullLogger,
      useFsEvents: false,
    }),
    clock,
    log: nullLogger,
    host: "127.0.0.1",
    port: 0,
    metricsPort: null,
    warmupMs: 0,
    rateLimit: { burst: 2, perMinute: 6 },
  });
  const clients: { close(): void }[] = [];
  try {
    const dec = new TextDecoder();
    const rootPem = dec.decode((await store.get("relay-root-tls-secret"))!.data["ca.crt"]);
    const token = dec.decode((await store.get(IDENTITY_TOKEN_SECRET))!.data.token).trim();
    const csrPem = await createCsr(await generateKeyPair(), { dnsNames: ["cluster-1"] });
    const c = rawClient(server.port, rootPem, undefined, "127.0.0.1");
    clients.push(c);
    const expect = async (tok: string, code: number, details?: RegExp) => {
      const r = await rawUnary(
        c,
        "bootstrap",
        IdentityService.bootstrap.requestSerialize({ token: tok, cluster: "cluster-1", csrPem }),
      );
      assertEquals(r.code, code, r.details);
      if (details) assert(details.test(r.details), r.details);
    };
    const wrong = nearMiss(token);

    await t.step("the burst of wrong guesses, then refused for one refill interval (10 s)", async () => {
      await expect(wrong, GrpcStatus.UNAUTHENTICATED);
      await expect(wrong, GrpcStatus.UNAUTHENTICATED);
      await expect(token, GrpcStatus.RESOURCE_EXHAUSTED, /retry in 10 s/);
    });
    await t.step("9 s later: still refused, 1 s to go", async () => {
      nowMs += 9_000;
      await expect(token, GrpcStatus.RESOURCE_EXHAUSTED, /retry in 1 s/);
    });
    await t.step("10 s later: one attempt back; a success costs none of it", async () => {
      nowMs += 1_000;
      await expect(token, GrpcStatus.OK);
      await expect(wrong, GrpcStatus.UNAUTHENTICATED);
      await expect(token, GrpcStatus.RESOURCE_EXHAUSTED, /retry in 10 s/);
    });
    await t.step("an hour later: the burst again, not more", async () => {
      nowMs += 3600_000;
      await expect(wrong, GrpcStatus.UNAUTHENTICATED);
      await expect(wrong, GrpcStatus.UNAUTHENTICATED);
      await expect(token, GrpcStatus.RESOURCE_EXHAUSTED, /retry in 10 s/);
    });
  } finally {
    for (const c of clients) c.close();
    await server.stop();
  }
});

Deno.test("token timing: the comparator tells neither right from wrong nor how much is right; a leaky control is flagged", async (t) => {
  const secret = secretFrom(7);
  const guesses = {
    right: copyOf(secret),
    near: copyOf(nearMiss(secret)),
    far: copyOf(farMiss(secret)),
    length: copyOf(secret + "x"),
  };
  // Several comparisons per sample, so a sample is long next to the timer's resolution.
  const BATCH = 20;
  const batch = (equal: (a: string, b: string) => boolean, guess: string) => () => {
    for (let i = 0; i < BATCH; i++) if (equal(secret, guess)) sink++;
  };
  const perCall = await medianMs(batch(constantTimeEqual, guesses.far), 51) / BATCH;
  const leaky = controlComparator("comparator", "comparison", perCall, secret.length);
  const s = await pairedSamples(
    {
      right: batch(constantTimeEqual, guesses.right),
      near: batch(constantTimeEqual, guesses.near),
      far: batch(constantTimeEqual, guesses.far),
      length: batch(constantTimeEqual, guesses.length),
      "leaky right": batch(leaky, guesses.right),
      "leaky near": batch(leaky, guesses.near),
      "leaky far": batch(leaky, guesses.far),
    },
    1000,
    51,
  );

  await t.step("right vs wrong: not told apart", () => {
    assertIndistinguishable("comparator", s, "right", "near");
    assertIndistinguishable("comparator", s, "right", "far");
  });
  await t.step("near vs far miss and wrong length: not told apart", () => {
    assertIndistinguishable("comparator", s, "near", "far");
    assertIndistinguishable("comparator", s, "length", "far");
  });
  await t.step("control: the same statistic flags the leaky comparator", () => {
    assertFlagged("control", s, "leaky near", "leaky far");
    assertFlagged("control", s, "leaky right", "leaky far");
  });
});

Deno.test("token timing: the token check does not tell how much of a wrong guess is right; a leaky control is flagged", async (t) => {
  const store = new MemorySecretStore();
  const shared = secretFrom(8);
  await store.put(IDENTITY_TOKEN_SECRET, { token: new TextEncoder().encode(shared) });
  const real = new TokenAuthority({ store });
  const now = new Date();
  const { token: perCluster } = await real.create("cluster-1", { now, ttlMs: 3600_000 });
  const BATCH = 5;
  const refused = (auth: TokenAuthority, guess: string) => async () => {
    for (let i = 0; i < BATCH; i++) {
      await auth.check(guess, "cluster-1", { now, consume: false }).then(
        () => {
          throw new Error("a wrong guess was accepted");
        },
        (e) => {
          if (!(e instanceof AuthenticationError)) throw e;
        },
      );
    }
  };
  const perCheck = await medianMs(refused(real, copyOf(farMiss(shared))), 51) / BATCH;
  const leaky = new TokenAuthority({
    store,
    compareSecrets: controlComparator("check", "refused guess", perCheck, shared.length),
  });
  const s = await pairedSamples(
    {
      "shared near": refused(real, copyOf(nearMiss(shared))),
      "shared far": refused(real, copyOf(farMiss(shared))),
      "shared length": refused(real, copyOf(shared + "x")),
      "cluster near": refused(real, copyOf(nearMiss(perCluster))),
      "cluster far": refused(real, copyOf(farMiss(perCluster))),
      "cluster length": refused(real, copyOf(perCluster + "x")),
      "leaky near": refused(leaky, copyOf(nearMiss(shared))),
      "leaky far": refused(leaky, copyOf(farMiss(shared))),
    },
    600,
    61,
  );

  await t.step("shared token: near vs far miss and wrong length not told apart", () => {
    assertIndistinguishable("check", s, "shared near", "shared far");
    assertIndistinguishable("check", s, "shared length", "shared far");
  });
  await t.step("per-cluster token: near vs far miss and wrong length not told apart", () => {
    assertIndistinguishable("check", s, "cluster near", "cluster far");
    assertIndistinguishable("check", s, "cluster length", "cluster far");
  });
  // Only for the shared token: a per-cluster secret is hashed before the comparison, so a prefix the
  // guess shares with it is gone before any comparator, leaky or not, sees it.
  await t.step("control: the same check with a leaky comparator is flagged", () => {
    assertFlagged("control", s, "leaky near", "leaky far");
  });
});

Deno.test("token timing through a real server: how much of a wrong guess is right is not told apart", async (t) => {
  await withHostileServer({
    name: "hostile-token-timing",
    args: ["--bootstrap-failure-burst", "1000000"],
  }, async ({ port, secrets, rootPem, token: shared, held }) => {
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
    const client = rawClient(port, rootPem, undefined, "127.0.0.1");
    held.push(client);
    const guess = (tok: string) => async () => {
      const res = await rawUnary(
        client,
        "bootstrap",
        IdentityService.bootstrap.requestSerialize({ token: tok, cluster: "cluster-1", csrPem: "not a csr" }),
      );
      assertEquals(res.code, GrpcStatus.UNAUTHENTICATED, res.details);
    };

    for (const [kind, token, seed] of [["shared", shared, 41], ["per-cluster", perCluster, 42]] as const) {
      await t.step(`${kind} token: near vs far miss and wrong length`, async () => {
        const s = await pairedSamples(
          { near: guess(nearMiss(token)), far: guess(farMiss(token)), length: guess(token + "x") },
          250,
          seed,
        );
        assertIndistinguishable(`${kind} via server`, s, "near", "far");
        assertIndistinguishable(`${kind} via server`, s, "length", "far");
      });
    }
  });
});
