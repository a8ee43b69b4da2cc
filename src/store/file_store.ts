import { ConflictError, UnavailableError } from "../errors.ts";
import { checkVersion } from "./memory_store.ts";
import { randomSuffix, writeAll } from "../fs_atomic.ts";
import {
  type DeleteOptions,
  type PutOptions,
  type Secret,
  type SecretStore,
  validateSecretKey,
  validateSecretName,
} from "./secret_store.ts";

/** Options of {@linkcode FileSecretStore}. */
export interface FileSecretStoreOptions {
  /** How long to wait for another writer's lock before giving up. */
  lockTimeoutMs?: number;
  /**
   * A lock not refreshed for this long was left behind by a writer that died (kill -9 mid-put); the
   * holder refreshes it every third of this while it works, so a slow writer keeps it. Default 3000.
   */
  staleLockMs?: number;
}

/**
 * A {@linkcode SecretStore} on disk, laid out exactly as `meshrelay certs init --out DIR` writes it:
 * one folder per secret, one file per key (`DIR/relay-server-tls-secret/tls.crt`). Files are 0600,
 * folders 0700.
 *
 * A put writes a complete new folder beside the old one and swaps it in with renames, so readers see
 * the old secret or the new one, never a mix; a crash between the two renames is repaired on the next
 * access. The version is a hash of the content, so folders made by hand or by other tools work too.
 */
export class FileSecretStore implements SecretStore {
  readonly root: string;
  #lockTimeoutMs: number;
  #staleLockMs: number;

  constructor(root: string, opts: FileSecretStoreOptions = {}) {
    this.root = root.replace(/\/+$/, "") || "/";
    this.#lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
    this.#staleLockMs = opts.staleLockMs ?? 3_000;
  }

