/**
 * `deno task demo` (the README's first command) runs to the end and exits 0, showing each stage:
 * bootstrap → mTLS → discovery → config applied in both clusters → client certificate rotation.
 */
import { assert, assertEquals } from "../src/testing/assert.ts";

const REPO = new URL("..", import.meta.url).pathname;

Deno.test("deno task demo: server + two agents on localhost, every stage, exit 0", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--config", `${REPO}deno.json`, "demo"],
    cwd: REPO,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(180_000),
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assertEquals(out.code, 0, text + new TextDecoder().decode(out.stderr));
  const stages = [
    /client certificate [0-9a-f]+ \(SAN cluster-1\)/,
    /client certificate [0-9a-f]+ \(SAN cluster-2\)/,
    /the server named us "cluster-1" from the certificate's SAN/,
    /the server named us "cluster-2" from the certificate's SAN/,
    /server inventory updates: \d+ pushes/,
    /cluster-1-applied\/:\n(\s+.*\n)*\s+apps\/ConfigMap\.v1\.region-settings\.yaml/,
    /istio-system\/ServiceEntry\.networking\.istio\.io_v1\.reviews-apps-cluster-1\.yaml/,
    /cluster-[12]: [0-9a-f]+ → [0-9a-f]+ \(valid until/,
    /back in sync with the new certificate/,
    /^Done: /m,
  ];
  for (const re of stages) assert(re.test(text), `missing ${re} in:\n${text}`);
  // Nothing left behind.
  assert(!text.includes("kept "));
});
