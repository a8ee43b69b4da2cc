/**
 * Run-time narrowing of Deno permissions per mode.
 *
 * The compiled `dist/meshrelay` carries the union of the `server`, `agent` and `certs` permission sets
 * of `deno.json`, because one executable serves all three modes. Each mode calls {@link narrow} first
 * thing so that, for example, `certs` without `--kube` cannot open a socket or spawn a process even in
 * the compiled binary. Under `deno run -P=<mode>` the set is already narrow and this is a no-op for
 * what the set never granted.
 *
 * Limits (measured on Deno 2.9.3): `revoke` only removes whole grants. Revoking one path or one env
 * variable while the whole category is granted changes nothing, and revoking one `sys` kind only works
 * when `sys` was granted as a list of kinds. That is why the sets list `sys` kinds explicitly and why
 * this module revokes whole categories (net, run, ffi) or listed sys kinds, never sub-paths.
 * @module
 */

/** The three modes that run with a permission set. */
export type Mode = "server" | "agent" | "certs";

/** What the invocation needs beyond the mode's baseline. */
export interface Needs {
  /** `certs … --kube`: talks to a Kubernetes API server (network; kubeconfig exec credential plugins). */
  readonly kube?: boolean;
}

/** `sys` kinds the Kubernetes client needs: node's `fs.accessSync` (used to find the kubeconfig) asks for uid/gid. */
const KUBE_SYS = ["uid", "gid"] as const;
/** `sys` kinds only the long-running modes report (hello message, metrics). */
const RUNTIME_SYS = ["hostname", "osRelease", "systemMemoryInfo"] as const;

/**
 * The permissions `mode` must give up at startup, given what this invocation needs. Pure: the same
 * input always gives the same list, so tests can check it without touching the process.
 */
export function revocationsFor(mode: Mode, needs: Needs = {}): Deno.PermissionDescriptor[] {
  const out: Deno.PermissionDescriptor[] = [{ name: "ffi" }];
  switch (mode) {
    case "server":
    case "agent":
      // Both reach the API server in-cluster (service-account token), never through exec plugins.
      out.push({ name: "run" });
      break;
    case "certs":
      for (const kind of RUNTIME_SYS) out.push({ name: "sys", kind });
      if (!needs.kube) {
        out.push({ name: "net" }, { name: "run" });
        for (const kind of KUBE_SYS) out.push({ name: "sys", kind });
      }
      break;
    default: {
      const never: never = mode;
      throw new TypeError(`unknown mode ${String(never)}`);
    }
  }
  return out;
}

/** The modes that run under a permission set; `version` and `--help` of `mod.ts` need none of this. */
export const MODES: readonly Mode[] = ["server", "agent", "certs"];

/** True when `name` is one of {@link MODES}. */
export function isMode(name: string | undefined): name is Mode {
  return (MODES as readonly string[]).includes(name ?? "");
}

/** `certs` subcommands that always talk to Kubernetes API servers (management and workload cluster). */
const KUBE_SUBCOMMANDS = ["register", "deregister"];

/**
 * What an invocation needs, read from the mode's own arguments (before the CLI library parses them, so
 * narrowing can happen before any mode code is even loaded). Any `--kube…` flag (`--kube`,
 * `--kubeconfig`, `--kube-context`), a `--mgmt-…`/`--remote-…` kubeconfig or context flag, or the
 * `register`/`deregister` subcommand means the Kubernetes API will be used. Arguments after `--` are
 * operands, not flags.
 */
export function needsFromArgs(args: readonly string[]): Needs {
  const end = args.indexOf("--");
  const flags = end === -1 ? args : args.slice(0, end);
  return {
    kube: KUBE_SUBCOMMANDS.includes(flags[0] ?? "") ||
      flags.some((a) =>
        a === "--kube" || a.startsWith("--kube-") || a.startsWith("--kube=") ||
        a.startsWith("--kubeconfig") ||
        /^--(mgmt|remote)-(kubeconfig|context)(=|$)/.test(a)
      ),
  };
}

/** The part of `Deno.permissions` that {@link narrow} uses (injectable for tests). */
export interface PermissionRevoker {
  /** Same contract as `Deno.permissions.revokeSync`. */
  revokeSync(desc: Deno.PermissionDescriptor): Deno.PermissionStatus;
}

/**
 * Revokes, for the rest of the process, everything `mode` never needs. Call it before parsing
 * files or opening connections. Returns the descriptors revoked, for a debug log line.
 *
 * @example
 * ```ts ignore
 * // mod.ts, before loading the mode's module:
 * if (isMode(mode)) narrow(mode, needsFromArgs(rest), Deno.permissions);
 * ```
 */
export function narrow(
  mode: Mode,
  needs: Needs,
  permissions: PermissionRevoker,
): Deno.PermissionDescriptor[] {
  const revoked = revocationsFor(mode, needs);
  for (const desc of revoked) permissions.revokeSync(desc);
  return revoked;
}
