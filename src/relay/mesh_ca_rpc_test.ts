/**
 * `Identity.SignMeshCa` through a composed server on 127.0.0.1: only a verified client certificate gets an
 * Istio intermediate, always for the certificate's own cluster; simple TLS refuses it.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { systemClock } from "../clock.ts";
import { GrpcStatus } from "../errors.ts";
import { nullLogger } from "../log.ts";
import { createCsr, generateKeyPair, parseCertificates } from "../pki/mod.ts";
import { type CertificateResponse, IdentityClient } from "../proto/mod.ts";
import { DirectoryConfigSource } from "../state/mod.ts";
import { MemorySecretStore } from "../store/mod.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { ISTIOD_SAN } from "./mesh_ca.ts";
import { RelayServer } from "./relay_server.ts";
import { loadSigningIssuer } from "./server_material.ts";
import { issueClient } from "./testing_pki.ts";
import type { SecurityMode } from "./server_material.ts";

const dec = new TextDecoder();
const CONFIG = `apiVersion: meshrelay.io/v1alpha1
kind: KubernetesCluster
metadata: { name: cluster-1 }
---
apiVersion: meshrelay.io/v1alpha1
kind: KubernetesCluster
metadata: { name: cluster-2 }
---
apiVersion: meshrelay.io/v1alpha1
kind: RootTrustPolicy
metadata: { name: mesh }
spec:
  mgmtServerCa: { generated: {} }
`;

async function withServer(
  mode: SecurityMode,
  fn: (s: RelayServer, store: MemorySecretStore) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-meshca-rpc-" });
  await Deno.writeTextFile(`${dir}/config.yaml`, CONFIG);
  const store = new MemorySecretStore();
  const server = await RelayServer.start({
    mode,
    store,
    config: new DirectoryConfigSource({ root: dir, clock: systemClock, log: nullLogger, useFsEvents: false }),
    clock: systemClock,
    log: nullLogger,
    host: "127.0.0.1",
    port: 0,
    metricsPort: null,
    warmupMs: 0,
  });
  try {
    await fn(server, store);
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

function call(
  port: number,
  rootPem: string,
  csrPem: string,
  client?: { certPem: string; keyPem: string },
): Promise<{ resp?: CertificateResponse; code?: number; details?: string }> {
  const creds = grpc.credentials.createSsl(
    Buffer.from(rootPem),
    client ? Buffer.from(client.keyPem) : null,
    client ? Buffer.from(client.certPem) : null,
  );
  const c = new IdentityClient(`localhost:${port}`, creds);
  return new Promise((resolve) => {
    c.signMeshCa({ csrPem }, new grpc.Metadata(), { deadline: Date.now() + 15_000 }, (e, resp) => {
      c.close();
      resolve(e ? { code: e.code, details: e.details } : { resp });
    });
  });
}

const csr = async (dnsNames = [ISTIOD_SAN]) => await createCsr(await generateKeyPair(), { dnsNames });

Deno.test("SignMeshCa over gRPC: mTLS identity decides the cluster", async (t) => {
  await withServer("mtls", async (server, store) => {
    const root = dec.decode((await store.get("relay-root-tls-secret"))!.data["ca.crt"]);
    const signing = (await loadSigningIssuer(store, { now: new Date() }))!.issuer;
    const c1 = await issueClient(signing, "cluster-1", new Date(), 86_400_000);

    await t.step("with cluster-1's certificate: an intermediate for cluster-1", async () => {
      const r = await call(server.port, root, await csr(), { certPem: c1.chainPem, keyPem: c1.keyPem });
      assert(r.resp, r.details);
      const [cert] = parseCertificates(r.resp.certificatePem);
      assertEquals(cert.subject, "O=Istio, CN=Intermediate CA, L=cluster-1");
      const [istioRoot] = parseCertificates(r.resp.caPem);
      assertEquals(istioRoot.subject, "O=Istio, CN=Root CA");
    });
    await t.step("without a client certificate: UNAUTHENTICATED", async () => {
      const r = await call(server.port, root, await csr());
      assertEquals(r.code, GrpcStatus.UNAUTHENTICATED, r.details);
    });
    await t.step("a CSR asking for another name: PERMISSION_DENIED", async () => {
      const r = await call(server.port, root, await csr(["istiod.other.svc"]), {
        certPem: c1.chainPem,
        keyPem: c1.keyPem,
      });
      assertEquals(r.code, GrpcStatus.PERMISSION_DENIED, r.details);
    });
    await t.step("an unregistered cluster's certificate: refused", async () => {
      const c9 = await issueClient(signing, "cluster-9", new Date(), 86_400_000);
      const r = await call(server.port, root, await csr(), { certPem: c9.chainPem, keyPem: c9.keyPem });
      assertEquals(r.code, GrpcStatus.PERMISSION_DENIED, r.details);
    });
  });
  await t.step(
    "simple TLS: FAILED_PRECONDITION (no client certificates to take the cluster from)",
    async () => {
      await withServer("tls", async (server, store) => {
        const root = dec.decode((await store.get("relay-root-tls-secret"))!.data["ca.crt"]);
        const r = await call(server.port, root, await csr());
        assertEquals(r.code, GrpcStatus.FAILED_PRECONDITION, r.details);
      });
    },
  );
});
