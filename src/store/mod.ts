/**
 * Secret storage: the {@linkcode SecretStore} interface and its memory and file implementations.
 * The Kubernetes implementation lives in `src/kube`.
 * @module
 */
export type { DeleteOptions, PutOptions, Secret, SecretStore } from "./secret_store.ts";
export { validateSecretKey, validateSecretName } from "./secret_store.ts";
export { MemorySecretStore } from "./memory_store.ts";
export { FileSecretStore, type FileSecretStoreOptions } from "./file_store.ts";
