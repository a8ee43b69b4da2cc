/**
 * Regenerates `src/proto/gen/` from the `.proto` sources under `src/proto/` (`deno task proto`).
 * Needs `protoc` (Debian: `apt-get install protobuf-compiler`); the ts-proto plugin comes from npm.
 * `--check` regenerates into a temporary folder and exits 1 when the checked-in code differs.
 * @module
 */

const REPO = new URL("..", import.meta.url).pathname;
const SRC = `${REPO}src/proto`;
const PLUGIN = `${REPO}scripts/protoc-gen-ts_proto`;
/** ts-proto options; changing them changes every generated file. */
export const TS_PROTO_OPTS = [
  "outputServices=grpc-js",
  "env=browser",
  "esModuleInterop=true",
  "importSuffix=.ts",
  "outputJsonMethods=false",
  "forceLong=number",
  "useOptionals=none",
].join(",");

async function protoSources(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${dir}/${rel}`)) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory && r !== "gen") out.push(...await protoSources(dir, r));
    else if (e.isFile && e.name.endsWith(".proto")) out.push(r);
  }
  return out.sort();
}

/** Runs protoc into `outDir`; throws with protoc's message on failure. */
export async function generate(outDir: string): Promise<void> {
  const sources = await protoSources(SRC);
  const cmd = new Deno.Command("protoc", {
    args: [
      `--plugin=protoc-gen-ts_proto=${PLUGIN}`,
      `--ts_proto_out=${outDir}`,
      `--ts_proto_opt=${TS_PROTO_OPTS}`,
      `-I`,
      SRC,
      ...sources,
    ],
    stdout: "inherit",
    stderr: "inherit",
  });
  const { code } = await cmd.output();
  if (code !== 0) throw new Error(`protoc exited with ${code}`);
}

async function files(dir: string, rel = ""): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const e of Deno.readDir(`${dir}/${rel}`)) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) { for (const [k, v] of await files(dir, r)) out.set(k, v); }
    else out.set(r, await Deno.readTextFile(`${dir}/${r}`));
  }
  return out;
}

/** True when `protoc` can be run here. */
export async function haveProtoc(): Promise<boolean> {
  try {
    return (await new Deno.Command("protoc", { args: ["--version"], stdout: "null", stderr: "null" })
      .output())
      .success;
  } catch {
    return false;
  }
}

/** Generated files that differ between the checked-in `src/proto/gen` and a fresh generation. */
export async function staleFiles(): Promise<string[]> {
  const tmp = await Deno.makeTempDir({ prefix: "meshrelay-proto-" });
  try {
    await generate(tmp);
    const fresh = await files(tmp);
    const held = await files(`${SRC}/gen`);
    const names = new Set([...fresh.keys(), ...held.keys()]);
    return [...names].filter((n) => fresh.get(n) !== held.get(n)).sort();
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) {
  if (!await haveProtoc()) {
    console.error("gen_proto: protoc not found (Debian: apt-get install protobuf-compiler)");
    Deno.exit(3);
  }
  if (Deno.args.includes("--check")) {
    const stale = await staleFiles();
    if (stale.length) {
      console.error(`gen_proto: src/proto/gen is stale: ${stale.join(", ")} (run deno task proto)`);
      Deno.exit(1);
    }
    console.log("gen_proto: src/proto/gen is up to date");
  } else {
    await Deno.remove(`${SRC}/gen`, { recursive: true }).catch(() => {});
    await Deno.mkdir(`${SRC}/gen`, { recursive: true });
    await generate(`${SRC}/gen`);
    console.log("gen_proto: regenerated src/proto/gen");
  }
}
