/**
 * Compiles the one executable `dist/meshrelay` with `deno compile`.
 *
 * The binary runs with meshrelay's V8 flags (scripts/v8_flags.ts: a bounded young generation) and is granted the union of the `server`, `agent` and `certs` permission sets of `deno.json`
 * (one executable serves all modes); each mode narrows at startup (src/permissions.ts). `--no-prompt`
 * is always set so a revoked permission fails instead of prompting on a terminal.
 *
 * `deno compile` needs `denort`, which is not on npm or in Debian. It is taken from, in this order:
 * `DENORT_BIN=/path/to/denort`, a pre-seeded `$DENO_DIR/dl/release/v<ver>/denort-<target>.zip`, or the
 * network (dl.deno.land, what plain `deno compile` does). A `DENORT_BIN` that is really the full `deno`
 * binary is refused: `deno compile` would silently produce a plain `deno`, not meshrelay.
 *
 * Usage: `deno task compile [--output dist/meshrelay] [--no-download] [--no-check]`
 * Exit codes: 0 compiled and verified; 1 compile or verification failed; 3 denort cannot be had.
 * @module
 */
import { v8FlagsArg } from "./v8_flags.ts";

/** One permission set as written in `deno.json` `permissions`. */
export interface PermissionSet {
  read?: boolean | string[];
  write?: boolean | string[];
  env?: boolean | string[];
  net?: boolean | string[];
  run?: boolean | string[];
  sys?: boolean | string[];
  ffi?: boolean | string[];
  import?: boolean | string[];
}

const FLAG_BY_NAME: Record<keyof PermissionSet, string> = {
  read: "--allow-read",
  write: "--allow-write",
  env: "--allow-env",
  net: "--allow-net",
  run: "--allow-run",
  sys: "--allow-sys",
  ffi: "--allow-ffi",
  import: "--allow-import",
};

/**
 * `--allow-*` flags granting the union of `sets`. A category granted wholesale by any set is granted
 * wholesale; lists are merged and sorted so the output is stable.
 */
export function unionPermissionFlags(sets: Record<string, PermissionSet>): string[] {
  const flags: string[] = [];
  for (const name of Object.keys(FLAG_BY_NAME) as (keyof PermissionSet)[]) {
    let all = false;
    const items = new Set<string>();
    for (const set of Object.values(sets)) {
      const v = set[name];
      if (v === true) all = true;
      else if (Array.isArray(v)) v.forEach((i) => items.add(i));
    }
    if (all) flags.push(FLAG_BY_NAME[name]);
    else if (items.size > 0) flags.push(`${FLAG_BY_NAME[name]}=${[...items].sort().join(",")}`);
  }
  return flags;
}

/** The target triple `deno compile` uses for a `Deno.build.os`/`Deno.build.arch` pair. */
export function targetTriple(os: string, arch: string): string {
  const triples: Record<string, string> = {
    "linux/x86_64": "x86_64-unknown-linux-gnu",
    "linux/aarch64": "aarch64-unknown-linux-gnu",
    "darwin/x86_64": "x86_64-apple-darwin",
    "darwin/aarch64": "aarch64-apple-darwin",
    "windows/x86_64": "x86_64-pc-windows-msvc",
    "windows/aarch64": "aarch64-pc-windows-msvc",
  };
  const t = triples[`${os}/${arch}`];
  if (!t) throw new CompileSetupError(`deno compile has no target for ${os}/${arch}`);
  return t;
}

/** Where `deno compile` looks for (and caches) the denort archive. */
export function denortCachePath(denoDir: string, version: string, target: string): string {
  return `${denoDir.replace(/\/+$/, "")}/dl/release/v${version}/denort-${target}.zip`;
}

/** Where plain `deno compile` downloads denort from. */
export function denortUrl(version: string, target: string): string {
  return `https://dl.deno.land/release/v${version}/denort-${target}.zip`;
}

/**
 * True when `versionOutput` (stdout of `<bin> --version`) is what the full `deno` CLI prints.
 * denort has no CLI: it never answers `--version` with the `deno X.Y.Z (…)` banner.
 */
export function isFullDenoVersionOutput(versionOutput: string): boolean {
  return /^deno \d+\.\d+\.\d+\b/m.test(versionOutput);
}

