/**
 * Helpers shared by the Kubernetes backend tests: writing objects as a user would (server-side
 * apply under another field manager), collecting a watch in the background, and waiting for a
 * condition with a deadline (a bound on the test, never an assertion on time).
 * @module
 */
import type { KubeConfig } from "@kubernetes/client-node";
import { ApiResources, KubeRest, resourcePath } from "../../src/kube/mod.ts";
import type { KubeObject } from "../../src/state/mod.ts";

/** A user's hands on the cluster: apply (field manager `test-user`), get, delete, raw requests. */
export class TestKube {
  readonly rest: KubeRest;
  readonly resources: ApiResources;
  constructor(kubeConfig: KubeConfig) {
    this.rest = new KubeRest({ kubeConfig });
    this.resources = new ApiResources(this.rest);
  }

  async pathOf(o: Pick<KubeObject, "apiVersion" | "kind" | "metadata">): Promise<string> {
    const r = await this.resources.resolve(o.apiVersion, o.kind);
    return resourcePath(r, o.metadata.namespace, o.metadata.name);
  }

  /** Server-side apply as `test-user` (force), like `kubectl apply --server-side`. */
  async apply(...objects: KubeObject[]): Promise<Record<string, unknown>[]> {
    const out = [];
    for (const o of objects) {
      out.push(
        await this.rest.request({
          method: "PATCH",
          path: await this.pathOf(o),
          query: { fieldManager: "test-user", force: true },
          body: o,
          contentType: "application/apply-patch+yaml",
        }),
      );
    }
    return out;
  }

  /** The live object, or undefined when absent. */
  async get(
    o: Pick<KubeObject, "apiVersion" | "kind" | "metadata">,
  ): Promise<Record<string, unknown> | undefined> {
    try {
      return await this.rest.request({ path: await this.pathOf(o) });
    } catch (e) {
      if ((e as { httpStatus?: number }).httpStatus === 404) return undefined;
      throw e;
    }
  }

  async delete(o: Pick<KubeObject, "apiVersion" | "kind" | "metadata">): Promise<void> {
    await this.rest.request({ method: "DELETE", path: await this.pathOf(o) });
  }

  /** A merge patch as `test-user` (like `kubectl edit`/`label`). */
  async mergePatch(o: Pick<KubeObject, "apiVersion" | "kind" | "metadata">, patch: unknown): Promise<void> {
    await this.rest.request({
      method: "PATCH",
      path: await this.pathOf(o),
      query: { fieldManager: "test-user" },
      body: patch,
      contentType: "application/merge-patch+json",
    });
  }

  /** Applies CRD manifests and waits until each serves its kind. */
  async installCrds(crds: KubeObject[], deadlineMs = 60_000): Promise<void> {
    await this.apply(...crds);
    for (const crd of crds) {
      await waitUntil(`CRD ${crd.metadata.name} established`, deadlineMs, async () => {
        const live = await this.get(crd) as { status?: { conditions?: { type: string; status: string }[] } };
        return live?.status?.conditions?.some((c) => c.type === "Established" && c.status === "True") ??
          false;
      });
    }
    this.resources.invalidate();
  }
}

/** Polls `probe` every 50 ms until it is true; throws naming `what` when `deadlineMs` passes first. */
export async function waitUntil(what: string, deadlineMs: number, probe: () => Promise<boolean> | boolean) {
  const end = Date.now() + deadlineMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      if (await probe()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last})` : ""}`);
}

/** Consumes an async iterable in the background, keeping every item, until stopped. */
export class Collector<T> {
  readonly items: T[] = [];
  readonly #ctl = new AbortController();
  readonly #done: Promise<void>;
  error: unknown;

  constructor(start: (signal: AbortSignal) => AsyncIterable<T>) {
    const signal = this.#ctl.signal;
    this.#done = (async () => {
      try {
        for await (const x of start(signal)) this.items.push(x);
      } catch (e) {
        if (!signal.aborted) this.error = e;
      }
    })();
  }

  /** Waits until `pred` holds for the items collected so far. */
  async waitFor(what: string, pred: (items: T[]) => boolean, deadlineMs = 30_000): Promise<void> {
    await waitUntil(what, deadlineMs, () => {
      if (this.error) throw this.error;
      return pred(this.items);
    });
  }

  /** Stops consuming and waits for the iterable to wind down. */
  async stop(): Promise<void> {
    this.#ctl.abort();
    await this.#done;
  }
}
