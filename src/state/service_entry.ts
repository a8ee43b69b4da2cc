/**
 * Istio `ServiceEntry` generated for a Service exported from another cluster by a ServiceFederation.
 * @module
 */
import type { KubeObject } from "./types.ts";

/** Label naming the cluster an exported Service came from. */
export const SOURCE_CLUSTER_LABEL = "meshrelay.io/source-cluster";
/** Label naming the ServiceFederation that generated an object. */
export const FEDERATION_LABEL = "meshrelay.io/federation";

interface ServicePort {
  port?: unknown;
  name?: unknown;
  protocol?: unknown;
  appProtocol?: unknown;
}

const ISTIO_PROTOCOLS = ["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"];

/**
 * Istio protocol of a Service port: `appProtocol`, else the `<protocol>-` name prefix convention,
 * else TCP. UDP and SCTP ports cannot be expressed in a ServiceEntry: undefined.
 */
export function istioProtocolOf(p: ServicePort): string | undefined {
  const l4 = typeof p.protocol === "string" ? p.protocol.toUpperCase() : "TCP";
  if (l4 !== "TCP") return undefined;
  const hint = typeof p.appProtocol === "string"
    ? p.appProtocol
    : typeof p.name === "string"
    ? p.name.split("-")[0]
    : "";
  const up = hint.toUpperCase().replace(/^KUBERNETES\.IO\/H2C$/, "HTTP2");
  return ISTIO_PROTOCOLS.includes(up) ? up : "TCP";
}

/** DNS-1123 name from parts, at most 253 characters. */
function dnsName(...parts: string[]): string {
  return parts.join("-").toLowerCase().replace(/[^a-z0-9.-]+/g, "-").replace(/^[-.]+|[-.]+$/g, "").slice(
    0,
    253,
  )
    .replace(/[-.]+$/, "");
}

/**
 * The ServiceEntry making `service` (discovered in `sourceCluster`) resolvable in another cluster, or
 * undefined when the Service has no TCP port to expose.
 */
export function serviceEntryFor(
  service: KubeObject,
  opts: { sourceCluster: string; clusterDomain: string; namespace: string; federation: string },
): KubeObject | undefined {
  const ns = service.metadata.namespace ?? "default";
  const spec = (service.spec ?? {}) as { ports?: unknown };
  const ports: { number: number; name: string; protocol: string }[] = [];
  for (const raw of Array.isArray(spec.ports) ? spec.ports as ServicePort[] : []) {
    if (typeof raw?.port !== "number" || !Number.isInteger(raw.port)) continue;
    const protocol = istioProtocolOf(raw);
    if (!protocol) continue;
    const name = typeof raw.name === "string" && raw.name !== ""
      ? raw.name
      : `${protocol.toLowerCase()}-${raw.port}`;
    ports.push({ number: raw.port, name, protocol });
  }
  if (ports.length === 0) return undefined;
  ports.sort((a, b) => a.number - b.number || (a.name < b.name ? -1 : 1));
  return {
    apiVersion: "networking.istio.io/v1",
    kind: "ServiceEntry",
    metadata: {
      name: dnsName(service.metadata.name, ns, opts.sourceCluster),
      namespace: opts.namespace,
      labels: {
        [SOURCE_CLUSTER_LABEL]: opts.sourceCluster,
        [FEDERATION_LABEL]: opts.federation,
      },
    },
    spec: {
      hosts: [`${service.metadata.name}.${ns}.svc.${opts.clusterDomain}`],
      location: "MESH_INTERNAL",
      resolution: "DNS",
      ports,
    },
  };
}