/** The message printed when denort cannot be had: the three ways to provide it, nothing else. */
export function missingDenortMessage(version: string, target: string, cachePath: string): string {
  return [
    `cannot compile: denort ${version} for ${target} is not available (no DENORT_BIN, no cached archive, no network).`,
    "Provide it in one of three ways:",
    `  1. network: allow HTTPS to ${denortUrl(version, target)} and rerun \`deno task compile\``,
    `  2. DENORT_BIN=/path/to/denort deno task compile   (the denort binary of Deno ${version}, not the full deno)`,
    `  3. copy denort-${target}.zip of Deno ${version} to ${cachePath}`,
  ].join("\n");
}

/** Setup problems: the message is the whole story, printed as is. */
export class CompileSetupError extends Error {
  /** Exit code for the script. */
  readonly exitCode: number;
  constructor(message: string, exitCode = 3) {
    super(message);
    this.name = "CompileSetupError";
    this.exitCode = exitCode;
  }
}

/** Where denort will come from. */
export type DenortSource =
  | { kind: "bin"; path: string }
  | { kind: "cache"; path: string }
  | { kind: "network"; url: string };

/** What {@link resolveDenort} needs from the outside world. */
export interface ResolveDeps {
  /** Value of `DENORT_BIN`, if set. */
  denortBin?: string;
  denoDir: string;
  version: string;
  target: string;
  /** May the network be used at all (`--no-download` says no)? */
  allowDownload: boolean;
  exists(path: string): Promise<boolean>;
  /** Same file as the running deno (compares real paths)? */
  isRunningDeno(path: string): Promise<boolean>;
  /** stdout of `<path> --version`, or "" if it fails. */
  versionOutput(path: string): Promise<string>;
  /** Can `url` be fetched? */
  reachable(url: string): Promise<boolean>;
}

/** Decides where denort comes from, or throws a {@link CompileSetupError} saying how to provide it. */
export async function resolveDenort(d: ResolveDeps): Promise<DenortSource> {
  const cachePath = denortCachePath(d.denoDir, d.version, d.target);
  if (d.denortBin !== undefined && d.denortBin !== "") {
    if (!(await d.exists(d.denortBin))) {
      throw new CompileSetupError(`DENORT_BIN=${d.denortBin} does not exist`);
    }
    if (await d.isRunningDeno(d.denortBin) || isFullDenoVersionOutput(await d.versionOutput(d.denortBin))) {
      throw new CompileSetupError(
        `DENORT_BIN=${d.denortBin} is the full deno CLI, not denort: deno compile would produce a plain ` +
          `deno instead of meshrelay. Point DENORT_BIN at the denort binary (from denort-${d.target}.zip).`,
      );
    }
    return { kind: "bin", path: d.denortBin };
  }
  if (await d.exists(cachePath)) return { kind: "cache", path: cachePath };
  const url = denortUrl(d.version, d.target);
  if (d.allowDownload && await d.reachable(url)) return { kind: "network", url };
  throw new CompileSetupError(missingDenortMessage(d.version, d.target, cachePath));
}

/** Real-world {@link ResolveDeps} for this process. */
export async function realResolveDeps(allowDownload: boolean): Promise<ResolveDeps> {
  const version = Deno.version.deno;
  return {
    denortBin: Deno.env.get("DENORT_BIN"),
    denoDir: Deno.env.get("DENO_DIR") || await denoDirFromDeno(),
    version,
    target: targetTriple(Deno.build.os, Deno.build.arch),
    allowDownload,
    exists: async (p) => {
      try {
        await Deno.stat(p);
        return true;
      } catch {
        return false;
      }
    },
    isRunningDeno: async (p) => (await Deno.realPath(p)) === (await Deno.realPath(Deno.execPath())),
    versionOutput: async (p) => {
      try {
        const out = await new Deno.Command(p, {
          args: ["--version"],
          stdin: "null",
          stdout: "piped",
          stderr: "null",
          signal: AbortSignal.timeout(10_000),
        }).output();
        return new TextDecoder().decode(out.stdout);
      } catch {
        return "";
      }
    },
    reachable: async (url) => {
      try {
        const res = await fetch(url, { method: "HEAD", signal: AbortSignal.timeout(5_000) });
        await res.body?.cancel();
        return res.ok;
      } catch {
        return false;
      }
    },
  };
}

async function denoDirFromDeno(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "null",
  })
    .output();
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { denoDir?: string };
  if (!info.denoDir) throw new CompileSetupError("cannot find DENO_DIR (deno info --json has no denoDir)", 1);
  return info.denoDir;
}

