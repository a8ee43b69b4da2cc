import { ConflictError } from "../errors.ts";
import {
  type DeleteOptions,
  type PutOptions,
  type Secret,
  type SecretStore,
  validateSecretKey,
  validateSecretName,
} from "./secret_store.ts";

/** A {@linkcode SecretStore} in memory: demos, tests, and `--store memory`. */
export class MemorySecretStore implements SecretStore {
  #secrets = new Map<string, Secret>();
  #counter = 0;

  // deno-lint-ignore require-await
  async get(name: string): Promise<Secret | undefined> {
    validateSecretName(name);
    const s = this.#secrets.get(name);
    return s && copy(s);
  }

  // deno-lint-ignore require-await
  async put(name: string, data: Record<string, Uint8Array>, opts: PutOptions = {}): Promise<Secret> {
    validateSecretName(name);
    for (const k of Object.keys(data)) validateSecretKey(k);
    const cur = this.#secrets.get(name);
    checkVersion(name, cur?.version, opts.expectedVersion);
    const s: Secret = { name, data: cloneData(data), version: String(++this.#counter) };
    this.#secrets.set(name, s);
    return copy(s);
  }

  // deno-lint-ignore require-await
  async delete(name: string, opts: DeleteOptions = {}): Promise<boolean> {
    validateSecretName(name);
    const cur = this.#secrets.get(name);
    if (!cur) {
      if (opts.expectedVersion !== undefined) {
        throw new ConflictError(`secret ${name} no longer exists`);
      }
      return false;
    }
    checkVersion(name, cur.version, opts.expectedVersion);
    this.#secrets.delete(name);
    return true;
  }

  // deno-lint-ignore require-await
  async list(): Promise<string[]> {
    return [...this.#secrets.keys()].sort();
  }
}

/** Shared compare-and-swap rule of every store. */
export function checkVersion(
  name: string,
  current: string | undefined,
  expected: string | null | undefined,
): void {
  if (expected === undefined) return;
  if (expected === null) {
    if (current !== undefined) throw new ConflictError(`secret ${name} already exists`);
    return;
  }
  if (current !== expected) {
    throw new ConflictError(
      current === undefined
        ? `secret ${name} no longer exists`
        : `secret ${name} was changed by someone else`,
    );
  }
}

function cloneData(data: Record<string, Uint8Array>): Record<string, Uint8Array> {
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, new Uint8Array(v)]));
}

function copy(s: Secret): Secret {
  return { name: s.name, version: s.version, data: cloneData(s.data as Record<string, Uint8Array>) };
}
