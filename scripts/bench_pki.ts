/**
 * `deno task bench:pki`: how long `meshrelay certs init` takes next to the prerequisites doc's openssl
 * script (tests/fixtures/seed_relay_certs.sh: RSA-4096 root, RSA-2048 server and signing), measured in
 * the same run on the same machine and printed as ratios. Both are timed as processes, as a user runs
 * them (the script spawns openssl seven times; meshrelay pays Deno's start-up once).
 *
 *   deno task bench:pki [--rounds N]     (default 5; rounds are interleaved so drift hits all variants alike)
 *
 * RSA key generation time varies a lot between runs (prime search), hence medians and the min/max columns.
 * @module
 */
const REPO = new URL("..", import.meta.url).pathname;

interface Variant {
  name: string;
  run: (dir: string) => Promise<void>;
}

async function exec(cmd: string, args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command(cmd, { args, cwd, stdin: "null", stdout: "null", stderr: "piped" })
    .output();
  if (out.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

const certsInit = (flags: string[]) => (dir: string) =>
  exec(Deno.execPath(), [
    "run",
    "--quiet",
    "--no-prompt",
    "--config",
    `${REPO}deno.json`,
    "-P=certs",
    `${REPO}mod.ts`,
    "certs",
    "init",
    "--out",
    "pki",
    ...flags,
  ], dir);

const VARIANTS: Variant[] = [
  {
    name: "openssl script (seed 002)",
    run: (dir) => exec("bash", [`${REPO}tests/fixtures/seed_relay_certs.sh`], dir),
  },
  {
    name: "certs init, same RSA sizes",
    run: certsInit(["--root-key-algorithm", "rsa-4096", "--key-algorithm", "rsa-2048"]),
  },
  { name: "certs init, ECDSA defaults", run: certsInit([]) },
  { name: "certs init, Ed25519", run: certsInit(["--key-algorithm", "ed25519"]) },
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function parseRounds(args: string[]): number {
  const i = args.indexOf("--rounds");
  const n = i >= 0 ? Number(args[i + 1]) : 5;
  if (!Number.isInteger(n) || n < 1) {
    console.error("bench_pki: --rounds must be a positive whole number");
    Deno.exit(2);
  }
  return n;
}

if (import.meta.main) {
  const rounds = parseRounds(Deno.args);
  const times = new Map<string, number[]>(VARIANTS.map((v) => [v.name, []]));
  // One warm-up of each so Deno's module cache and the page cache are hot for every variant.
  for (const v of VARIANTS) {
    const dir = await Deno.makeTempDir({ prefix: "meshrelay-bench-pki-" });
    await v.run(dir).finally(() => Deno.remove(dir, { recursive: true }));
  }
  for (let r = 0; r < rounds; r++) {
    for (const v of VARIANTS) {
      const dir = await Deno.makeTempDir({ prefix: "meshrelay-bench-pki-" });
      try {
        const t0 = performance.now();
        await v.run(dir);
        times.get(v.name)!.push(performance.now() - t0);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
    console.error(`bench_pki: round ${r + 1}/${rounds} done`);
  }
  const base = median(times.get(VARIANTS[0].name)!);
  const rows = [["variant", "median ms", "min ms", "max ms", "vs openssl script"]];
  for (const v of VARIANTS) {
    const t = times.get(v.name)!;
    rows.push([
      v.name,
      median(t).toFixed(0),
      Math.min(...t).toFixed(0),
      Math.max(...t).toFixed(0),
      `${(median(t) / base).toFixed(2)}x`,
    ]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row: string[]) =>
    `| ${row.map((v, c) => c === 0 ? v.padEnd(widths[c]) : v.padStart(widths[c])).join(" | ")} |`;
  console.log(
    `meshrelay certs init vs the prerequisites doc's openssl script, ${rounds} rounds, ${navigator.hardwareConcurrency} CPUs, deno ${Deno.version.deno}`,
  );
  console.log(line(rows[0]));
  console.log(`|${widths.map((w, c) => c === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":").join("|")}|`);
  for (const row of rows.slice(1)) console.log(line(row));
  console.log("(ratio below 1: meshrelay is faster)");
}
