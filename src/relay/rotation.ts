/**
 * When an agent renews its client certificate. Pure: the caller passes the certificate's validity,
 * the options and a random number.
 *
 * Defaults, and why: renewal starts when `graceRatio` (10%) of the lifetime is left at the latest,
 * and is spread uniformly over the `jitterRatio` (20%) of the lifetime before that, i.e. between 70%
 * and 90% of the lifetime. That is kubelet's window (80% ± 10%), and the seeds' knob
 * `clientTlsSecretRotationGracePeriodRatio` (0.1: "rotate when 10% of the lifetime is left") is the
 * latest point. For the default one-year certificate that leaves at least ~36 days to retry through a
 * management-plane outage; the jitter keeps agents bootstrapped together (a fleet registered in one
 * go) from renewing in one burst, which is why Istio added jitter (istio#52102).
 * @module
 */
import { InvalidInputError } from "../errors.ts";

/** The validity of a certificate. */
export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/** Rotation knobs. */
export interface RotationOptions {
  /** Fraction of the lifetime left at the latest renewal moment. Default 0.1 (seeds' knob). */
  graceRatio?: number;
  /** Fraction of the lifetime over which renewal is spread before that moment. Default 0.2. */
  jitterRatio?: number;
}

/** Default knobs (see the module comment). */
export const DEFAULT_ROTATION: Required<RotationOptions> = { graceRatio: 0.1, jitterRatio: 0.2 };

function resolved(opts: RotationOptions = {}): Required<RotationOptions> {
  const o = { ...DEFAULT_ROTATION, ...opts };
  if (!(o.graceRatio > 0 && o.graceRatio < 1)) {
    throw new InvalidInputError("rotation grace ratio must be between 0 and 1 (exclusive)");
  }
  if (!(o.jitterRatio >= 0 && o.graceRatio + o.jitterRatio < 1)) {
    throw new InvalidInputError("rotation jitter ratio must be >= 0 and grace + jitter below 1");
  }
  return o;
}

/** Checks the knobs; throws InvalidInputError naming the wrong one. */
export function validateRotationOptions(opts: RotationOptions): void {
  resolved(opts);
}

/** The renewal window: renewal happens at a uniformly random moment in [start, end]. */
export function rotationWindow(cert: Validity, opts?: RotationOptions): { start: Date; end: Date } {
  const o = resolved(opts);
  const nb = cert.notBefore.getTime();
  const na = cert.notAfter.getTime();
  const life = Math.max(0, na - nb);
  return {
    start: new Date(na - life * (o.graceRatio + o.jitterRatio)),
    end: new Date(na - life * o.graceRatio),
  };
}

/** The moment to renew `cert`, given `random` in [0, 1). */
export function renewAt(cert: Validity, opts: RotationOptions | undefined, random: number): Date {
  const w = rotationWindow(cert, opts);
  const r = Math.min(Math.max(random, 0), 1);
  return new Date(Math.round(w.start.getTime() + (w.end.getTime() - w.start.getTime()) * r));
}

/** True once `cert` is inside its renewal window (or past it, or expired): renewing now is due. */
export function shouldRotate(now: Date, cert: Validity, opts?: RotationOptions): boolean {
  return now.getTime() >= rotationWindow(cert, opts).start.getTime();
}

/** True when `cert` cannot be used at `now` (expired or not yet valid). */
export function isExpired(now: Date, cert: Validity): boolean {
  return now.getTime() >= cert.notAfter.getTime() || now.getTime() < cert.notBefore.getTime();
}
