/**
 * Every ```sh block of README.md and docs/*.md is run, in order, one temp directory per file, with
 * `bash -euo pipefail`. Inside the blocks `meshrelay` runs this checkout (`deno run … mod.ts`; the
 * certs mode under `-P=certs`, like the compiled binary's narrowed certs mode), and `deno task …`
 * runs this repo's tasks in the block's directory.
 *
 * Fences:
 * - ```sh           run.
 * - ```sh-notest    not run: needs a real cluster (or other outside infrastructure). Also ```console.
 * - ```sh-pending   not run *yet*: documents a command whose implementation has not landed; reported as
 *                   an ignored step with a message so it is never mistaken for a pass.
 * Lines `deno task test` and `deno task demo` are not run (the first would recurse, the second has its
 * own end-to-end test); a block made only of them is reported as ignored.
 * `npm i -g deno@X` is not run either: it is checked to name the pinned Deno (scripts/check_deno_version.ts).
 */
import { assertEquals } from "../src/testing/assert.ts";
import { PINNED_DENO } from "../scripts/check_deno_version.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** A fenced block found in a Markdown file. */
export interface Block {
  /** 1-based line of the opening fence. */
  line: number;
  /** First word of the info string (`sh`, `sh-notest`, …). */
  lang: string;
  body: string;
}

/** Fenced code blocks of `md`, with the line of their opening fence. Handles ``` and ~~~ fences. */
export function fencedBlocks(md: string): Block[] {
  const lines = md.split("\n");
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)/.exec(lines[i]);
    if (!open) continue;
    const fence = open[1];
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = new RegExp(`^ {0,3}${fence[0]}{${fence.length},}\\s*$`);
      if (close.test(lines[j])) break;
      body.push(lines[j]);
    }
    out.push({ line: i + 1, lang: open[2], body: body.join("\n") });
    i = j;
  }
  return out;
}

const EXCLUDED_LINE = /^\s*deno task (test|demo)\b/;

/** True when every command line of `body` is one this test never runs. */
export function onlyExcluded(body: string): boolean {
  const cmds = body.split("\n").filter((l) => l.trim() !== "" && !l.trim().startsWith("#"));
  return cmds.length > 0 && cmds.every((l) => EXCLUDED_LINE.test(l));
}

/** The bash prelude that gives blocks `meshrelay`, a repo-aware `deno task` and the pinned-npm check. */
export function prelude(repo: string, pinned: string): string {
  const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  return [
    `REPO=${q(repo)}`,
    `meshrelay() {`,
    `  if [ "\${1:-}" = certs ]; then`,
    `    command deno run --quiet --no-prompt --config "$REPO/deno.json" -P=certs "$REPO/mod.ts" "$@"`,
    `  else`,
    `    command deno run --quiet --no-prompt --config "$REPO/deno.json" -A "$REPO/mod.ts" "$@"`,
    `  fi`,
    `}`,
    `deno() {`,
    `  if [ "\${1:-}" = task ]; then`,
    `    case "\${2:-}" in test|demo) echo "docs_test: not running deno task $2 here" >&2; return 0;; esac`,
    `    command deno task --quiet --config "$REPO/deno.json" --cwd "$PWD" "\${@:2}"`,
    `  else command deno "$@"; fi`,
    `}`,
    `npm() {`,
    `  case "$*" in`,
    `    "i -g deno@"*|"install -g deno@"*|"install --global deno@"*)`,
    `      all="$*"; v="\${all##*deno@}"`,
    `      if [ "$v" != ${
      q(pinned)
    } ]; then echo "docs pin deno@$v but the project pins ${pinned}" >&2; return 1; fi`,
    `      return 0;;`,
    `  esac`,
    `  command npm "$@"`,
    `}`,
    `export -f meshrelay deno npm`,
    `export REPO`,
  ].join("\n");
}