/** Parsed command line of the script. */
export interface CompileArgs {
  output: string;
  allowDownload: boolean;
  /** Skip deno compile's type check (CI already ran `deno check`). */
  noCheck: boolean;
}

/** Parses the script's flags; unknown flags are an error so typos do not silently compile. */
export function parseArgs(args: string[]): CompileArgs {
  const out: CompileArgs = { output: "dist/meshrelay", allowDownload: true, noCheck: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--no-download") out.allowDownload = false;
    else if (a === "--no-check") out.noCheck = true;
    else if (a === "--output" || a === "-o") {
      const v = args[++i];
      if (!v) throw new CompileSetupError("--output needs a path", 2);
      out.output = v;
    } else if (a.startsWith("--output=")) out.output = a.slice("--output=".length);
    else {throw new CompileSetupError(
        `unknown flag ${a} (expected --output PATH, --no-download, --no-check)`,
        2,
      );}
  }
  return out;
}

/**
 * Non-module files a mode reads at run time that `deno compile` cannot see through imports: `.proto`
 * sources under `dir` (in case gRPC loads them with proto-loader instead of generated code). Sorted.
 */
export async function runtimeDataFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string): Promise<void> {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(d));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw e;
    }
    for (const e of entries) {
      if (e.isDirectory) await walk(`${d}/${e.name}`);
      else if (e.isFile && e.name.endsWith(".proto")) out.push(`${d}/${e.name}`);
    }
  }
  await walk(dir.replace(/\/+$/, ""));
  return out.sort();
}

async function compile(args: CompileArgs): Promise<void> {
  const repo = new URL("..", import.meta.url).pathname;
  const config = JSON.parse(await Deno.readTextFile(`${repo}deno.json`)) as {
    permissions: Record<string, PermissionSet>;
  };
  const sets = Object.fromEntries(
    ["server", "agent", "certs"].map((m) => {
      const s = config.permissions?.[m];
      if (!s) throw new CompileSetupError(`deno.json has no permission set "${m}"`, 1);
      return [m, s];
    }),
  );
  const deps = await realResolveDeps(args.allowDownload);
  const source = await resolveDenort(deps);
  console.error(
    `denort ${deps.version} (${deps.target}) from ${source.kind}: ${
      "path" in source ? source.path : source.url
    }`,
  );

  const output = args.output.startsWith("/") ? args.output : `${Deno.cwd()}/${args.output}`;
  const dir = output.slice(0, output.lastIndexOf("/")) || "/";
  await Deno.mkdir(dir, { recursive: true });
  // Compile to a temporary name and rename only after the result proved to be meshrelay.
  const tmp = `${output}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  // deno compile treats even an empty DENORT_BIN as a path, so the child gets it only when it is the source.
  const env = Deno.env.toObject();
  delete env.DENORT_BIN;
  env.DENO_DIR = deps.denoDir;
  if (source.kind === "bin") env.DENORT_BIN = source.path;
  try {
    const flags = ["--no-prompt", ...unionPermissionFlags(sets)];
    const includes = (await runtimeDataFiles(`${repo}src/proto`)).flatMap((f) => ["--include", f]);
    const res = await new Deno.Command(Deno.execPath(), {
      args: [
        "compile",
        ...(args.noCheck ? ["--no-check"] : []),
        ...flags,
        v8FlagsArg(),
        ...includes,
        "--config",
        `${repo}deno.json`,
        "--output",
        tmp,
        `${repo}mod.ts`,
      ],
      env,
      clearEnv: true,
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (!res.success) throw new CompileSetupError(`deno compile failed (exit ${res.code})`, 1);
    const check = await new Deno.Command(tmp, { args: ["version"], stdout: "piped", stderr: "piped" })
      .output();
    const printed = new TextDecoder().decode(check.stdout);
    if (!check.success || !printed.startsWith("meshrelay ")) {
      throw new CompileSetupError(
        isFullDenoVersionOutput(printed)
          ? `the compiled file is a plain deno, not meshrelay: the denort used (${source.kind}) is really the full deno`
          : `the compiled file does not answer "version" as meshrelay (exit ${check.code})`,
        1,
      );
    }
    await Deno.rename(tmp, output);
    console.error(`compiled ${args.output}: ${printed.trim()}; permissions ${flags.join(" ")}`);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

if (import.meta.main) {
  try {
    await compile(parseArgs(Deno.args));
  } catch (err) {
    if (err instanceof CompileSetupError) {
      console.error(err.message);
      Deno.exit(err.exitCode);
    }
    throw err;
  }
}
