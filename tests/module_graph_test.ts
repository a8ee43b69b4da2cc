/**
 * What each mode loads at startup. The Kubernetes client alone adds ~65 MiB of RSS and the gRPC stack
 * ~13 MiB (measured with `Deno.memoryUsage()` after importing each), so a mode imports them only on the
 * paths that use them: `certs` never loads gRPC and loads the Kubernetes client only for its cluster
 * subcommands, and the server loads it only with `--kube`. Checked on the module graph `deno info`
 * reports: static imports only (dynamic `import()` is loaded when its path runs).
 */
import { assert } from "../src/testing/assert.ts";

interface InfoModule {
  specifier: string;
  kind?: string;
  npmPackage?: string;
  dependencies?: { code?: { specifier: string }; isDynamic?: boolean }[];
}

/** npm packages reachable from `entry` through static imports. */
async function staticNpmPackages(entry: string): Promise<Set<string>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: new URL("../", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    roots: string[];
    modules: InfoModule[];
    redirects: Record<string, string>;
  };
  const bySpecifier = new Map(info.modules.map((m) => [m.specifier, m]));
  const resolve = (s: string) => info.redirects[s] ?? s;
  const seen = new Set<string>();
  const packages = new Set<string>();
  const stack = info.roots.map(resolve);
  while (stack.length) {
    const s = stack.pop()!;
    if (seen.has(s)) continue;
    seen.add(s);
    const m = bySpecifier.get(s);
    if (!m) continue;
    if (m.kind === "npm" && m.npmPackage) {
      packages.add(m.npmPackage.replace(/@[^@/]+$/, ""));
      continue;
    }
    for (const d of m.dependencies ?? []) {
      if (!d.isDynamic && d.code) stack.push(resolve(d.code.specifier));
    }
  }
  return packages;
}

Deno.test("startup module graphs: heavy npm packages only where a mode needs them", async (t) => {
  const cases: { entry: string; absent: string[]; present: string[] }[] = [
    { entry: "mod.ts", absent: ["@grpc/grpc-js", "@kubernetes/client-node", "@peculiar/x509"], present: [] },
    {
      entry: "src/server.ts",
      absent: ["@kubernetes/client-node"],
      present: ["@grpc/grpc-js", "@peculiar/x509", "commander"],
    },
    {
      entry: "src/certs.ts",
      absent: ["@grpc/grpc-js", "@kubernetes/client-node"],
      present: ["@peculiar/x509"],
    },
  ];
  for (const c of cases) {
    await t.step(c.entry, async () => {
      const got = await staticNpmPackages(c.entry);
      for (const p of c.absent) assert(!got.has(p), `${c.entry} imports ${p} at startup`);
      // The walk must see the packages it is meant to see, or "absent" would prove nothing.
      for (const p of c.present) assert(got.has(p), `${c.entry}: ${p} not found in ${[...got].join(", ")}`);
    });
  }
});
