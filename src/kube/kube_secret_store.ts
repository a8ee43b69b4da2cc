/**
 * {@linkcode SecretStore} on Kubernetes Secrets in one namespace: the relay secrets as users see them
 * with kubectl (`relay-root-tls-secret` → `ca.crt`, …), versioned by `metadata.resourceVersion`.
 * @module
 */
import { Buffer } from "node:buffer";
import type { V1Secret } from "@kubernetes/client-node";
import { ConflictError, NotFoundError } from "../errors.ts";
import {
  type DeleteOptions,
  type PutOptions,
  type Secret,
  type SecretStore,
  validateSecretKey,
  validateSecretName,
} from "../store/mod.ts";
import { kubeError, type KubeRequest } from "./api_error.ts";
import type { KubeClient } from "./client.ts";

/** Options of {@linkcode KubeSecretStore}. */
export interface KubeSecretStoreOptions {
  readonly client: KubeClient;
  /** Namespace holding the secrets, e.g. `gloo-mesh`. It must exist. */
  readonly namespace: string;
  /** Labels put on secrets this store creates (existing secrets keep theirs). */
  readonly labels?: Readonly<Record<string, string>>;
  /** Recorded in managedFields; default `meshrelay`. */
  readonly fieldManager?: string;
}

/** Unconditional puts retry a lost race this many times before reporting the conflict. */
const UNCONDITIONAL_ATTEMPTS = 5;
/** Page size of list: bounds memory in namespaces with many secrets. */
const LIST_PAGE = 500;

/**
 * Secrets in one namespace. A put replaces the secret's `data` as a whole and keeps what other tools set
 * on it (type, labels, annotations, owner references); new secrets are `Opaque`.
 */
export class KubeSecretStore implements SecretStore {
  readonly #client: KubeClient;
  readonly #namespace: string;
  readonly #labels: Record<string, string>;
  readonly #fieldManager: string;

  constructor(opts: KubeSecretStoreOptions) {
    this.#client = opts.client;
    this.#namespace = opts.namespace;
    this.#labels = { ...opts.labels };
    this.#fieldManager = opts.fieldManager ?? "meshrelay";
  }

  /** The namespace this store reads and writes. */
  get namespace(): string {
    return this.#namespace;
  }

  async get(name: string): Promise<Secret | undefined> {
    validateSecretName(name);
    const s = await this.#read(name);
    return s && toSecret(name, s);
  }

  async put(name: string, data: Record<string, Uint8Array>, opts: PutOptions = {}): Promise<Secret> {
    validateSecretName(name);
    for (const k of Object.keys(data)) validateSecretKey(k);
    const encoded = encode(data);
    const expected = opts.expectedVersion;

    if (expected === null) {
      try {
        return toSecret(name, await this.#create(name, encoded));
      } catch (e) {
        if (e instanceof ConflictError) {
          throw new ConflictError(`secret ${name} already exists`, { cause: e });
        }
        throw e;
      }
    }
    if (expected !== undefined) {
      const cur = await this.#read(name);
      if (!cur) throw new ConflictError(`secret ${name} no longer exists`);
      if (cur.metadata?.resourceVersion !== expected) {
        throw new ConflictError(`secret ${name} was changed by someone else`);
      }
      // The server compares resourceVersion again, so a write between our read and this replace conflicts.
      return toSecret(name, await this.#replace(name, cur, encoded, expected));
    }
    for (let attempt = 1;; attempt++) {
      try {
        const cur = await this.#read(name);
        const written = cur
          ? await this.#replace(name, cur, encoded, cur.metadata?.resourceVersion)
          : await this.#create(name, encoded);
        return toSecret(name, written);
      } catch (e) {
        if (!(e instanceof ConflictError) || attempt >= UNCONDITIONAL_ATTEMPTS) throw e;
      }
    }
  }

  async delete(name: string, opts: DeleteOptions = {}): Promise<boolean> {
    validateSecretName(name);
    const req: KubeRequest = { verb: "delete", resource: "secrets", namespace: this.#namespace, name };
    try {
      await this.#client.core.deleteNamespacedSecret({
        name,
        namespace: this.#namespace,
        body: opts.expectedVersion !== undefined
          ? { preconditions: { resourceVersion: opts.expectedVersion } }
          : {},
      });
      return true;
    } catch (e) {
      const err = kubeError(e, req);
      if (err instanceof NotFoundError) {
        if (opts.expectedVersion !== undefined) {
          throw new ConflictError(`secret ${name} no longer exists`, { cause: err });
        }
        return false;
      }
      if (err instanceof ConflictError) {
        throw new ConflictError(`secret ${name} was changed by someone else`, { cause: err });
      }
      throw err;
    }
  }

  async list(): Promise<string[]> {
    const names: string[] = [];
    let cont: string | undefined;
    do {
      try {
        const page = await this.#client.core.listNamespacedSecret({
          namespace: this.#namespace,
          limit: LIST_PAGE,
          _continue: cont,
        });
        for (const s of page.items) if (s.metadata?.name) names.push(s.metadata.name);
        cont = page.metadata?._continue || undefined;
      } catch (e) {
        throw kubeError(e, { verb: "list", resource: "secrets", namespace: this.#namespace });
      }
    } while (cont);
    return names.sort();
  }

  async #read(name: string): Promise<V1Secret | undefined> {
    try {
      return await this.#client.core.readNamespacedSecret({ name, namespace: this.#namespace });
    } catch (e) {
      const err = kubeError(e, { verb: "get", resource: "secrets", namespace: this.#namespace, name });
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }

  async #create(name: string, data: Record<string, string>): Promise<V1Secret> {
    const body: V1Secret = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name,
        namespace: this.#namespace,
        ...(Object.keys(this.#labels).length > 0 ? { labels: { ...this.#labels } } : {}),
      },
      type: "Opaque",
      data,
    };
    try {
      return await this.#client.core.createNamespacedSecret({
        namespace: this.#namespace,
        body,
        fieldManager: this.#fieldManager,
      });
    } catch (e) {
      // AlreadyExists is the create-only form of "someone else wrote first".
      const err = kubeError(e, { verb: "create", resource: "secrets", namespace: this.#namespace, name });
      if (err.code === "already_exists") throw new ConflictError(err.message, { cause: err });
      throw err;
    }
  }

  async #replace(
    name: string,
    cur: V1Secret,
    data: Record<string, string>,
    resourceVersion: string | undefined,
  ): Promise<V1Secret> {
    const body: V1Secret = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { ...cur.metadata, resourceVersion, managedFields: undefined },
      type: cur.type,
      immutable: cur.immutable,
      data,
    };
    try {
      return await this.#client.core.replaceNamespacedSecret({
        name,
        namespace: this.#namespace,
        body,
        fieldManager: this.#fieldManager,
      });
    } catch (e) {
      const err = kubeError(e, { verb: "update", resource: "secrets", namespace: this.#namespace, name });
      // Deleted between our read and the replace: the version we held is gone, which is a conflict.
      if (err instanceof NotFoundError) {
        throw new ConflictError(`secret ${name} no longer exists`, { cause: err });
      }
      throw err;
    }
  }
}

function encode(data: Record<string, Uint8Array>): Record<string, string> {
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")]));
}

function toSecret(name: string, s: V1Secret): Secret {
  const data: Record<string, Uint8Array> = {};
  for (const [k, v] of Object.entries(s.data ?? {})) data[k] = new Uint8Array(Buffer.from(v, "base64"));
  return { name, data, version: s.metadata?.resourceVersion ?? "" };
}
