/**
 * Builds `tests/kube/apiserver/bin/meshrelay-testenv`: the real kube-apiserver and etcd (one binary, two
 * subcommands) from the Go wrapper module in `tests/kube/apiserver/`, for the Kubernetes tests.
 *
 * The build is heavy (about 2 GiB of memory and many minutes on two cores), so it runs only when the
 * inputs changed: a stamp file next to the binary holds a hash of go.mod, go.sum, main.go, the Go version
 * and the build flags, and a matching stamp means the binary is current.
 *
 * Go is taken from `GO=/path/to/go`, else `go` on PATH, else `/usr/local/go/bin/go` (Go's default
 * install location, often not on PATH). Modules come from the Go module proxy; GOMODCACHE and GOCACHE
 * keep their defaults so repeated builds are incremental.
 *
 * Usage: `deno task testenv:build [--force]`
 * Exit codes: 0 built or already current; 1 the build failed; 3 Go is not installed.
 * @module
 */

/** The wrapper module, relative to the repository root. */
export const TESTENV_MODULE_DIR = "tests/kube/apiserver";
/** The built binary, relative to the repository root (bin/ is gitignored). */
export const TESTENV_BINARY = `${TESTENV_MODULE_DIR}/bin/meshrelay-testenv`;
const STAMP = `${TESTENV_BINARY}.stamp`;
const INPUTS = ["go.mod", "go.sum", "main.go"];

/** Go is not installed: the Kubernetes tests cannot have their API server. */
export class GoMissingError extends Error {}

/** The repository root (this file lives in `scripts/`). */
export function repoRoot(): string {
  return new URL("..", import.meta.url).pathname.replace(/\/$/, "");
}

/**
 * The `k8s.io/kubernetes` version the wrapper module requires, read from its go.mod so the version stamped
 * into the binary cannot drift from the code built.
 */
export function kubernetesVersion(goMod: string): string {
  const m = goMod.match(/^\s*k8s\.io\/kubernetes\s+(v\d+\.\d+\.\d+)\s*$/m);
  if (!m) throw new Error("tests/kube/apiserver/go.mod does not require k8s.io/kubernetes vX.Y.Z");
  return m[1];
}

/**
 * `-ldflags` for a kube-apiserver that reports `version` (without them it says v0.0.0). `-s -w` drop
 * debug tables the tests never use and make the link step faster.
 */
export function ldflags(version: string): string {
  const [major, minor] = version.replace(/^v/, "").split(".");
  const pkg = "k8s.io/component-base/version";
  return [
    "-s",
    "-w",
    `-X ${pkg}.gitVersion=${version}`,
    `-X ${pkg}.gitMajor=${major}`,
    `-X ${pkg}.gitMinor=${minor}`,
    `-X ${pkg}.gitTreeState=clean`,
  ].join(" ");
}

/** Finds the go command; throws {@link GoMissingError} when there is none. */
export async function findGo(
  env: { GO?: string; PATH?: string },
  defaults: string[] = ["/usr/local/go/bin/go"],
): Promise<string> {
  const candidates = [
    ...(env.GO ? [env.GO] : []),
    ...(env.PATH ?? "").split(":").filter((d) => d).map((d) => `${d}/go`),
    ...defaults,
  ];
  for (const c of candidates) {
    try {
      const st = await Deno.stat(c);
      if (st.isFile && st.mode !== null && (st.mode & 0o111) !== 0) return c;
    } catch {
      // Not here; try the next place.
    }
  }
  throw new GoMissingError(
    "Go is not installed (looked at $GO, PATH and /usr/local/go/bin/go): cannot build the test kube-apiserver; " +
      "the Kubernetes tests will be skipped. Install Go >= 1.24 to run them.",
  );
}

async function output(cmd: string, args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout).trim();
}

/** A hash of everything that determines the binary. */
export async function inputHash(moduleDir: string, goVersion: string, flags: string): Promise<string> {
  const parts: Uint8Array[] = [];
  const enc = new TextEncoder();
  for (const f of INPUTS) {
    parts.push(enc.encode(`${f}\0`), await Deno.readFile(`${moduleDir}/${f}`), enc.encode("\0"));
  }
  parts.push(enc.encode(`${goVersion}\0${flags}`));
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

async function main(): Promise<number> {
  const force = Deno.args.includes("--force");
  const root = repoRoot();
  const moduleDir = `${root}/${TESTENV_MODULE_DIR}`;
  const binary = `${root}/${TESTENV_BINARY}`;
  const stampPath = `${root}/${STAMP}`;

  let go: string;
  try {
    go = await findGo({ GO: Deno.env.get("GO"), PATH: Deno.env.get("PATH") });
  } catch (e) {
    if (e instanceof GoMissingError) {
      console.error(`testenv: ${e.message}`);
      return 3;
    }
    throw e;
  }
  const goVersion = await output(go, ["env", "GOVERSION"], moduleDir);
  const version = kubernetesVersion(await Deno.readTextFile(`${moduleDir}/go.mod`));
  const flags = ldflags(version);
  const hash = await inputHash(moduleDir, goVersion, flags);

  const binaryExists = await Deno.stat(binary).then(() => true, () => false);
  if (!force && binaryExists && (await readText(stampPath))?.trim() === hash) {
    console.log(
      `testenv: ${TESTENV_BINARY} is current (kube-apiserver ${version}, ${goVersion}); nothing to do`,
    );
    return 0;
  }

  await Deno.mkdir(`${moduleDir}/bin`, { recursive: true });
  const tmp = `${binary}.tmp-${Deno.pid}`;
  // -p 2: the machines this runs on have two cores; more parallel compiles only add memory pressure.
  // -mod=readonly: go.mod/go.sum are committed and must already be complete; a build never edits them.
  // -buildvcs=false: the module sits inside meshrelay's git tree, whose state must not change the binary.
  const args = [
    "build",
    "-p",
    "2",
    "-mod=readonly",
    "-buildvcs=false",
    "-trimpath",
    "-ldflags",
    flags,
    "-o",
    tmp,
    ".",
  ];
  console.log(`testenv: building kube-apiserver ${version} + etcd with ${goVersion} (cold: many minutes)`);
  console.log(`testenv: (cd ${TESTENV_MODULE_DIR} && CGO_ENABLED=0 ${go} ${args.join(" ")})`);
  const started = performance.now();
  const status = await new Deno.Command(go, {
    args,
    cwd: moduleDir,
    env: { CGO_ENABLED: "0", GOTOOLCHAIN: "local", GOFLAGS: "" },
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  const seconds = ((performance.now() - started) / 1000).toFixed(0);
  if (!status.success) {
    await Deno.remove(tmp).catch(() => {});
    console.error(`testenv: go build failed after ${seconds}s (exit ${status.code}); see the output above`);
    return 1;
  }
  await Deno.rename(tmp, binary);
  await Deno.writeTextFile(`${stampPath}.tmp`, `${hash}\n`);
  await Deno.rename(`${stampPath}.tmp`, stampPath);
  console.log(`testenv: built ${TESTENV_BINARY} in ${seconds}s`);
  console.log(`testenv: ${await output(binary, ["version"], moduleDir)}`.replaceAll("\n", ", "));
  return 0;
}

if (import.meta.main) Deno.exit(await main());
