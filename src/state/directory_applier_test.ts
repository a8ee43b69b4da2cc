import { memoryLogger, nullLogger } from "../log.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "../testing/assert.ts";
import { resourceVersionOf } from "./canonical.ts";
import { parseManifests } from "./manifests.ts";
import { APPLIED_STATE_FILE, DirectoryApplier, fileFor, renderObject } from "./directory_applier.ts";
import type { KubeObject, ObjectStatus } from "./types.ts";

const cm = (name: string, v = "1", ns: string | undefined = "apps"): KubeObject => ({
  apiVersion: "v1",
  kind: "ConfigMap",
  metadata: { name, ...(ns ? { namespace: ns } : {}) },
  data: { v },
});
const se = (name: string): KubeObject => ({
  apiVersion: "networking.istio.io/v1",
  kind: "ServiceEntry",
  metadata: { name, namespace: "istio-system" },
  spec: { hosts: [`${name}.x.svc.cluster.local`] },
});
const brief = (s: ObjectStatus[]) => s.map((x) => `${x.state} ${x.key}${x.message ? ` (${x.message})` : ""}`);

async function listFiles(root: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${root}/${rel}`)) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...await listFiles(root, p));
    else out.push(p);
  }
  return out.sort();
}

async function mtimes(root: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const f of await listFiles(root)) out[f] = (await Deno.stat(`${root}/${f}`)).mtime!.getTime();
  return out;
}

Deno.test("fileFor and renderObject", async (t) => {
  const cases: [string, KubeObject, string][] = [
    ["namespaced core", cm("a"), "apps/ConfigMap.v1.a.yaml"],
    ["grouped", se("r"), "istio-system/ServiceEntry.networking.istio.io_v1.r.yaml"],
    [
      "cluster-scoped",
      { apiVersion: "v1", kind: "Namespace", metadata: { name: "n" } },
      "_cluster/Namespace.v1.n.yaml",
    ],
  ];
  for (const [name, o, file] of cases) await t.step(name, () => assertEquals(fileFor(o), { file }));
  const bad: [string, KubeObject, string][] = [
    ["path in name", cm("../../etc/passwd"), "metadata.name"],
    ["dot name", cm(".hidden"), "metadata.name"],
    ["slash in namespace", cm("a", "1", "x/y"), "metadata.namespace"],
    ["bad kind", { ...cm("a"), kind: "Config/Map" }, "kind"],
  ];
  for (const [name, o, field] of bad) {
    await t.step(`refuses ${name}`, () => {
      const r = fileFor(o);
      assert("error" in r);
      assertStringIncludes(r.error, field);
    });
  }
  await t.step("render round-trips and ignores key order", () => {
    const o = se("r");
    const text = renderObject(o);
    assertEquals(parseManifests(text, "x").objects, [o]);
    assertEquals(
      renderObject({ spec: o.spec, metadata: o.metadata, kind: o.kind, apiVersion: o.apiVersion }),
      text,
    );
  });
});

Deno.test("DirectoryApplier apply, idempotence and prune", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "mr-apply-" });
  const applier = new DirectoryApplier({ root, log: nullLogger });
  await t.step("first apply creates one file per object and records them", async () => {
    const s = await applier.apply([se("r"), cm("a"), cm("b")]);
    assertEquals(brief(s), [
      "applied networking.istio.io/v1|ServiceEntry|istio-system|r (created)",
      "applied v1|ConfigMap|apps|a (created)",
      "applied v1|ConfigMap|apps|b (created)",
    ]);
    assertEquals(await listFiles(root), [
      APPLIED_STATE_FILE,
      "apps/ConfigMap.v1.a.yaml",
      "apps/ConfigMap.v1.b.yaml",
      "istio-system/ServiceEntry.networking.istio.io_v1.r.yaml",
    ]);
    assertEquals(parseManifests(await Deno.readTextFile(`${root}/apps/ConfigMap.v1.a.yaml`), "a").objects, [
      cm("a"),
    ]);
    assertEquals([...(await applier.applied()).keys()].length, 3);
  });
  await t.step("applying the same set again changes nothing on disk", async () => {
    const before = await mtimes(root);
    await new Promise((r) => setTimeout(r, 20));
    const s = await applier.apply([cm("b"), cm("a"), se("r")]);
    assertEquals(s.map((x) => x.message), ["unchanged", "unchanged", "unchanged"]);
    assertEquals(await mtimes(root), before);
  });
  await t.step("a foreign file in the folder", async () => {
    await Deno.writeTextFile(`${root}/apps/mine.yaml`, "kept: true\n");
  });
  await t.step("change one, drop two: updated and pruned, foreign file untouched", async () => {
    const s = await applier.apply([cm("a", "2")]);
    assertEquals(brief(s), [
      "pruned networking.istio.io/v1|ServiceEntry|istio-system|r",
      "applied v1|ConfigMap|apps|a (updated)",
      "pruned v1|ConfigMap|apps|b",
    ]);
    assertEquals(await listFiles(root), [APPLIED_STATE_FILE, "apps/ConfigMap.v1.a.yaml", "apps/mine.yaml"]);
    assertEquals(await Deno.readTextFile(`${root}/apps/mine.yaml`), "kept: true\n");
  });
  await t.step("a file it did not write at the target path is refused and left as is", async () => {
    await Deno.writeTextFile(`${root}/apps/ConfigMap.v1.c.yaml`, "someone: else\n");
    const s = await applier.apply([cm("a", "2"), cm("c")]);
    assertEquals(
      brief(s)[1],
      "failed v1|ConfigMap|apps|c (apps/ConfigMap.v1.c.yaml exists and was not written by meshrelay; left untouched)",
    );
    assertEquals(await Deno.readTextFile(`${root}/apps/ConfigMap.v1.c.yaml`), "someone: else\n");
    // Not desired any more: still not ours, so never deleted.
    await applier.apply([cm("a", "2")]);
    assertEquals(await Deno.readTextFile(`${root}/apps/ConfigMap.v1.c.yaml`), "someone: else\n");
  });
  await t.step("an identical file it did not record is adopted, then prunable", async () => {
    await Deno.writeTextFile(`${root}/apps/ConfigMap.v1.d.yaml`, renderObject(cm("d")));
    assertEquals(
      brief(await applier.apply([cm("a", "2"), cm("d")]))[1],
      "applied v1|ConfigMap|apps|d (unchanged)",
    );
    assertEquals(brief(await applier.apply([cm("a", "2")]))[1], "pruned v1|ConfigMap|apps|d");
  });
  await t.step("invalid objects fail alone", async () => {
    const s = await applier.apply([cm("a", "2"), cm("../x")]);
    assertEquals(s.map((x) => x.state), ["failed", "applied"]);
  });
  await t.step("a local edit of an applied file is repaired", async () => {
    await Deno.writeTextFile(`${root}/apps/ConfigMap.v1.a.yaml`, "tampered: true\n");
    const s = await applier.apply([cm("a", "2")]);
    assertEquals(s[0].state, "applied");
    assertEquals(await Deno.readTextFile(`${root}/apps/ConfigMap.v1.a.yaml`), renderObject(cm("a", "2")));
  });
  await t.step("no temporary files are left", async () => {
    assertEquals((await listFiles(root)).filter((f) => f.includes(".tmp-")), []);
  });
  await t.step("concurrent applies run one after the other; the last wins", async () => {
    const [, s2] = await Promise.all([applier.apply([cm("x")]), applier.apply([cm("y")])]);
    assertEquals(brief(s2), ["pruned v1|ConfigMap|apps|x", "applied v1|ConfigMap|apps|y (created)"]);
    assertEquals([...(await applier.applied()).keys()], ["v1|ConfigMap|apps|y"]);
  });
  await t.step("an aborted signal rejects before touching anything", async () => {
    await assertRejects(() => applier.apply([], AbortSignal.abort(new Error("stop"))), Error);
    assertEquals([...(await applier.applied()).keys()], ["v1|ConfigMap|apps|y"]);
  });
  await Deno.remove(root, { recursive: true });
});

Deno.test("DirectoryApplier recovery", async (t) => {
  await t.step(
    "a record left by a crash before the write (empty version, no file) prunes cleanly",
    async () => {
      const root = await Deno.makeTempDir({ prefix: "mr-apply-" });
      await Deno.writeTextFile(
        `${root}/${APPLIED_STATE_FILE}`,
        JSON.stringify({
          format: 1,
          objects: { "v1|ConfigMap|apps|a": { file: "apps/ConfigMap.v1.a.yaml", version: "" } },
        }),
      );
      const applier = new DirectoryApplier({ root, log: nullLogger });
      assertEquals(brief(await applier.apply([])), ["pruned v1|ConfigMap|apps|a"]);
      assertEquals((await applier.applied()).size, 0);
      await Deno.remove(root, { recursive: true });
    },
  );
  await t.step("a record left by a crash after the write lets the file be updated, not refused", async () => {
    const root = await Deno.makeTempDir({ prefix: "mr-apply-" });
    await Deno.mkdir(`${root}/apps`);
    await Deno.writeTextFile(`${root}/apps/ConfigMap.v1.a.yaml`, renderObject(cm("a", "old")));
    await Deno.writeTextFile(
      `${root}/${APPLIED_STATE_FILE}`,
      JSON.stringify({
        format: 1,
        objects: { "v1|ConfigMap|apps|a": { file: "apps/ConfigMap.v1.a.yaml", version: "" } },
      }),
    );
    const applier = new DirectoryApplier({ root, log: nullLogger });
    assertEquals(brief(await applier.apply([cm("a", "new")])), ["applied v1|ConfigMap|apps|a (updated)"]);
    await Deno.remove(root, { recursive: true });
  });
  await t.step("an unreadable record: warning, nothing pruned, no crash", async () => {
    const root = await Deno.makeTempDir({ prefix: "mr-apply-" });
    await Deno.mkdir(`${root}/apps`);
    await Deno.writeTextFile(`${root}/apps/ConfigMap.v1.a.yaml`, renderObject(cm("a")));
    await Deno.writeTextFile(`${root}/${APPLIED_STATE_FILE}`, "{not json");
    const log = memoryLogger();
    const applier = new DirectoryApplier({ root, log });
    assertEquals(await applier.apply([]), []);
    assert(log.lines.some((l) => l.level === "warn" && l.file === APPLIED_STATE_FILE));
    assertEquals(await Deno.readTextFile(`${root}/apps/ConfigMap.v1.a.yaml`), renderObject(cm("a")));
    await Deno.remove(root, { recursive: true });
  });
  await t.step("a path blocked by a directory fails that object only", async () => {
    const root = await Deno.makeTempDir({ prefix: "mr-apply-" });
    await Deno.mkdir(`${root}/apps/ConfigMap.v1.a.yaml`, { recursive: true });
    const applier = new DirectoryApplier({ root, log: nullLogger });
    const s = await applier.apply([cm("a"), cm("b")]);
    assertEquals(s.map((x) => x.state), ["failed", "applied"]);
    await Deno.remove(root, { recursive: true });
  });
});

Deno.test("DirectoryApplier.held returns intact applied objects for resync after a restart", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "mr-apply-" });
  const objs = [cm("a"), cm("b"), se("r"), {
    ...cm("odd"),
    data: { yes: "yes", n: "1.0", e: "", t: "true" },
  }];
  await new DirectoryApplier({ root, log: nullLogger }).apply(objs);
  // A new instance, as after an agent restart.
  const applier = new DirectoryApplier({ root, log: nullLogger });
  await t.step("every object round-trips with its version", async () => {
    const held = await applier.held();
    assertEquals(
      [...held.keys()].sort(),
      objs.map((o) => `${o.apiVersion}|${o.kind}|${o.metadata.namespace}|${o.metadata.name}`).sort(),
    );
    for (const o of objs) {
      const h = held.get(`${o.apiVersion}|${o.kind}|${o.metadata.namespace}|${o.metadata.name}`)!;
      assertEquals(h.object, o);
      assertEquals(h.version, resourceVersionOf(o));
    }
  });
  await t.step("an edited or deleted file is left out (the server will resend it)", async () => {
    await Deno.writeTextFile(`${root}/apps/ConfigMap.v1.a.yaml`, renderObject(cm("a", "edited")));
    await Deno.remove(`${root}/apps/ConfigMap.v1.b.yaml`);
    const held = await applier.held();
    assertEquals(held.has("v1|ConfigMap|apps|a"), false);
    assertEquals(held.has("v1|ConfigMap|apps|b"), false);
    assertEquals(held.size, 2);
  });
  await Deno.remove(root, { recursive: true });
});
