/**
 * The one interface behind every secret meshrelay keeps: tokens, CA material, server and client
 * certificates. Memory, file and Kubernetes implementations pass one contract suite
 * (`contract_test_suite.ts`).
 *
 * A secret is a named map of keys to bytes, exactly like a Kubernetes Secret's `data`; names and
 * keys are those of the seeds (`relay-server-tls-secret` → `tls.crt`, `tls.key`, `ca.crt`).
 * @module
 */

import { InvalidInputError } from "../errors.ts";

/** A stored secret and the version it was read at. */
export interface Secret {
  readonly name: string;
  readonly data: Readonly<Record<string, Uint8Array>>;
  /** Opaque; changes on every write. Pass it back as `expectedVersion` for compare-and-swap. */
  readonly version: string;
}

/** Options of {@linkcode SecretStore.put}. */
export interface PutOptions {
  /**
   * Optimistic concurrency: a version string means "only if the secret is still at this version";
   * `null` means "only if it does not exist"; absent means unconditional.
   * A mismatch rejects with `ConflictError` and changes nothing.
   */
  expectedVersion?: string | null;
}

/** Options of {@linkcode SecretStore.delete}. */
export interface DeleteOptions {
  /** Only delete if still at this version; mismatch rejects with `ConflictError`. */
  expectedVersion?: string;
}

/** Storage of named secrets with compare-and-swap. */
export interface SecretStore {
  /** The secret, or undefined when it does not exist. */
  get(name: string): Promise<Secret | undefined>;
  /** Replaces the whole secret atomically; returns it with its new version. */
  put(name: string, data: Record<string, Uint8Array>, opts?: PutOptions): Promise<Secret>;
  /** Deletes; resolves false when there was nothing to delete. */
  delete(name: string, opts?: DeleteOptions): Promise<boolean>;
  /** Names of all secrets in the store. */
  list(): Promise<string[]>;
}

/** Secret names must be valid Kubernetes object names (DNS-1123 subdomain), which also keeps file paths safe. */
export function validateSecretName(name: string): void {
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name) || name.includes("..")) {
    throw new InvalidInputError(`invalid secret name "${name}": must be a DNS-1123 subdomain`);
  }
}

/** Keys follow Kubernetes Secret key rules: `[-._a-zA-Z0-9]+`, not "." or "..". */
export function validateSecretKey(key: string): void {
  if (!/^[-._a-zA-Z0-9]{1,253}$/.test(key) || key === "." || key === "..") {
    throw new InvalidInputError(`invalid secret key "${key}"`);
  }
}
