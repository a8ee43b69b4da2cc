/**
 * The `certs` commands as library code: building relay and Istio PKI material, laying it out as the
 * seeds' secrets (folders or Kubernetes manifests), and reading it back (inspect, verify, check).
 * `src/certs.ts` parses flags and calls these.
 * @module
 */
export { base64Of, type SecretManifest, secretsToJson, secretsToYaml, secretToYaml } from "./manifest.ts";
export {
  type OutputPlan,
  type PlannedFile,
  type PlannedSecret,
  type PlanTargets,
  preflightDir,
  preflightFile,
  writeFileAtomic,
  writeFileUndoable,
  writePlanToDir,
} from "./output.ts";
export { type Progress, progressReporter, silentProgress } from "./progress.ts";
export {
  findRoot,
  isEncryptedKeyPem,
  type LoadedIssuer,
  loadIssuerFiles,
  loadRootCaFromDir,
  loadSigningCaFromDir,
  passphraseFor,
  type PassphraseSource,
  readPemFile,
} from "./inputs.ts";
export {
  AGENT_CONFIGMAP,
  ISTIO_DIR,
  ISTIO_NAMESPACE,
  ISTIO_ROOT_CERT_FILE,
  ISTIO_ROOT_KEY_FILE,
  ISTIO_SECRET,
  istioStoreDir,
  newToken,
  RELAY_CLIENT_SECRET_NAMES,
  RELAY_NAMESPACE,
  RELAY_ROOT_KEY_FILE,
  RELAY_ROOT_SECRET,
  RELAY_SERVER_SECRET,
  RELAY_SIGNING_SECRET,
  RELAY_TOKEN_SECRET,
} from "./layout.ts";
export {
  buildRelayPki,
  chainBelowRoot,
  defaultRootAlgorithm,
  defaultServerDnsNames,
  type InitOptions,
  type InitResult,
  initTargets,
} from "./init.ts";
export { issueLeafSecret, type LeafOptions } from "./leaf.ts";
export {
  buildIstioCacerts,
  checkClusterNames,
  checkIstioAlgorithm,
  ISTIO_ARCHITECTURES,
  type IstioArchitecture,
  type IstioOptions,
  type IstioResult,
  istioTargets,
} from "./istio.ts";
export { collectCertificates, type FoundCertificate } from "./read.ts";
export { inspect, type InspectedCertificate, renderInspection } from "./inspect.ts";
export { check, CHECK_EXIT, type CheckedCertificate, checkExitCode, renderCheck } from "./check.ts";
export { parseAt, verifyFiles, type VerifyFilesOptions } from "./verify.ts";
