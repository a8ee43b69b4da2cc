/**
 * Kubernetes `Secret` manifests exactly as `kubectl create secret generic NAME -n NS --type=Opaque
 * --from-file=KEY=FILE… --dry-run=client -o yaml` prints them, so `meshrelay certs … --format yaml |
 * kubectl apply -f -` creates the same objects as the seeds' kubectl lines.
 *
 * kubectl marshals through JSON into go-yaml v2: keys are sorted with go-yaml's own order (non-letters
 * before letters, digit runs compared as numbers), `data` values are standard base64 of the file bytes on
 * one line, and a value that YAML 1.1 would read as a number, bool or null is double-quoted. This module
 * reproduces those rules instead of going through a YAML library whose ordering and quoting differ.
 * @module
 */

/** One Kubernetes Secret: name, namespace and its keys' bytes (the files of a secret folder). */
export interface SecretManifest {
  readonly name: string;
  /** Omitted from the manifest when undefined (like kubectl without `-n`). */
  readonly namespace?: string;
  readonly data: Readonly<Record<string, Uint8Array>>;
}

/** Standard base64 with padding, as Go's `encoding/json` writes `[]byte`. */
export function base64Of(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

const isLetter = (c: string) => /\p{L}/u.test(c);
const isDigit = (c: string) => c >= "0" && c <= "9";

/** go-yaml v2's map key order (`keyList.Less`) for string keys. */
export function goYamlKeyLess(a: string, b: string): boolean {
  const ar = [...a];
  const br = [...b];
  for (let i = 0; i < ar.length && i < br.length; i++) {
    if (ar[i] === br[i]) continue;
    const al = isLetter(ar[i]);
    const bl = isLetter(br[i]);
    if (al && bl) return ar[i] < br[i];
    if (al || bl) return bl;
    let an = 0;
    let bn = 0;
    if (ar[i] === "0" || br[i] === "0") {
      for (let j = i - 1; j >= 0 && isDigit(ar[j]); j--) {
        if (ar[j] !== "0") {
          an = 1;
          bn = 1;
          break;
        }
      }
    }
    let ai = i;
    let bi = i;
    for (; ai < ar.length && isDigit(ar[ai]); ai++) an = an * 10 + (ar[ai].charCodeAt(0) - 48);
    for (; bi < br.length && isDigit(br[bi]); bi++) bn = bn * 10 + (br[bi].charCodeAt(0) - 48);
    if (an !== bn) return an < bn;
    if (ai !== bi) return ai < bi;
    return ar[i] < br[i];
  }
  return ar.length < br.length;
}

/** Keys of `obj` in go-yaml v2 order. */
export function goYamlSortedKeys(obj: Readonly<Record<string, unknown>>): string[] {
  return Object.keys(obj).sort((a, b) => goYamlKeyLess(a, b) ? -1 : goYamlKeyLess(b, a) ? 1 : 0);
}

const YAML11_SPECIAL = new Set([
  "",
  "~",
  "null",
  "Null",
  "NULL",
  "y",
  "Y",
  "yes",
  "Yes",
  "YES",
  "n",
  "N",
  "no",
  "No",
  "NO",
  "true",
  "True",
  "TRUE",
  "false",
  "False",
  "FALSE",
  "on",
  "On",
  "ON",
  "off",
  "Off",
  "OFF",
  "<<",
]);
const GO_INT = /^[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$/;
const YAML_FLOAT = /^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$/;

/**
 * True when go-yaml v2 would not print `s` as a plain scalar. Covers what base64 text and Kubernetes
 * object names can contain (letters, digits, `+/=-.`): words YAML 1.1 reads as bool/null and strings Go
 * parses as numbers. Anything with other punctuation or whitespace is quoted too, to stay safe.
 */
export function needsQuotes(s: string): boolean {
  if (YAML11_SPECIAL.has(s)) return true;
  if (/^[-+.]?[0-9]/.test(s) || /^[-+]?\.(inf|Inf|INF|nan|NaN|NAN)$/.test(s)) {
    const plain = s.replaceAll("_", "");
    if (GO_INT.test(plain) || YAML_FLOAT.test(plain) || /^[-+]?\.(inf|Inf|INF|nan|NaN|NAN)$/.test(s)) {
      return true;
    }
  }
  return !/^[A-Za-z0-9+/=._][A-Za-z0-9+/=._-]*$/.test(s);
}

function scalar(s: string): string {
  return needsQuotes(s) ? JSON.stringify(s) : s;
}

/** One Secret as kubectl's `-o yaml` prints it (ends with a newline). */
export function secretToYaml(secret: SecretManifest): string {
  const lines = ["apiVersion: v1"];
  const keys = goYamlSortedKeys(secret.data);
  if (keys.length === 0) lines.push("data: {}");
  else {
    lines.push("data:");
    for (const k of keys) lines.push(`  ${scalar(k)}: ${scalar(base64Of(secret.data[k]))}`);
  }
  lines.push("kind: Secret", "metadata:", "  creationTimestamp: null", `  name: ${scalar(secret.name)}`);
  if (secret.namespace !== undefined) lines.push(`  namespace: ${scalar(secret.namespace)}`);
  lines.push("type: Opaque");
  return lines.join("\n") + "\n";
}

/** Several Secrets as one multi-document YAML stream (documents separated by `---`). */
export function secretsToYaml(secrets: readonly SecretManifest[]): string {
  return secrets.map(secretToYaml).join("---\n");
}

/** The object kubectl's `-o json` prints for one Secret, with its field order. */
export function secretObject(secret: SecretManifest): Record<string, unknown> {
  const metadata: Record<string, unknown> = { name: secret.name };
  if (secret.namespace !== undefined) metadata.namespace = secret.namespace;
  metadata.creationTimestamp = null;
  const data: Record<string, string> = {};
  for (const k of Object.keys(secret.data).sort()) data[k] = base64Of(secret.data[k]);
  return { kind: "Secret", apiVersion: "v1", metadata, data, type: "Opaque" };
}

/** A `v1` `List` of the Secrets, indented like kubectl's `-o json` (ends with a newline). */
export function secretsToJson(secrets: readonly SecretManifest[]): string {
  const list = {
    apiVersion: "v1",
    items: secrets.map(secretObject),
    kind: "List",
    metadata: { resourceVersion: "" },
  };
  return JSON.stringify(list, null, 4) + "\n";
}
