/**
 * Distinguished names, DNS names and IP addresses: parsing our inputs and comparing names the way
 * path building needs (RFC 5280 7.1: case-insensitive, whitespace-insensitive for strings).
 * @module
 */
import { Name } from "@peculiar/x509";
import { InvalidInputError } from "../errors.ts";

/** Parses an RFC 4514-style subject ("CN=x,O=y"); InvalidInputError naming `what` if it is not one. */
export function parseSubject(subject: string, what = "subject"): Name {
  if (typeof subject !== "string" || subject.trim() === "") {
    throw new InvalidInputError(`${what}: must not be empty`);
  }
  let name: Name;
  try {
    name = new Name(subject);
  } catch (e) {
    throw new InvalidInputError(`${what}: not a distinguished name like "CN=relay,O=meshrelay"`, {
      cause: e,
    });
  }
  if (name.toJSON().length === 0) {
    throw new InvalidInputError(`${what}: not a distinguished name like "CN=relay,O=meshrelay"`);
  }
  return name;
}

/** Escapes a value for use inside an RFC 4514 string (e.g. a cluster name in "CN=<name>"). */
export function escapeRdnValue(value: string): string {
  return value.replace(/([,+"\\<>;=])/g, "\\$1").replace(/^([ #])/, "\\$1").replace(/ $/, "\\ ");
}

function canonical(name: Name): string {
  return JSON.stringify(
    name.toJSON().map((rdn) => {
      const entries = Object.entries(rdn).map(([k, vs]) =>
        [k, vs.map((v) => v.trim().replace(/\s+/g, " ").toLowerCase()).sort()] as const
      );
      return entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    }),
  );
}

/** True when two names are equal: byte-identical DER, or equal after RFC 5280 caseless matching. */
export function namesEqual(a: Name, b: Name): boolean {
  const da = new Uint8Array(a.toArrayBuffer());
  const db = new Uint8Array(b.toArrayBuffer());
  if (da.length === db.length && da.every((x, i) => x === db[i])) return true;
  try {
    return canonical(a) === canonical(b);
  } catch {
    return false;
  }
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;

/**
 * Validates a DNS name for a SAN: letters, digits, hyphens, dots; a single "*" allowed only as the whole
 * left-most label of a name with at least two more labels' worth (e.g. "*.gloo-mesh"). Returns it lowercased.
 */
export function checkDnsName(name: string, what = "DNS name"): string {
  if (typeof name !== "string" || name.length === 0 || name.length > 253) {
    throw new InvalidInputError(`${what}: must be 1 to 253 characters`);
  }
  const n = name.endsWith(".") ? name.slice(0, -1) : name;
  const labels = n.split(".");
  const ok = labels.every((l, i) => (i === 0 && l === "*" && labels.length >= 2) || LABEL.test(l));
  if (!ok) throw new InvalidInputError(`${what}: not a valid DNS name`);
  return n.toLowerCase();
}

/** True when `s` is an IPv4 or IPv6 literal. */
export function isIpAddress(s: string): boolean {
  return isIPv4(s) || isIPv6(s);
}

function isIPv4(s: string): boolean {
  const parts = s.split(".");
  return parts.length === 4 && parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}

function isIPv6(s: string): boolean {
  return parseIPv6(s) !== undefined;
}

/** 16 bytes of an IPv6 literal (with optional embedded IPv4 tail), or undefined. */
export function parseIPv6(s: string): Uint8Array | undefined {
  if (!/^[0-9a-f:.]+$/i.test(s) || s.split("::").length > 2) return undefined;
  let tail: number[] = [];
  let body = s;
  const lastColon = s.lastIndexOf(":");
  if (s.slice(lastColon + 1).includes(".")) {
    const v4 = s.slice(lastColon + 1);
    if (!isIPv4(v4)) return undefined;
    tail = v4.split(".").map(Number);
    body = s.slice(0, lastColon + 1) + "0:0";
  }
  const [head, rest] = body.includes("::") ? body.split("::") : [body, undefined];
  const h = head === "" ? [] : head.split(":");
  const r = rest === undefined ? [] : rest === "" ? [] : rest.split(":");
  if (![...h, ...r].every((g) => /^[0-9a-f]{1,4}$/i.test(g))) return undefined;
  const missing = 8 - h.length - r.length;
  if (rest === undefined ? missing !== 0 : missing < 1) return undefined;
  const groups = [...h, ...Array(rest === undefined ? 0 : missing).fill("0"), ...r].map((g) =>
    parseInt(g, 16)
  );
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  if (tail.length) out.set(tail, 12);
  return out;
}

/** The 4 (IPv4) or 16 (IPv6) bytes of an IP literal, as a SAN iPAddress holds them; undefined if not one. */
export function ipAddressBytes(s: string): Uint8Array | undefined {
  if (isIPv4(s)) return new Uint8Array(s.split(".").map(Number));
  return parseIPv6(s);
}

/** Canonical text of an IP literal, so "::1" and "0:0::1" compare equal. */
export function canonicalIp(s: string): string | undefined {
  if (isIPv4(s)) return s;
  const b = parseIPv6(s);
  if (!b) return undefined;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] << 8) | b[i + 1]).toString(16));
  return groups.join(":");
}

/** Validates an IP address for a SAN. */
export function checkIpAddress(ip: string, what = "IP address"): string {
  if (typeof ip !== "string" || !isIpAddress(ip)) {
    throw new InvalidInputError(`${what}: not a valid IP address`);
  }
  return ip;
}

/**
 * RFC 6125 matching of a host name against one SAN DNS entry: exact (caseless, trailing dot ignored) or
 * a wildcard standing for exactly one whole left-most label.
 */
export function dnsNameMatches(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase().replace(/\.$/, "");
  const h = host.toLowerCase().replace(/\.$/, "");
  if (p === h) return true;
  if (!p.startsWith("*.")) return false;
  const suffix = p.slice(1); // ".gloo-mesh"
  if (!h.endsWith(suffix)) return false;
  const label = h.slice(0, h.length - suffix.length);
  return label.length > 0 && !label.includes(".");
}
