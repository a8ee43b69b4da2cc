/**
 * Writing what a `certs` command produced: secret folders under `--out DIR` (through
 * {@linkcode FileSecretStore}, so the server and agent read them with the same code) or one manifest file.
 *
 * All or nothing: material is generated first and written only at the end. Into a DIR that does not exist
 * yet, everything is written to a staging folder beside it that is renamed into place in one step. Into an
 * existing DIR (adding a client certificate to what `init` left), each secret is swapped in atomically by
 * the store and every swap is undone if a later one fails. Existing material is never replaced without
 * `force`, and {@linkcode preflightDir} refuses before any slow key generation starts.
 * @module
 */
import { AlreadyExistsError, InvalidInputError, MeshrelayError, UnavailableError } from "../errors.ts";
import { FileSecretStore, type Secret } from "../store/mod.ts";
import { randomSuffix, replaceFileAtomic } from "../fs_atomic.ts";
import type { SecretManifest } from "./manifest.ts";

/** A secret to write, and the folder (relative to `--out`) whose store holds it. */
export interface PlannedSecret extends SecretManifest {
  /** Store folder relative to `--out`; "" (default) is `--out` itself. */
  readonly storeDir?: string;
}

/** A plain file to write (a CA key kept outside the secrets), relative to `--out`. */
export interface PlannedFile {
  readonly path: string;
  readonly data: Uint8Array;
  /** Default 0600. */
  readonly mode?: number;
}

/** Everything one command writes into `--out`. */
export interface OutputPlan {
  readonly secrets: readonly PlannedSecret[];
  readonly files?: readonly PlannedFile[];
}

/** Names of what a plan will write, known before the material exists (for {@linkcode preflightDir}). */
export interface PlanTargets {
  readonly secrets: readonly { storeDir?: string; name: string }[];
  readonly files?: readonly string[];
}

const join = (...parts: string[]) => parts.filter((p) => p !== "").join("/").replace(/\/+/g, "/");

function dirname(path: string): string {
  const t = path.replace(/\/+$/, "");
  const i = t.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : t.slice(0, i);
}

function basename(path: string): string {
  const t = path.replace(/\/+$/, "");
  return t.slice(t.lastIndexOf("/") + 1);
}

async function statOrUndefined(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    if (e instanceof Deno.errors.NotADirectory) {
      throw new InvalidInputError(`${path}: a parent is not a directory`);
    }
    throw e;
  }
}

/** Why a path cannot be written, in words (no stack, no OS noise). */
function reasonOf(e: unknown): string {
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.NotADirectory) return "a parent is not a directory";
  if (e instanceof Deno.errors.NotCapable) return "not permitted";
  if (e instanceof Error && /read-only/i.test(e.message)) return "read-only file system";
  return e instanceof Error ? e.name : String(e);
}

/** The nearest existing ancestor of `path` (or `path` itself). */
async function existingAncestor(path: string, what: string): Promise<{ path: string; info: Deno.FileInfo }> {
  let p = path.replace(/\/+$/, "") || "/";
  while (true) {
    let info: Deno.FileInfo | undefined;
    try {
      info = await Deno.stat(p);
    } catch (e) {
      if (e instanceof Deno.errors.NotADirectory) {
        throw new InvalidInputError(`${what} ${path}: a parent is not a directory`);
      }
      if (!(e instanceof Deno.errors.NotFound)) {
        throw new InvalidInputError(`${what} ${path}: cannot be written (${reasonOf(e)})`);
      }
    }
    if (info) return { path: p, info };
    const up = dirname(p);
    if (up === p) throw new InvalidInputError(`${what} ${path}: no existing parent directory`);
    p = up;
  }
}

/** Proves a directory accepts new files by creating and removing one. */
async function probeWritable(dir: string, what: string, target: string): Promise<void> {
  const probe = `${dir}/.meshrelay-probe-${randomSuffix()}`;
  try {
    const f = await Deno.open(probe, { write: true, createNew: true, mode: 0o600 });
    f.close();
    await Deno.remove(probe);
  } catch (e) {
    throw new InvalidInputError(`${what} ${target}: cannot write in ${dir} (${reasonOf(e)})`);
  }
}

