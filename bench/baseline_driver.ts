/**
 * Starting the bare grpc-js baseline (`bench/baseline_server.ts`) for the benchmark drivers: its TLS
 * files, made from a test PKI, and the server process.
 * @module
 */
import { Driven } from "./command_loop.ts";
import { freePort } from "./proc.ts";
import type { TestPki } from "../src/relay/testing_pki.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const dec = new TextDecoder();

/** The baseline server's files and the PEM its clients dial with. */
export interface BaselineTls {
  rootPem: string;
  clientChain: string;
  clientKey: string;
  certFile: string;
  keyFile: string;
  caFile: string;
}

/**
 * Writes the relay server certificate of `pki` (and the root + signing CA its clients are checked
 * against) under `dir`, and issues one client certificate that every baseline stream presents.
 */
export async function writeBaselineTls(pki: TestPki, dir: string): Promise<BaselineTls> {
  const client = await pki.client("baseline-client");
  const secret = async (name: string, key: string) =>
    dec.decode((await pki.store.get(name))!.data[key]).trim();
  const tls: BaselineTls = {
    rootPem: pki.rootPem,
    clientChain: client.chainPem,
    clientKey: client.keyPem,
    certFile: `${dir}/baseline-server.crt`,
    keyFile: `${dir}/baseline-server.key`,
    caFile: `${dir}/baseline-ca.crt`,
  };
  await Deno.writeTextFile(tls.certFile, await secret("relay-server-tls-secret", "tls.crt"));
  await Deno.writeTextFile(tls.keyFile, await secret("relay-server-tls-secret", "tls.key"));
  await Deno.writeTextFile(
    tls.caFile,
    pki.rootPem + "\n" + await secret("relay-tls-signing-secret", "tls.crt"),
  );
  return tls;
}

/** Starts the baseline server on a free port; `stderrFile` collects its log. */
export function startBaselineServer(o: {
  tls: BaselineTls;
  stderrFile: string;
  /** V8 flags, comma-separated ("" or absent: V8's defaults). */
  v8Flags?: string;
  /** `--inspect` address, for heap snapshots. */
  inspect?: string;
}): { srv: Driven; port: number } {
  const port = freePort();
  const srv = new Driven("baseline", [
    "run",
    "-A",
    ...(o.inspect ? [`--inspect=${o.inspect}`] : []),
    ...(o.v8Flags ? [`--v8-flags=${o.v8Flags}`] : []),
    "bench/baseline_server.ts",
    "--port",
    String(port),
    "--cert",
    o.tls.certFile,
    "--key",
    o.tls.keyFile,
    "--ca",
    o.tls.caFile,
  ], { cwd: ROOT, stderrFile: o.stderrFile });
  return { srv, port };
}
