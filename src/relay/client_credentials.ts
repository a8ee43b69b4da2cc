/**
 * The agent's side of the transport: channel credentials and options for dialing the relay server in
 * each security mode.
 *
 * - The server is verified against the relay root CA only (not the system roots).
 * - `authority` (`--authority`, the seeds' `relay.authority`) is the TLS server name for SNI-passthrough
 *   ingress: sent as SNI and as `:authority`, and the server certificate must match it.
 * - A target given as an IP address cannot be sent as SNI (Node refuses "servername must not be an IP"),
 *   so without an authority we send no IP as SNI and check the server certificate's IP SANs instead.
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { InvalidInputError } from "../errors.ts";
import { CLUSTER_METADATA } from "./peer_identity.ts";

/** The SNI we send when dialing an IP address without `--authority` (checked against the IP instead). */
export const IP_TARGET_SNI = "meshrelay-relay-server.invalid";

/** A client certificate with its chain and key, PEM. */
export interface ClientKeyPair {
  /** Leaf first, then intermediates. */
  certChainPem: string;
  keyPem: string;
}

/** Options of {@linkcode channelFor}. */
export interface ChannelInput {
  /** host:port. */
  serverAddress: string;
  /** Plaintext (insecure mode). */
  insecure?: boolean;
  /** Trust anchors for the server certificate (TLS and mTLS). */
  rootCaPem?: string;
  /** Present a client certificate (mTLS). */
  client?: ClientKeyPair;
  /** TLS server name (SNI and :authority). */
  authority?: string;
  /** Extra channel options (message sizes, keepalive). */
  options?: grpc.ChannelOptions;
}

/** What a grpc-js client constructor takes. */
export interface Channel {
  target: string;
  credentials: grpc.ChannelCredentials;
  options: grpc.ChannelOptions;
}

/** Splits host:port ([v6]:port too). */
export function splitAddress(address: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:\[\]]+):(\d+)$/.exec(address);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port > 0 && port < 65536)) {
    throw new InvalidInputError(`server address must be host:port, got ${JSON.stringify(address)}`);
  }
  return { host: m[1], port };
}

function isIp(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(":");
}

/** Credentials, options and target for one mode (see the module comment). */
export function channelFor(input: ChannelInput): Channel {
  const { host, port } = splitAddress(input.serverAddress);
  const target = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const options: grpc.ChannelOptions = { ...input.options };
  if (input.insecure) {
    if (input.authority) options["grpc.default_authority"] = input.authority;
    return { target, credentials: grpc.credentials.createInsecure(), options };
  }
  if (!input.rootCaPem) {
    throw new InvalidInputError("TLS needs the relay root CA (relay-root-tls-secret ca.crt)");
  }
  const verify: grpc.VerifyOptions = {};
  if (input.authority) {
    options["grpc.ssl_target_name_override"] = input.authority;
    options["grpc.default_authority"] = input.authority;
  } else if (isIp(host)) {
    options["grpc.ssl_target_name_override"] = IP_TARGET_SNI;
    verify.checkServerIdentity = (_sni: string, cert: PeerCertificate) => checkServerIdentity(host, cert);
  }
  const credentials = grpc.credentials.createSsl(
    Buffer.from(input.rootCaPem),
    input.client ? Buffer.from(input.client.keyPem) : null,
    input.client ? Buffer.from(input.client.certChainPem) : null,
    verify,
  );
  return { target, credentials, options };
}

/** Per-call metadata of the simple-TLS and insecure modes: the cluster name and, if any, the token. */
export function sessionMetadata(cluster: string, token?: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(CLUSTER_METADATA, cluster);
  if (token) md.set("authorization", `Bearer ${token}`);
  return md;
}