/**
 * Checks, before any material is generated, that `out` is (or can become) a writable directory and that
 * none of `targets` exists unless `force`. Throws InvalidInputError (unwritable, not a directory) or
 * AlreadyExistsError (existing material without `force`).
 */
export async function preflightDir(
  out: string,
  targets: PlanTargets,
  force: boolean,
  what = "--out",
): Promise<void> {
  const anc = await existingAncestor(out, what);
  if (!anc.info.isDirectory) {
    throw new InvalidInputError(
      anc.path === out.replace(/\/+$/, "")
        ? `${what} ${out} is not a directory`
        : `${what} ${out}: ${anc.path} is not a directory`,
    );
  }
  await probeWritable(anc.path, what, out);
  if (anc.path !== out.replace(/\/+$/, "") || force) return;
  const existing: string[] = [];
  for (const s of targets.secrets) {
    const p = join(out, s.storeDir ?? "", s.name);
    if (await statOrUndefined(p)) existing.push(p);
  }
  for (const f of targets.files ?? []) {
    const p = join(out, f);
    if (await statOrUndefined(p)) existing.push(p);
  }
  if (existing.length > 0) {
    throw new AlreadyExistsError(
      `${existing.join(", ")} already exist${existing.length === 1 ? "s" : ""} (use --force to replace)`,
    );
  }
}

/** Options of {@linkcode writeFileAtomic}. */
export interface WriteFileOptions {
  /** Default 0600. */
  mode?: number;
  /** Replace an existing file; without it an existing file is refused with AlreadyExistsError. */
  overwrite?: boolean;
}

/** Writes `data` to a temp file beside `path`, syncs it, and renames it over `path`. */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array,
  opts: WriteFileOptions = {},
): Promise<void> {
  if (!opts.overwrite && await statOrUndefined(path)) {
    throw new AlreadyExistsError(`${path} already exists (use --force to replace)`);
  }
  await replaceFileAtomic(path, data, { mode: opts.mode });
}

/**
 * {@linkcode writeFileAtomic}, returning how to take it back: the previous content (and mode) restored when
 * `path` existed (`overwrite`), the file removed when it did not. For a file written before the rest of a
 * command's output (a root key kept with `--root-key-out`), so a later failure leaves nothing changed.
 */
export async function writeFileUndoable(
  path: string,
  data: Uint8Array,
  opts: WriteFileOptions = {},
): Promise<() => Promise<void>> {
  let prev: { data: Uint8Array; mode: number } | undefined;
  if (opts.overwrite) {
    try {
      const info = await Deno.stat(path);
      prev = { data: await Deno.readFile(path), mode: (info.mode ?? 0o600) & 0o777 };
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  await writeFileAtomic(path, data, opts);
  return prev
    ? () => replaceFileAtomic(path, prev.data, { mode: prev.mode })
    : () =>
      Deno.remove(path).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      });
}

/**
 * Writes a whole plan under `out`, all or nothing (see the module doc). Returns the paths written
 * (secret folders and files), for the command's summary.
 */
export async function writePlanToDir(
  out: string,
  plan: OutputPlan,
  opts: { force: boolean },
): Promise<string[]> {
  const target = out.replace(/\/+$/, "") || "/";
  const written = [
    ...plan.secrets.map((s) => join(target, s.storeDir ?? "", s.name)),
    ...(plan.files ?? []).map((f) => join(target, f.path)),
  ];
  const info = await statOrUndefined(target);
  try {
    if (!info) await writeStaged(target, plan);
    else if (!info.isDirectory) throw new InvalidInputError(`--out ${out} is not a directory`);
    else await writeIntoExisting(target, plan, opts.force);
  } catch (e) {
    if (e instanceof MeshrelayError) throw e;
    const msg = `--out ${out}: writing failed (${reasonOf(e)}); nothing was changed`;
    const denied = e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotADirectory;
    throw denied ? new InvalidInputError(msg, { cause: e }) : new UnavailableError(msg, { cause: e });
  }
  return written;
}

