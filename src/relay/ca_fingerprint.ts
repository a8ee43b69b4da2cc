/**
 * A fingerprint of a PEM bundle of trust anchors, for `BootstrapRequest.known_ca_sha256`: the agent names
 * the anchors it already has, and the server leaves them out of its answer when they are its own.
 * @module
 */
import { createHash } from "node:crypto";

/**
 * SHA-256 (hex) of `pem` with all white space removed, so that line endings and line wrapping do not
 * matter, while any other difference (another certificate, another order) does.
 */
export function caFingerprint(pem: string): string {
  return createHash("sha256").update(pem.replace(/\s+/g, "")).digest("hex");
}
