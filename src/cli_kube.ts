/**
 * Loading a KubeConfig for the CLI modes (`server --kube`, `agent --kube`, `certs register`). This is
 * the CLI layer, like cli_flags.ts: it reads files and the environment, which src/kube never does.
 *
 * Order: `--kubeconfig FILE`; else `$KUBECONFIG` / `~/.kube/config`; else the in-cluster service
 * account. client-node's `loadFromDefault()` silently falls back to an unauthenticated
 * `http://localhost:8080` when it can read none of them (for instance for lack of read permission);
 * `createKubeClient` refuses that configuration, so a misconfiguration is one clear line, not requests
 * to the wrong place.
 * @module
 */
import { KubeConfig } from "@kubernetes/client-node";
import { InvalidInputError } from "./errors.ts";
import { createKubeClient, type KubeClient } from "./kube/mod.ts";

export { DEFAULT_KUBE_NAMESPACE, kubeNamespace, validateNamespace } from "./cli_namespace.ts";

/** Flags that select a cluster. */
export interface KubeFlags {
  /** Path of a kubeconfig file. */
  kubeconfig?: string;
  /** Context in it; default its current context. */
  context?: string;
}

function errText(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0].slice(0, 200);
}

/**
 * The KubeConfig the flags select, checked: the context exists and the configuration is not the
 * localhost:8080 fallback. `what` names the cluster in messages (e.g. "--mgmt-kubeconfig").
 */
export function loadKubeConfig(flags: KubeFlags, what = "--kubeconfig"): KubeConfig {
  const kc = new KubeConfig();
  if (flags.kubeconfig) {
    try {
      Deno.statSync(flags.kubeconfig);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new InvalidInputError(`${what}: ${flags.kubeconfig} does not exist`);
      }
      throw new InvalidInputError(`${what}: ${flags.kubeconfig} cannot be read`);
    }
    try {
      kc.loadFromFile(flags.kubeconfig);
    } catch (e) {
      throw new InvalidInputError(`${what}: ${flags.kubeconfig} is not a usable kubeconfig (${errText(e)})`);
    }
  } else {
    try {
      kc.loadFromDefault();
    } catch (e) {
      throw new InvalidInputError(`the default kubeconfig is not usable (${errText(e)})`);
    }
  }
  if (flags.context) {
    if (!kc.getContexts().some((c) => c.name === flags.context)) {
      throw new InvalidInputError(`kubeconfig has no context "${flags.context}"`);
    }
    kc.setCurrentContext(flags.context);
  }
  return kc;
}

/** {@linkcode loadKubeConfig}, then the clients (which refuse the localhost:8080 fallback). */
export function loadKubeClient(flags: KubeFlags, what?: string): KubeClient {
  return createKubeClient(loadKubeConfig(flags, what));
}
