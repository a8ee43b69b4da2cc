/**
 * `meshrelay certs` fed hostile PEM: random bytes, random base64 under every PEM label we read,
 * truncated and bit-flipped real certificates and keys, missing END lines, an empty file, a huge body.
 * Every command answers with its documented bad-input exit code (2; `verify` may say 1 "invalid" for a
 * certificate that still parses), exactly one line on stderr, no stack trace, and writes nothing.
 * The inputs are seeded, so a failure reproduces.
 */
import { Buffer } from "node:buffer";
import { assert, assertEquals } from "../src/testing/assert.ts";
import { runCli } from "./relay_e2e_harness.ts";
import { mutate, seeded } from "./support/hostile.ts";

const LABELS = [
  "CERTIFICATE",
  "PRIVATE KEY",
  "EC PRIVATE KEY",
  "RSA PRIVATE KEY",
  "ENCRYPTED PRIVATE KEY",
  "CERTIFICATE REQUEST",
];

function pem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString("base64").replace(/(.{64})/g, "$1\n");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function derOf(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64"));
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "null", stderr: "piped" }).output();
  if (out.code !== 0) throw new Error(new TextDecoder().decode(out.stderr));
}

/** Runs `fns` at most `n` at a time. */
async function pool<T>(n: number, fns: (() => Promise<T>)[]): Promise<T[]> {
  const out: T[] = new Array(fns.length);
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < fns.length) {
      const i = next++;
      out[i] = await fns[i]();
    }
  }));
  return out;
}

Deno.test("certs commands with hostile PEM: exit 2, one line, nothing written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-hostile-certs-" });
  try {
    await openssl(
      ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "k.pem"],
      dir,
    );
    await openssl([
      "req",
      "-x509",
      "-new",
      "-key",
      "k.pem",
      "-subj",
      "/CN=ca",
      "-days",
      "2",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-out",
      "c.pem",
    ], dir);
    const certDer = derOf(await Deno.readTextFile(`${dir}/c.pem`));
    const keyDer = derOf(await Deno.readTextFile(`${dir}/k.pem`));
    const r = seeded(21);
    const inputs: [string, Uint8Array | string][] = [
      ["random-bytes", r.bytes(700)],
      ["empty", ""],
      ...LABELS.map((l) => [`random-${l}`, pem(l, r.bytes(50 + r.int(500)))] as [string, string]),
      ["truncated-cert", (await Deno.readTextFile(`${dir}/c.pem`)).slice(0, 200)],
      ["no-end-line", (await Deno.readTextFile(`${dir}/c.pem`)).replace(/-----END[^\n]+\n/, "")],
      ["flipped-cert-1", pem("CERTIFICATE", mutate(certDer, r))],
      ["flipped-cert-2", pem("CERTIFICATE", mutate(certDer, r))],
      ["flipped-key", pem("PRIVATE KEY", mutate(keyDer, r))],
      ["huge", `-----BEGIN CERTIFICATE-----\n${"A".repeat(4 * 1024 * 1024)}\n-----END CERTIFICATE-----\n`],
    ];
    for (const [name, body] of inputs) {
      if (typeof body === "string") await Deno.writeTextFile(`${dir}/${name}.pem`, body);
      else await Deno.writeFile(`${dir}/${name}.pem`, body);
    }
    const runs: { what: string; args: string[]; codes: number[]; out?: string }[] = [];
    for (const [name] of inputs) {
      const f = `${dir}/${name}.pem`;
      runs.push(
        { what: `inspect ${name}`, args: ["inspect", f], codes: [2] },
        { what: `check ${name}`, args: ["check", f], codes: [2] },
        { what: `verify ${name}`, args: ["verify", f, "--ca", `${dir}/c.pem`], codes: [1, 2] },
        { what: `verify --ca ${name}`, args: ["verify", `${dir}/c.pem`, "--ca", f], codes: [1, 2] },
        {
          what: `agent signing-cert ${name}`,
          args: ["agent", "--cluster", "c1", "--signing-cert", f, "--signing-key", `${dir}/k.pem`],
          codes: [2],
          out: `${dir}/out-a-${name}`,
        },
        {
          what: `agent signing-key ${name}`,
          args: ["agent", "--cluster", "c1", "--signing-cert", `${dir}/c.pem`, "--signing-key", f],
          codes: [2],
          out: `${dir}/out-k-${name}`,
        },
        {
          what: `init ca-cert ${name}`,
          args: ["init", "--ca-cert", f, "--ca-key", `${dir}/k.pem`],
          codes: [2],
          out: `${dir}/out-i-${name}`,
        },
      );
    }
    const results = await pool(
      6,
      runs.map((run) => () => runCli("certs", [...run.args, ...(run.out ? ["--out", run.out] : [])])),
    );
    for (const [i, run] of runs.entries()) {
      const res = results[i];
      assert(run.codes.includes(res.code), `${run.what}: exit ${res.code}\n${res.stderr}`);
      // Deno's own notice about permission sets in deno.json is not ours.
      const lines = res.stderr.split("\n").filter((l) =>
        l.trim() !== "" && !l.startsWith("Warning Permissions")
      );
      assertEquals(lines.length, 1, `${run.what}: stderr\n${res.stderr}`);
      assert(lines[0].startsWith("meshrelay certs: "), `${run.what}: ${lines[0]}`);
      assert(!/\bat .+:\d+:\d+/.test(res.stderr), `${run.what}: stack trace`);
      assert(!res.stderr.includes("-----BEGIN"), `${run.what}: PEM echoed`);
      if (run.out) {
        const exists = await Deno.stat(run.out).then(() => true, () => false);
        assert(!exists, `${run.what}: wrote ${run.out}`);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
