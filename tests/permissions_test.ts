/**
 * Each mode under its own `deno.json` permission set (`deno run -P=<mode>`), and the compiled binary's
 * union of the sets after `narrow()`: what a mode must not do fails with a permission error.
 *
 * A probe script (written to a temp dir, run with the repo's deno.json as config so `-P=` finds the sets)
 * tries each capability and reports "ok" or the error class name.
 */
import { v8FlagsArg } from "../scripts/v8_flags.ts";
import { assert, assertEquals } from "../src/testing/assert.ts";
import { unionPermissionFlags } from "../scripts/compile.ts";

const REPO = new URL("..", import.meta.url).pathname;
const CONFIG = `${REPO}deno.json`;
const PERMISSIONS_MOD = new URL("../src/permissions.ts", import.meta.url).href;

type Action = "net" | "run" | "ffi" | "hostname" | "uid" | "write" | "env";
type Result = Record<Action, string>;

const PROBE = `
import { narrow } from "${PERMISSIONS_MOD}";
const [mode, needs, tmp] = JSON.parse(Deno.args[0]);
if (mode) narrow(mode, needs, Deno.permissions);
const out = {};
async function attempt(name, fn) {
  try { await fn(); out[name] = "ok"; } catch (e) { out[name] = e?.name ?? String(e); }
}
await attempt("net", () => Deno.listen({ hostname: "127.0.0.1", port: 0 }).close());
await attempt("run", () => new Deno.Command(Deno.execPath(), { args: ["--version"], stdout: "null" }).outputSync());
await attempt("ffi", () => Deno.dlopen("libc.so.6", {}).close());
await attempt("hostname", () => Deno.hostname());
await attempt("uid", () => Deno.uid());
await attempt("write", () => Deno.writeTextFileSync(tmp + "/written", "x"));
await attempt("env", () => Deno.env.get("HOME"));
console.log(JSON.stringify(out));
`;

const tmp = await Deno.makeTempDir({ prefix: "meshrelay-perm-" });
const probePath = `${tmp}/probe.ts`;
await Deno.writeTextFile(probePath, PROBE);
globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));

async function probe(permFlags: string[], mode?: string, needs: object = {}): Promise<Result> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--config",
      CONFIG,
      ...permFlags,
      probePath,
      JSON.stringify([mode, needs, tmp]),
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(stdout) as Result;
}

const DENIED = "NotCapable";

Deno.test("-P=<set> loads the deno.json permission set on this Deno", async (t) => {
  // The sets themselves, with no narrowing: certs may reach the network (for --kube) but not ffi;
  // server and agent may listen but never spawn processes.
  const cases: { set: string; want: Partial<Result> }[] = [
    {
      set: "certs",
      want: { net: "ok", run: "ok", ffi: DENIED, hostname: DENIED, uid: "ok", write: "ok", env: "ok" },
    },
    { set: "server", want: { net: "ok", run: DENIED, ffi: DENIED, hostname: "ok", uid: "ok", write: "ok" } },
    { set: "agent", want: { net: "ok", run: DENIED, ffi: DENIED, hostname: "ok", uid: "ok", write: "ok" } },
  ];
  for (const c of cases) {
    await t.step(c.set, async () => {
      const got = await probe([`-P=${c.set}`]);
      for (const [k, v] of Object.entries(c.want)) assertEquals(got[k as Action], v, `${c.set}: ${k}`);
    });
  }
});

Deno.test("each mode under its set, narrowed, cannot do what it must not", async (t) => {
  const cases: { name: string; mode: string; needs: object; want: Partial<Result> }[] = [
    {
      name: "certs (no --kube): no socket, no process, no host info",
      mode: "certs",
      needs: {},
      want: { net: DENIED, run: DENIED, ffi: DENIED, hostname: DENIED, uid: DENIED, write: "ok", env: "ok" },
    },
    {
      name: "certs --kube: network and exec credential plugins allowed",
      mode: "certs",
      needs: { kube: true },
      want: { net: "ok", run: "ok", ffi: DENIED, hostname: DENIED, uid: "ok", write: "ok" },
    },
    {
      name: "agent: no process, no ffi",
      mode: "agent",
      needs: {},
      want: { net: "ok", run: DENIED, ffi: DENIED, hostname: "ok", write: "ok" },
    },
    {
      name: "server: no process, no ffi",
      mode: "server",
      needs: {},
      want: { net: "ok", run: DENIED, ffi: DENIED, hostname: "ok", write: "ok" },
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const got = await probe([`-P=${c.mode}`], c.mode, c.needs);
      for (const [k, v] of Object.entries(c.want)) assertEquals(got[k as Action], v, `${c.name}: ${k}`);
    });
  }
});

Deno.test("the compiled binary's union of the sets is narrowed per mode", async (t) => {
  const cfg = JSON.parse(await Deno.readTextFile(CONFIG));
  const union = unionPermissionFlags(cfg.permissions);
  await t.step("union before narrowing grants net and run (so narrowing is what denies them)", async () => {
    const got = await probe(union);
    assertEquals([got.net, got.run, got.hostname], ["ok", "ok", "ok"]);
  });
  const cases: { mode: string; needs: object; want: Partial<Result> }[] = [
    {
      mode: "certs",
      needs: {},
      want: { net: DENIED, run: DENIED, ffi: DENIED, hostname: DENIED, uid: DENIED },
    },
    { mode: "certs", needs: { kube: true }, want: { net: "ok", run: "ok", hostname: DENIED } },
    { mode: "agent", needs: {}, want: { net: "ok", run: DENIED, ffi: DENIED, hostname: "ok" } },
    { mode: "server", needs: {}, want: { net: "ok", run: DENIED, ffi: DENIED, hostname: "ok" } },
  ];
  for (const c of cases) {
    await t.step(`${c.mode} ${JSON.stringify(c.needs)}`, async () => {
      const got = await probe(union, c.mode, c.needs);
      for (const [k, v] of Object.entries(c.want)) assertEquals(got[k as Action], v, `${c.mode}: ${k}`);
    });
  }
});

Deno.test("each real mode starts under its own set without permission errors", async (t) => {
  for (const mode of ["certs", "server", "agent"]) {
    await t.step(`${mode} --help`, async () => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--no-prompt", `-P=${mode}`, `${REPO}mod.ts`, mode, "--help"],
        cwd: REPO,
        stdout: "piped",
        stderr: "piped",
        stdin: "null",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert(!/NotCapable|not permitted|Requires .* access/.test(text), `${mode} under -P=${mode}: ${text}`);
    });
    await t.step(`version under -P=${mode}`, async () => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--no-prompt", `-P=${mode}`, `${REPO}mod.ts`, "version"],
        cwd: REPO,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    });
  }
});

Deno.test("the mode tasks run each mode under its own set, without prompts", async () => {
  const cfg = JSON.parse(await Deno.readTextFile(CONFIG));
  for (const mode of ["server", "agent", "certs"]) {
    // The long-running modes also carry meshrelay's V8 flags (scripts/v8_flags_test.ts checks which).
    const v8 = mode === "certs" ? "" : `${v8FlagsArg()} `;
    assertEquals(cfg.tasks[mode], `deno run --no-prompt -P=${mode} ${v8}mod.ts ${mode}`);
  }
});
