#!/usr/bin/env -S deno run
/**
 * meshrelay: one binary, three modes. This file only picks the mode; each mode module parses its
 * own flags, builds its real dependencies and returns an exit code.
 * @module
 */
import process from "node:process";
import { describeError, exitCodeOf } from "./src/errors.ts";
import { VERSION } from "./src/version.ts";

type ModeMain = (args: string[]) => Promise<number>;

// Imported lazily so that `certs` never loads gRPC or the Kubernetes client.
const MODES: Record<string, { summary: string; load: () => Promise<{ main: ModeMain }> }> = {
  server: {
    summary: "run the management relay server (gRPC 9900, metrics 9091)",
    load: () => import("./src/server.ts"),
  },
  agent: {
    summary: "run the workload-cluster relay agent (outbound only)",
    load: () => import("./src/agent.ts"),
  },
  certs: {
    summary: "build, inspect and verify relay and Istio PKI material",
    load: () => import("./src/certs.ts"),
  },
};

function usage(): string {
  const lines = [
    `meshrelay ${VERSION}: a secure, pull-based relay between a Kubernetes management plane and workload clusters`,
    "",
    "Usage: meshrelay <mode> [options]",
    "",
    "Modes:",
    ...Object.entries(MODES).map(([n, m]) => `  ${n.padEnd(8)} ${m.summary}`),
    `  ${"version".padEnd(8)} print the version`,
    "",
    "Run 'meshrelay <mode> --help' for a mode's commands and flags.",
  ];
  return lines.join("\n");
}

/** Dispatches `args` to a mode; returns the process exit code. */
export async function main(args: string[]): Promise<number> {
  const [mode, ...rest] = args;
  if (mode === undefined || mode === "-h" || mode === "--help" || mode === "help") {
    console.log(usage());
    return mode === undefined ? 2 : 0;
  }
  if (mode === "version" || mode === "--version" || mode === "-V") {
    console.log(`meshrelay ${VERSION} (deno ${Deno.version.deno})`);
    return 0;
  }
  const m = MODES[mode];
  if (!m) {
    console.error(`meshrelay: unknown mode "${mode}" (expected server, agent, certs or version)`);
    return 2;
  }
  // Node deprecation notices from inside npm dependencies (the Kubernetes client's `punycode`) are
  // nothing a user can act on, and they would break the one-line error contract on stderr.
  process.noDeprecation = true;
  try {
    return await (await m.load()).main(rest);
  } catch (err) {
    console.error(`meshrelay ${mode}: ${describeError(err)}`);
    return exitCodeOf(err);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
