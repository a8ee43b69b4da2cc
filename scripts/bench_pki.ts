/**
 * `deno task bench:pki`: how long `meshrelay certs init` takes next to the prerequisites doc's openssl
 * script (tests/fixtures/seed_relay_certs.sh: RSA-4096 root, RSA-2048 server and signing), measured in
 * the same run on the same machine and printed as ratios. Both are timed as processes, as a user runs
 * them (the script spawns openssl seven times; meshrelay pays Deno's start-up once).
 *
 * Then the relay's per-Bootstrap signing cost: `signCsr` on P-256 CSRs with a P-256 signing CA, in this
 * process, next to the floor it cannot go below — a bare WebCrypto ECDSA P-256 sign over the certificate's
 * to-be-signed size plus a verify over the CSR's signed size — as ms and CPU ms per CSR and their ratio.
 *
 *   deno task bench:pki [--rounds N] [--csrs N] [--only init|sign]
 *
 * Rounds (default 5) are interleaved so drift hits all variants alike; --csrs (default 300) CSRs per round.
 * RSA key generation time varies a lot between runs (prime search), hence medians and the min/max columns.
 * @module
 */
import process from "node:process";
import { createCsr, generateKeyPair, issueCertificate, signCsr } from "../src/pki/mod.ts";

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

function parseCount(args: string[], flag: string, fallback: number): number {
  const i = args.indexOf(flag);
  const n = i >= 0 ? Number(args[i + 1]) : fallback;
  if (!Number.isInteger(n) || n < 1) {
    console.error(`bench_pki: ${flag} must be a positive whole number`);
    Deno.exit(2);
  }
  return n;
}

function printTable(rows: string[][]): void {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row: string[]) =>
    `| ${row.map((v, c) => c === 0 ? v.padEnd(widths[c]) : v.padStart(widths[c])).join(" | ")} |`;
  console.log(line(rows[0]));
  console.log(`|${widths.map((w, c) => c === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":").join("|")}|`);
  for (const row of rows.slice(1)) console.log(line(row));
}

async function benchCertsInit(rounds: number): Promise<void> {
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
  console.log(
    `meshrelay certs init vs the prerequisites doc's openssl script, ${rounds} rounds, ${navigator.hardwareConcurrency} CPUs, deno ${Deno.version.deno}`,
  );
  printTable(rows);
  console.log("(ratio below 1: meshrelay is faster)");
}

/** Length of the first element inside a DER SEQUENCE (a certificate's TBS, a CSR's signed info). */
function firstElementLength(der: Uint8Array): number {
  const header = (at: number) => {
    const l = der[at + 1];
    if (l < 0x80) return { start: at + 2, len: l };
    let len = 0;
    for (let k = 0; k < (l & 0x7f); k++) len = len * 256 + der[at + 2 + k];
    return { start: at + 2 + (l & 0x7f), len };
  };
  const inner = header(header(0).start);
  return inner.start - header(0).start + inner.len;
}

function derOfPem(pem: string): Uint8Array {
  return Uint8Array.from(
    atob(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "")),
    (c) => c.charCodeAt(0),
  );
}

async function benchSignCsr(rounds: number, count: number): Promise<void> {
  const now = new Date();
  const rootKey = await generateKeyPair("ecdsa-p256");
  const root = await issueCertificate({
    profile: "root-ca",
    subject: "CN=bench-root",
    publicKey: rootKey.publicKey,
    selfSignKey: rootKey,
    now,
    validityMs: 3650 * 86_400_000,
  });
  const signingKey = await generateKeyPair("ecdsa-p256");
  const issuer = {
    certificate: await issueCertificate({
      profile: "intermediate-ca",
      subject: "CN=bench-signing",
      publicKey: signingKey.publicKey,
      issuer: { certificate: root, keyPair: rootKey },
      now,
      validityMs: 365 * 86_400_000,
    }),
    keyPair: signingKey,
    chain: [root],
  };
  const csrs: { pem: string; cluster: string }[] = [];
  for (let i = 0; i < count; i++) {
    const cluster = `cluster-${i}`;
    csrs.push({
      pem: await createCsr(await generateKeyPair("ecdsa-p256"), { dnsNames: [cluster] }),
      cluster,
    });
  }
  const sign = (c: { pem: string; cluster: string }) =>
    signCsr(c.pem, {
      issuer,
      profile: "client",
      expectDnsNames: [c.cluster],
      now,
      validityMs: 365 * 86_400_000,
    });
  const sample = await sign(csrs[0]);
  // The floor: what signCsr must do cryptographically, on inputs of the same sizes.
  const ecdsa = { name: "ECDSA", hash: "SHA-256" };
  const tbs = crypto.getRandomValues(new Uint8Array(firstElementLength(new Uint8Array(sample.rawData))));
  const info = crypto.getRandomValues(new Uint8Array(firstElementLength(derOfPem(csrs[0].pem))));
  const infoSignature = await crypto.subtle.sign(ecdsa, signingKey.privateKey, info);
  const variants: { name: string; run: () => Promise<void> }[] = [
    {
      name: "WebCrypto P-256 sign + verify",
      run: async () => {
        for (let i = 0; i < count; i++) {
          await crypto.subtle.sign(ecdsa, signingKey.privateKey, tbs);
          await crypto.subtle.verify(ecdsa, signingKey.publicKey, infoSignature, info);
        }
      },
    },
    {
      name: "signCsr",
      run: async () => {
        for (const c of csrs) await sign(c);
      },
    },
  ];
  const cpuMs = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const wall = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  const cpu = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  for (const v of variants) await v.run();
  for (let r = 0; r < rounds; r++) {
    for (const v of variants) {
      const t0 = performance.now(), c0 = cpuMs();
      await v.run();
      cpu.get(v.name)!.push((cpuMs() - c0) / count);
      wall.get(v.name)!.push((performance.now() - t0) / count);
    }
  }
  const base = { wall: median(wall.get(variants[0].name)!), cpu: median(cpu.get(variants[0].name)!) };
  const rows = [["variant", "ms/CSR", "CPU ms/CSR", "vs WebCrypto", "CPU vs WebCrypto"]];
  for (const v of variants) {
    const w = median(wall.get(v.name)!), c = median(cpu.get(v.name)!);
    rows.push([
      v.name,
      w.toFixed(2),
      c.toFixed(2),
      `${(w / base.wall).toFixed(2)}x`,
      `${(c / base.cpu).toFixed(2)}x`,
    ]);
  }
  console.log(
    `signCsr ms per CSR (P-256 CA, P-256 CSRs; TBS ${tbs.length} B, CSR info ${info.length} B), ${count} CSRs x ${rounds} rounds, medians, ${navigator.hardwareConcurrency} CPUs, deno ${Deno.version.deno}`,
  );
  printTable(rows);
  console.log("(CPU counts every thread of this process; WebCrypto signs on a worker thread)");
}

if (import.meta.main) {
  const rounds = parseCount(Deno.args, "--rounds", 5);
  const count = parseCount(Deno.args, "--csrs", 300);
  const i = Deno.args.indexOf("--only");
  const only = i >= 0 ? Deno.args[i + 1] : undefined;
  if (only !== undefined && only !== "init" && only !== "sign") {
    console.error("bench_pki: --only takes init or sign");
    Deno.exit(2);
  }
  if (only !== "sign") await benchCertsInit(rounds);
  if (only === undefined) console.log();
  if (only !== "init") await benchSignCsr(rounds, count);
}
