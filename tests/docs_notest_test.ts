/**
 * The ```sh-notest examples (a real cluster, kubectl, a compiled binary: docs_test.ts cannot run them) are
 * still checked against this checkout, so the Kubernetes quick start and the like cannot drift from the code:
 * every `meshrelay …` command names subcommands and flags its `--help` lists, every `deno task` exists in
 * deno.json, and every repository path they use (`kubectl apply -f deploy/…`, `examples/…`, `tests/…`)
 * exists.
 */
import { assert, assertEquals } from "../src/testing/assert.ts";
import { helpText, subcommandsOf } from "./support/help.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const FILES_DIRS = ["docs", "deploy"];

/** The ```sh-notest blocks of `md` with the line of their opening fence. */
export function notestBlocks(md: string): { line: number; body: string }[] {
  const out: { line: number; body: string }[] = [];
  const lines = md.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^\s*(`{3,})sh-notest\s*$/.exec(lines[i]);
    if (!open) continue;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !new RegExp(`^\\s*${open[1]}\\s*$`).test(lines[j]); j++) body.push(lines[j]);
    out.push({ line: i + 1, body: body.join("\n") });
    i = j;
  }
  return out;
}

/**
 * Shell words of each command of a block: continuations joined, comments dropped, `$(…)` as one word, split on
 * `;`, `|`, `&&`, `||`, `&`.
 */
export function commands(body: string): string[][] {
  const joined = body.replace(/\\\n/g, " ").replace(/\$\([^()]*\)/g, "SUBST");
  const out: string[][] = [];
  for (const line of joined.split("\n")) {
    const code = line.replace(/(^|\s)#.*$/, "");
    for (const part of code.split(/\s*(?:;|\|\||&&|\||&)\s*/)) {
      const words = part.trim().split(/\s+/).filter((w) => w !== "")
        .map((w) => w.replace(/^["'[]+|["'\])]+$/g, ""));
      // Leading environment assignments (MESHRELAY_TOKEN="…" meshrelay agent …).
      while (words.length > 0 && /^[A-Z_][A-Z0-9_]*=/.test(words[0])) words.shift();
      if (words.length > 0) out.push(words);
    }
  }
  return out;
}

/** What is wrong with one command of a block, as messages (empty: nothing). */
export async function problems(words: string[], tasks: Set<string>): Promise<string[]> {
  const found: string[] = [];
  const exists = (p: string) => Deno.stat(`${REPO}/${p}`).then(() => true, () => false);
  // Repository paths: what kubectl applies, and examples/ and tests/ anywhere.
  for (const [i, w] of words.entries()) {
    const isPath = (words[i - 1] === "-f" && !w.startsWith("-") && w !== "-") ||
      /^(examples|tests)\//.test(w);
    if (isPath && !await exists(w)) found.push(`path ${w} does not exist`);
  }
  if (words[0] === "deno" && words[1] === "task" && !tasks.has(words[2])) {
    found.push(`deno task ${words[2]} is not in deno.json`);
  }
  if (words[0] === "meshrelay" || words[0] === "./dist/meshrelay") {
    const path: string[] = [];
    let text = await helpText(path);
    for (const w of words.slice(1)) {
      if (w.startsWith("-") || !subcommandsOf(text).includes(w)) break;
      path.push(w);
      text = await helpText(path);
    }
    for (const w of words.slice(1 + path.length)) {
      const flag = /^(--[a-z][a-z0-9-]*)/.exec(w)?.[1];
      if (!flag || flag === "--help") continue;
      if (!new RegExp(`(^|[\\s,])${flag}([\\s,=]|$)`, "m").test(text)) {
        found.push(`meshrelay ${path.join(" ")} has no flag ${flag}`);
      }
    }
  }
  return found;
}

async function markdownFiles(): Promise<string[]> {
  const files = ["README.md"];
  for (const dir of FILES_DIRS) {
    for await (const e of Deno.readDir(`${REPO}/${dir}`)) {
      if (e.isFile && e.name.endsWith(".md")) files.push(`${dir}/${e.name}`);
    }
  }
  return files.sort();
}

Deno.test("commands splits a block into the words of each command", () => {
  assertEquals(
    commands(
      'LB=$(kubectl get svc)\nfor c in a b; do\n  MESHRELAY_TOKEN="$(cat t)" meshrelay certs register \\\n' +
        '    --cluster "$c" [--wait]   # comment\ndone\ncurl -s x | grep y &',
    ),
    [
      ["for", "c", "in", "a", "b"],
      ["do"],
      ["meshrelay", "certs", "register", "--cluster", "$c", "--wait"],
      ["done"],
      ["curl", "-s", "x"],
      ["grep", "y"],
    ],
  );
});

Deno.test("problems finds a missing flag, subcommand path, task and path (the check can fail)", async () => {
  const tasks = new Set(["testenv:build"]);
  assertEquals(await problems(["meshrelay", "certs", "register", "--cluster", "a", "--wait"], tasks), []);
  assertEquals(await problems(["meshrelay", "certs", "register", "--no-such-flag"], tasks), [
    "meshrelay certs register has no flag --no-such-flag",
  ]);
  // A flag of another subcommand is not a flag of this one.
  assertEquals(await problems(["meshrelay", "certs", "deregister", "--wait"], tasks), [
    "meshrelay certs deregister has no flag --wait",
  ]);
  assertEquals(await problems(["kubectl", "apply", "-f", "deploy/nope/"], tasks), [
    "path deploy/nope/ does not exist",
  ]);
  assertEquals(await problems(["deno", "task", "nope"], tasks), ["deno task nope is not in deno.json"]);
  assertEquals(await problems(["kubectl", "rollout", "status", "deploy/meshrelay-server"], tasks), []);
});

Deno.test("sh-notest examples name flags, tasks and paths that exist", async (t) => {
  const tasks = new Set(
    Object.keys((JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`)) as { tasks: object }).tasks),
  );
  let checked = 0;
  for (const file of await markdownFiles()) {
    for (const b of notestBlocks(await Deno.readTextFile(`${REPO}/${file}`))) {
      await t.step(`${file}:${b.line}`, async () => {
        const found: string[] = [];
        for (const words of commands(b.body)) found.push(...await problems(words, tasks));
        assertEquals(found, [], `${file}:${b.line}:\n${b.body}`);
      });
      checked++;
    }
  }
  // The Kubernetes quick start and test instructions are among them.
  assert(checked >= 10, `only ${checked} sh-notest blocks found`);
});