  async get(name: string): Promise<Secret | undefined> {
    validateSecretName(name);
    let s = await this.#read(name);
    if (!s && await this.#hasLeftover(name)) {
      s = await this.#locked(name, async () => {
        await this.#repair(name);
        return await this.#read(name);
      });
    }
    return s;
  }

  async put(name: string, data: Record<string, Uint8Array>, opts: PutOptions = {}): Promise<Secret> {
    validateSecretName(name);
    for (const k of Object.keys(data)) validateSecretKey(k);
    await Deno.mkdir(this.root, { recursive: true, mode: 0o700 });
    return await this.#locked(name, async () => {
      await this.#repair(name);
      const cur = await this.#read(name);
      checkVersion(name, cur?.version, opts.expectedVersion);
      const tmp = `${this.root}/.${name}.tmp-${randomSuffix()}`;
      try {
        await Deno.mkdir(tmp, { mode: 0o700 });
        for (const [k, v] of Object.entries(data)) {
          const f = await Deno.open(`${tmp}/${k}`, { write: true, createNew: true, mode: 0o600 });
          try {
            await writeAll(f, v);
            await f.sync();
          } finally {
            f.close();
          }
        }
        const dst = `${this.root}/${name}`;
        if (cur) {
          const old = `${this.root}/.${name}.old-${randomSuffix()}`;
          await Deno.rename(dst, old);
          try {
            await Deno.rename(tmp, dst);
          } catch (e) {
            // Put the old secret back now rather than leave it to the next access's repair.
            await Deno.rename(old, dst).catch(() => {});
            throw e;
          }
          // The new secret is in place: the put has happened. Removing the old folder is cleanup; if it
          // fails (a read-only file in it), the next put or repair drops it, and the caller must not be
          // told the put failed when it did not.
          await Deno.remove(old, { recursive: true }).catch(() => {});
        } else {
          await Deno.rename(tmp, dst);
        }
      } catch (e) {
        await Deno.remove(tmp, { recursive: true }).catch(() => {});
        throw e;
      }
      const s = await this.#read(name);
      if (!s) throw new UnavailableError(`secret ${name} vanished right after it was written`);
      return s;
    });
  }

  async delete(name: string, opts: DeleteOptions = {}): Promise<boolean> {
    validateSecretName(name);
    try {
      await Deno.stat(this.root);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        if (opts.expectedVersion !== undefined) throw new ConflictError(`secret ${name} no longer exists`);
        return false;
      }
      throw e;
    }
    return await this.#locked(name, async () => {
      await this.#repair(name);
      const cur = await this.#read(name);
      if (!cur) {
        if (opts.expectedVersion !== undefined) throw new ConflictError(`secret ${name} no longer exists`);
        return false;
      }
      checkVersion(name, cur.version, opts.expectedVersion);
      const old = `${this.root}/.${name}.old-${randomSuffix()}`;
      await Deno.rename(`${this.root}/${name}`, old);
      await Deno.remove(old, { recursive: true });
      return true;
    });
  }

  async list(): Promise<string[]> {
    const names: string[] = [];
    try {
      for await (const e of Deno.readDir(this.root)) {
        if (e.name.startsWith(".")) continue;
        if (e.isDirectory || (e.isSymlink && (await followed(`${this.root}/${e.name}`))?.isDirectory)) {
          names.push(e.name);
        }
      }
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return [];
      throw e;
    }
    return names.sort();
  }

  async #read(name: string): Promise<Secret | undefined> {
    const dir = `${this.root}/${name}`;
    const data: Record<string, Uint8Array> = {};
    try {
      for await (const e of Deno.readDir(dir)) {
        if (
          e.name.startsWith(".") ||
          !(e.isFile || (e.isSymlink && (await followed(`${dir}/${e.name}`))?.isFile))
        ) {
          continue;
        }
        data[e.name] = await Deno.readFile(`${dir}/${e.name}`);
      }
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return undefined;
      throw e;
    }
    return { name, data, version: await contentVersion(data) };
  }

  async #hasLeftover(name: string): Promise<boolean> {
    try {
      for await (const e of Deno.readDir(this.root)) {
        if (e.name.startsWith(`.${name}.old-`)) return true;
      }
    } catch {
      return false;
    }
    return false;
  }

  /** Restores a secret whose swap was interrupted between the two renames, and drops stale temp folders. */
  async #repair(name: string): Promise<void> {
    let exists = true;
    try {
      await Deno.stat(`${this.root}/${name}`);
    } catch {
      exists = false;
    }
    const leftovers: string[] = [];
    try {
      for await (const e of Deno.readDir(this.root)) {
        if (e.name.startsWith(`.${name}.old-`) || e.name.startsWith(`.${name}.tmp-`)) leftovers.push(e.name);
      }
    } catch {
      return;
    }
    for (const l of leftovers.sort()) {
      const path = `${this.root}/${l}`;
      if (!exists && l.startsWith(`.${name}.old-`)) {
        await Deno.rename(path, `${this.root}/${name}`);
        exists = true;
      } else {
        await Deno.remove(path, { recursive: true }).catch(() => {});
      }
    }
  }

  async #locked<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const lock = `${this.root}/.${name}.lock`;
    const deadline = Date.now() + this.#lockTimeoutMs;
    while (true) {
      try {
        const f = await Deno.open(lock, { write: true, createNew: true, mode: 0o600 });
        f.close();
        break;
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
        const st = await Deno.stat(lock).catch(() => undefined);
        if (st?.mtime && Date.now() - st.mtime.getTime() > this.#staleLockMs) {
          await Deno.remove(lock).catch(() => {});
          continue;
        }
        if (Date.now() > deadline) {
          throw new UnavailableError(`secret ${name} is locked by another writer (${lock})`);
        }
        await new Promise((r) => setTimeout(r, 10 + Math.random() * 20));
      }
    }
    // Heartbeat: a live holder keeps the lock fresh, so only a dead one's goes stale. (Liveness by
    // pid would need /proc, which Deno's permission sets do not grant, and breaks across containers.)
    const beat = setInterval(() => {
      const now = new Date();
      Deno.utime(lock, now, now).catch(() => {});
    }, Math.max(50, Math.floor(this.#staleLockMs / 3)));
    try {
      return await fn();
    } finally {
      clearInterval(beat);
      await Deno.remove(lock).catch(() => {});
    }
  }
}

/**
 * A Kubernetes secret volume (the way cert-manager's rotations reach a pod) holds each key as a symlink
 * (`tls.crt -> ..data/tls.crt`, `..data -> ..2026_01_01_…`), and a projected volume may link whole
 * secret folders: both are followed. A dangling link is no key.
 */
function followed(path: string): Promise<Deno.FileInfo | undefined> {
  return Deno.stat(path).catch(() => undefined);
}

/** Hash of sorted keys and values: the file store's version. */
async function contentVersion(data: Record<string, Uint8Array>): Promise<string> {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  for (const k of Object.keys(data).sort()) {
    const v = data[k];
    parts.push(enc.encode(`${k}\0${v.length}\0`), v);
  }
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.length;
  }
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return Array.from(h.subarray(0, 12), (b) => b.toString(16).padStart(2, "0")).join("");
}
