/**
 * Namespace flags of the CLI modes, apart from cli_kube.ts so that `certs` can validate its flags
 * without loading the Kubernetes client (which it imports only for register/deregister).
 * @module
 */
import { InvalidInputError } from "./errors.ts";

/** Namespace of the meshrelay server and agents when neither a flag nor the pod says otherwise. */
export const DEFAULT_KUBE_NAMESPACE = "meshrelay";

/** Where the in-cluster service account lives (the namespace file tells a pod its namespace). */
const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/**
 * The namespace to use: the flag (or its environment variable, already folded in by commander), else
 * the pod's own namespace, else {@linkcode DEFAULT_KUBE_NAMESPACE}.
 */
export function kubeNamespace(flag: string | undefined): string {
  if (flag) return flag;
  try {
    const ns = Deno.readTextFileSync(`${SERVICE_ACCOUNT_DIR}/namespace`).trim();
    if (ns) return ns;
  } catch {
    // Not in a pod.
  }
  return DEFAULT_KUBE_NAMESPACE;
}

/** Refuses a namespace that is not a DNS label (it would only fail later, less clearly). */
export function validateNamespace(ns: string, flag: string): string {
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(ns)) {
    throw new InvalidInputError(`${flag}: ${JSON.stringify(ns.slice(0, 64))} is not a namespace name`);
  }
  return ns;
}