async function writeStaged(target: string, plan: OutputPlan): Promise<void> {
  const parent = dirname(target);
  const createdParent = await createdDirs(parent);
  const staging = `${parent}/.${basename(target)}.staging-${randomSuffix()}`;
  try {
    await Deno.mkdir(staging, { mode: 0o700 });
    for (const s of plan.secrets) {
      await new FileSecretStore(join(staging, s.storeDir ?? "")).put(s.name, { ...s.data }, {
        expectedVersion: null,
      });
    }
    for (const f of plan.files ?? []) {
      const p = join(staging, f.path);
      await Deno.mkdir(dirname(p), { recursive: true, mode: 0o700 });
      await writeFileAtomic(p, f.data, { mode: f.mode });
    }
    // rename(2) onto an existing empty directory would succeed silently; another writer won the race then.
    if (await statOrUndefined(target)) {
      throw new AlreadyExistsError(`${target} appeared while writing; not replaced`);
    }
    await Deno.rename(staging, target);
  } catch (e) {
    await Deno.remove(createdParent ?? staging, { recursive: true }).catch(() => {});
    throw e;
  }
}

async function writeIntoExisting(target: string, plan: OutputPlan, force: boolean): Promise<void> {
  const undo: (() => Promise<unknown>)[] = [];
  try {
    for (const s of plan.secrets) {
      const storeRoot = join(target, s.storeDir ?? "");
      const created = await createdDirs(storeRoot);
      if (created) undo.push(() => Deno.remove(created, { recursive: true }));
      const store = new FileSecretStore(storeRoot);
      const prev: Secret | undefined = await store.get(s.name);
      if (prev && !force) {
        throw new AlreadyExistsError(`${join(storeRoot, s.name)} already exists (use --force to replace)`);
      }
      await store.put(s.name, { ...s.data }, { expectedVersion: prev?.version ?? null });
      undo.push(prev ? () => store.put(s.name, { ...prev.data }) : () => store.delete(s.name));
    }
    for (const f of plan.files ?? []) {
      const p = join(target, f.path);
      const created = await createdDirs(dirname(p));
      if (created) undo.push(() => Deno.remove(created, { recursive: true }));
      const prev = await Deno.readFile(p).catch((e) => {
        if (e instanceof Deno.errors.NotFound) return undefined;
        throw e;
      });
      if (prev && !force) throw new AlreadyExistsError(`${p} already exists (use --force to replace)`);
      await writeFileAtomic(p, f.data, { mode: f.mode, overwrite: true });
      undo.push(prev ? () => writeFileAtomic(p, prev, { overwrite: true }) : () => Deno.remove(p));
    }
  } catch (e) {
    for (const u of undo.reverse()) await u().catch(() => {});
    throw e;
  }
}

/** Creates `dir` (0700) if missing; returns the topmost folder it created, to remove on rollback. */
async function createdDirs(dir: string): Promise<string | undefined> {
  let top: string | undefined;
  let p = dir;
  while (!(await statOrUndefined(p))) {
    top = p;
    const up = dirname(p);
    if (up === p) break;
    p = up;
  }
  if (top) await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  return top;
}

/**
 * Checks, before any material is generated, that a single output file (`--out` of `--format yaml|json`,
 * `--root-key-out`) can be created: its folder exists and is writable, and it does not exist unless `force`.
 */
export async function preflightFile(path: string, force: boolean, what: string): Promise<void> {
  const info = await statOrUndefined(path).catch(() => {
    throw new InvalidInputError(`${what} ${path}: a parent is not a directory`);
  });
  if (info?.isDirectory) throw new InvalidInputError(`${what} ${path} is a directory, expected a file path`);
  if (info && !force) throw new AlreadyExistsError(`${path} already exists (use --force to replace)`);
  const dir = dirname(path);
  const d = await statOrUndefined(dir).catch(() => undefined);
  if (!d?.isDirectory) throw new InvalidInputError(`${what} ${path}: ${dir} is not an existing directory`);
  await probeWritable(dir, what, path);
}