async function markdownFiles(): Promise<string[]> {
  const files = ["README.md"];
  try {
    for await (const e of Deno.readDir(`${REPO}/docs`)) {
      if (e.isFile && e.name.endsWith(".md")) files.push(`docs/${e.name}`);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return files.sort((a, b) => a === "README.md" ? -1 : b === "README.md" ? 1 : a.localeCompare(b));
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

Deno.test("fencedBlocks and onlyExcluded", async (t) => {
  await t.step("finds sh blocks with their line numbers; nested fences of other lengths are body", () => {
    const md =
      "# T\n\n```sh\necho hi\n```\n\ntext\n````md\n```sh\nnot a block\n```\n````\n~~~sh-notest\nkubectl get po\n~~~\n";
    assertEquals(fencedBlocks(md), [
      { line: 3, lang: "sh", body: "echo hi" },
      { line: 8, lang: "md", body: "```sh\nnot a block\n```" },
      { line: 13, lang: "sh-notest", body: "kubectl get po" },
    ]);
  });
  await t.step("excluded blocks", () => {
    assertEquals(onlyExcluded("deno task demo\n# comment\ndeno task test"), true);
    assertEquals(onlyExcluded("deno task test\nmeshrelay version"), false);
    assertEquals(onlyExcluded("# only a comment"), false);
  });
});

Deno.test("the prelude's npm check refuses a wrong Deno pin", async () => {
  const run = (script: string) =>
    new Deno.Command("bash", {
      args: ["-euo", "pipefail", "-c", `${prelude(REPO, PINNED_DENO)}\n${script}`],
      stdout: "null",
      stderr: "null",
    }).output();
  assertEquals((await run(`npm i -g deno@${PINNED_DENO}`)).code, 0);
  assertEquals((await run(`npm i -g deno@2.9.4`)).code, 1);
});

Deno.test("README, .ci/run and the test task agree on the pinned Deno", async () => {
  const readme = await Deno.readTextFile(`${REPO}/README.md`);
  const ci = await Deno.readTextFile(`${REPO}/.ci/run`);
  assertEquals(
    [...readme.matchAll(/deno@(\d+\.\d+\.\d+)/g)].map((m) => m[1]).filter((v) => v !== PINNED_DENO),
    [],
  );
  assertEquals(/^PINNED_DENO=(\S+)$/m.exec(ci)?.[1], PINNED_DENO);
  const cfg = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`));
  assertEquals(String(cfg.tasks.test).startsWith("deno run -A scripts/check_deno_version.ts && "), true);
});

Deno.test("README's permission table is deno.json's permission sets", async () => {
  const readme = await Deno.readTextFile(`${REPO}/README.md`);
  const cfg = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`));
  const cell = (v: unknown) =>
    v === true ? "yes" : Array.isArray(v) ? v.map((i) => `\`${i}\``).join(", ") : "no";
  for (const set of ["certs", "server", "agent"]) {
    const row = new RegExp(`^\\| \`${set}\` +\\|(.*)\\|\\s*$`, "m").exec(readme);
    assertEquals(row !== null, true, `README has no permission row for ${set}`);
    const got = row![1].split("|").map((c) => c.trim());
    const want = ["read", "write", "env", "net", "run", "sys", "ffi"].map((k) =>
      cell(cfg.permissions[set][k])
    );
    assertEquals(got, want, `README permission row for ${set}`);
  }
});

Deno.test("every sh example in README.md and docs/*.md runs", async (t) => {
  for (const file of await markdownFiles()) {
    const md = await readIfExists(`${REPO}/${file}`);
    if (md === undefined) {
      console.log(`docs_test: ${file} does not exist yet`);
      continue;
    }
    const blocks = fencedBlocks(md).filter((b) => b.lang === "sh" || b.lang === "sh-pending");
    const dir = await Deno.makeTempDir({ prefix: `meshrelay-docs-${file.replaceAll("/", "_")}-` });
    try {
      for (const b of blocks) {
        const name = `${file}:${b.line}`;
        if (b.lang === "sh-pending") {
          console.log(`docs_test: ${name} is marked sh-pending (implementation not landed); NOT run`);
          await t.step({ name: `${name} (pending)`, ignore: true, fn: () => {} });
          continue;
        }
        if (onlyExcluded(b.body)) {
          await t.step({ name: `${name} (deno task test/demo: run elsewhere)`, ignore: true, fn: () => {} });
          continue;
        }
        await t.step(name, async () => {
          const out = await new Deno.Command("bash", {
            args: ["-euo", "pipefail", "-c", `${prelude(REPO, PINNED_DENO)}\n${b.body}`],
            cwd: dir,
            env: { NO_COLOR: "1" },
            stdin: "null",
            stdout: "piped",
            stderr: "piped",
            signal: AbortSignal.timeout(120_000),
          }).output();
          const dec = new TextDecoder();
          assertEquals(
            out.code,
            0,
            `${name} failed (exit ${out.code})\n--- block ---\n${b.body}\n--- stdout ---\n${
              dec.decode(out.stdout).slice(-3000)
            }\n--- stderr ---\n${dec.decode(out.stderr).slice(-3000)}`,
          );
        });
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});
