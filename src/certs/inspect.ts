/**
 * `certs inspect FILE|DIR`: every certificate, as text in the layout of `step certificate inspect`
 * (with the days left at `now`) or as JSON.
 * @module
 */
import { type CertificateInfo, daysLeft, describeCertificate, renderCertificateText } from "../pki/mod.ts";
import { collectCertificates } from "./read.ts";

/** One inspected certificate. */
export interface InspectedCertificate extends CertificateInfo {
  path: string;
  index: number;
  daysLeft: number;
}

/** Describes every certificate found at `path`. */
export async function inspect(path: string, now: Date): Promise<InspectedCertificate[]> {
  const found = await collectCertificates(path, "inspect");
  const out: InspectedCertificate[] = [];
  for (const f of found) {
    out.push({
      path: f.path,
      index: f.index,
      daysLeft: daysLeft(f.certificate, now),
      ...await describeCertificate(f.certificate),
    });
  }
  return out;
}

/** Text for a terminal: a header per certificate naming its file and position, then the certificate. */
export function renderInspection(items: readonly InspectedCertificate[]): string {
  const perFile = new Map<string, number>();
  for (const i of items) perFile.set(i.path, (perFile.get(i.path) ?? 0) + 1);
  return items.map((i) => {
    const n = perFile.get(i.path)!;
    const pos = n > 1 ? ` [${i.index + 1}/${n}]` : "";
    const left = i.daysLeft >= 0 ? `${i.daysLeft} days left` : `expired ${-i.daysLeft} days ago`;
    return `${i.path}${pos} (${left})\n${renderCertificateText(i)}`;
  }).join("\n");
}
