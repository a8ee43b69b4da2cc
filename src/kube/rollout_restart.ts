/**
 * Rolling restart of the Deployments in one namespace, exactly as `kubectl rollout restart` does it:
 * the pod template gets the annotation `kubectl.kubernetes.io/restartedAt`, so each Deployment rolls
 * its pods at its own pace (maxUnavailable/maxSurge) and nothing is deleted by hand. The agent uses it
 * to make istiod load a new plug-in CA (`cacerts`), which Istio reads only at start.
 * @module
 */
import type { KubeConfig } from "@kubernetes/client-node";
import { KubeRest } from "./kube_rest.ts";

/** The annotation `kubectl rollout restart` sets. */
export const RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt";

/** Options of {@linkcode restartDeployments}. */
export interface RestartDeploymentsOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  /** Label selector (`app=istiod`); default every Deployment of the namespace. */
  labelSelector?: string;
  now: Date;
  /** Recorded in managedFields. Default `meshrelay`. */
  fieldManager?: string;
  signal?: AbortSignal;
}

/** Restarts the selected Deployments; returns `namespace/name` of each. */
export async function restartDeployments(opts: RestartDeploymentsOptions): Promise<string[]> {
  const rest = new KubeRest({ kubeConfig: opts.kubeConfig });
  const base = `/apis/apps/v1/namespaces/${opts.namespace}/deployments`;
  const listed = await rest.list(base, {
    apiVersion: "apps/v1",
    kind: "Deployment",
    query: { labelSelector: opts.labelSelector },
    signal: opts.signal,
  });
  const out: string[] = [];
  for (const d of listed.items) {
    const name = String((d.metadata as { name?: string } | undefined)?.name ?? "");
    if (!name) continue;
    await rest.request({
      method: "PATCH",
      path: `${base}/${name}`,
      query: { fieldManager: opts.fieldManager ?? "meshrelay" },
      body: {
        spec: {
          template: { metadata: { annotations: { [RESTARTED_AT_ANNOTATION]: opts.now.toISOString() } } },
        },
      },
      contentType: "application/merge-patch+json",
      signal: opts.signal,
    });
    out.push(`${opts.namespace}/${name}`);
  }
  return out;
}
