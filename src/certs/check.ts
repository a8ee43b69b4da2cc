/**
 * `certs check DIR`: the expiry of every certificate under a folder. A certificate past `warnFraction` of
 * its lifetime (default 2/3, cert-manager's renewal point) is due for renewal.
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import { daysLeft, type LifetimeStatus, lifetimeStatus, RENEW_AT_FRACTION } from "../pki/mod.ts";
import { collectCertificates } from "./read.ts";

/** One distinct certificate (by fingerprint) and the files that hold it. */
export interface CheckedCertificate {
  subject: string;
  notAfter: string;
  daysLeft: number;
  status: LifetimeStatus;
  paths: string[];
}

/** Exit codes of `certs check` (documented in its --help). */
export const CHECK_EXIT = { ok: 0, renew: 1, badInput: 2, expired: 3 } as const;

/** The exit code for a set of results: expired beats renew (and not-yet-valid) beats ok. */
export function checkExitCode(items: readonly { status: LifetimeStatus }[]): number {
  if (items.some((i) => i.status === "expired")) return CHECK_EXIT.expired;
  if (items.some((i) => i.status === "renew" || i.status === "not_yet_valid")) return CHECK_EXIT.renew;
  return CHECK_EXIT.ok;
}

/** Checks every certificate under `path` at `now`. */
export async function check(
  path: string,
  now: Date,
  warnFraction = RENEW_AT_FRACTION,
): Promise<CheckedCertificate[]> {
  if (!(warnFraction > 0 && warnFraction <= 1)) {
    throw new InvalidInputError("--warn-fraction must be a number above 0 and at most 1");
  }
  const byFingerprint = new Map<string, CheckedCertificate>();
  for (const f of await collectCertificates(path, "check")) {
    const fp = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", f.certificate.rawData))).join(
      ",",
    );
    const seen = byFingerprint.get(fp);
    if (seen) {
      if (!seen.paths.includes(f.path)) seen.paths.push(f.path);
      continue;
    }
    byFingerprint.set(fp, {
      subject: f.certificate.subject,
      notAfter: f.certificate.notAfter.toISOString(),
      daysLeft: daysLeft(f.certificate, now),
      status: lifetimeStatus(f.certificate, now, warnFraction),
      paths: [f.path],
    });
  }
  return [...byFingerprint.values()];
}

/** A table: status, days left, expiry, subject, first file (and how many more hold the same certificate). */
export function renderCheck(items: readonly CheckedCertificate[]): string {
  const rows = [["STATUS", "DAYS LEFT", "NOT AFTER", "SUBJECT", "FILE"]];
  for (const i of items) {
    const more = i.paths.length > 1 ? ` (+${i.paths.length - 1} more)` : "";
    rows.push([
      i.status.replaceAll("_", "-"),
      String(i.daysLeft),
      i.notAfter.slice(0, 10),
      i.subject,
      i.paths[0] + more,
    ]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((v, c) => c === r.length - 1 ? v : v.padEnd(widths[c])).join("  ")).join(
    "\n",
  ) + "\n";
}
