/**
 * The one door to the generated protobuf code (`gen/`, made by `deno task proto` from
 * `meshrelay/relay/v1/relay.proto`). Everything else imports the wire types from here, so a
 * regeneration or a change of generator touches only this file.
 * @module
 */
export {
  type AgentMessage,
  AgentMessage as AgentMessageCodec,
  type BootstrapRequest,
  type CertificateResponse,
  type DiscoveryAck,
  type HeldVersion,
  type Hello,
  IdentityClient,
  type IdentityServer,
  IdentityService,
  type MeshCaRequest,
  type ObjectStatus as WireObjectStatus,
  protobufPackage,
  RelayClient,
  type RelayServer,
  RelayService,
  type RenewRequest,
  type Resource,
  type ResourceDiff,
  type ServerMessage,
  ServerMessage as ServerMessageCodec,
  type StatusReport,
  type Welcome,
} from "./gen/meshrelay/relay/v1/relay.ts";
