import { FakeClock, systemClock } from "../clock.ts";
import { NotFoundError } from "../errors.ts";
import { memoryLogger, nullLogger } from "../log.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { DirectoryDiscoverySource } from "./directory_discovery.ts";
import { type DiscoveryEvent, objectKey } from "./types.ts";

const svc = (name: string, ns = "apps", extra = "") =>
  `apiVersion: v1\nkind: Service\nmetadata:\n  name: ${name}\n  namespace: ${ns}\nspec:\n  ports: [{port: 80}]${extra}\n`;
const deploy = (name: string) =>
  `apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ${name}, namespace: apps}\n`;

async function tree(files: Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "mr-disc-" });
  for (const [p, text] of Object.entries(files)) {
    await Deno.mkdir(`${root}/${p}`.replace(/\/[^/]+$/, ""), { recursive: true });
    await Deno.writeTextFile(`${root}/${p}`, text);
  }
  return root;
}

function describe(ev: DiscoveryEvent | { type: "resync" }): string {
  if (ev.type === "upsert") return `upsert ${objectKey(ev.object)}`;
  if (ev.type === "delete") return `delete ${ev.key}`;
  return "resync";
}

Deno.test("DirectoryDiscoverySource.snapshot", async (t) => {
  const cases: {
    name: string;
    files: Record<string, string>;
    kinds?: string[];
    want: string[];
    warns: number;
  }[] = [
    {
      name: "nested folders and multi-document files, sorted by key",
      files: { "a/b/x.yaml": svc("s1") + "---\n" + deploy("d1"), "top.yml": svc("s0", "default") },
      want: ["apps/v1|Deployment|apps|d1", "v1|Service|apps|s1", "v1|Service|default|s0"],
      warns: 0,
    },
    {
      name: "kinds filter by kind and by apiVersion/kind",
      files: { "x.yaml": svc("s1") + "---\n" + deploy("d1") },
      kinds: ["apps/v1/Deployment"],
      want: ["apps/v1|Deployment|apps|d1"],
      warns: 0,
    },
    {
      name: "invalid YAML is a warning naming the file, other files still read",
      files: { "bad.yaml": "a: [\n", "good.yaml": svc("s1"), "notes.txt": "ignored", ".hidden.yaml": "x: [" },
      want: ["v1|Service|apps|s1"],
      warns: 1,
    },
    {
      name: "same key in two files: the later path wins",
      files: { "1.yaml": svc("s1"), "2.yaml": svc("s1", "apps", "\n  type: NodePort") },
      want: ["v1|Service|apps|s1"],
      warns: 0,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const root = await tree(c.files);
      const log = memoryLogger();
      const src = new DirectoryDiscoverySource({ root, clock: systemClock, log, kinds: c.kinds });
      const objs = await src.snapshot();
      assertEquals(objs.map(objectKey), c.want);
      const warns = log.lines.filter((l) => l.level === "warn");
      assertEquals(warns.length, c.warns);
      if (c.warns) assertEquals(warns[0].file, "bad.yaml");
      await Deno.remove(root, { recursive: true });
    });
  }
  await t.step("a missing folder is a NotFoundError", async () => {
    const src = new DirectoryDiscoverySource({ root: "/nonexistent/x", clock: systemClock, log: nullLogger });
    await assertRejects(() => src.snapshot(), NotFoundError);
  });
});

Deno.test("DirectoryDiscoverySource.watch with periodic rescans (fake clock, no fs events)", async (t) => {
  const root = await tree({ "a.yaml": svc("s1"), "b.yaml": deploy("d1") });
  const clock = new FakeClock();
  const log = memoryLogger();
  const src = new DirectoryDiscoverySource({ root, clock, log, useFsEvents: false, rescanIntervalMs: 1000 });
  await src.snapshot();
  const ctl = new AbortController();
  const it = src.watch(ctl.signal)[Symbol.asyncIterator]();
  const pending: Promise<IteratorResult<DiscoveryEvent | { type: "resync" }>>[] = [];
  const next = () => {
    const p = it.next();
    pending.push(p);
    return p;
  };
  const steps: { name: string; change: () => Promise<void>; want: string[] }[] = [
    {
      name: "a changed object is one upsert",
      change: () => Deno.writeTextFile(`${root}/a.yaml`, svc("s1", "apps", "\n  type: NodePort")),
      want: ["upsert v1|Service|apps|s1"],
    },
    {
      name: "a removed file deletes its objects, a new file upserts",
      change: async () => {
        await Deno.remove(`${root}/b.yaml`);
        await Deno.mkdir(`${root}/sub`);
        await Deno.writeTextFile(`${root}/sub/c.yaml`, svc("s2"));
      },
      want: ["delete apps/v1|Deployment|apps|d1", "upsert v1|Service|apps|s2"],
    },
    {
      name: "a file turning invalid keeps its last good objects (no deletes), with a warning",
      change: async () => {
        await Deno.writeTextFile(`${root}/a.yaml`, "apiVersion: [\n");
        await Deno.writeTextFile(`${root}/sub/c.yaml`, svc("s2", "apps", "\n  type: LoadBalancer"));
      },
      want: ["upsert v1|Service|apps|s2"],
    },
  ];
  for (const s of steps) {
    await t.step(s.name, async () => {
      const got: string[] = [];
      const first = next();
      await clock.waitForSleepers(1);
      await s.change();
      await clock.advance(1000);
      got.push(describe((await first).value!));
      while (got.length < s.want.length) got.push(describe((await next()).value!));
      assertEquals(got, s.want);
    });
  }
  await t.step("the warning names the broken file", () => {
    assert(log.lines.some((l) => l.level === "warn" && l.file === "a.yaml"));
  });
  await t.step("an unchanged rescan yields nothing; abort ends the stream", async () => {
    const p = next();
    await clock.waitForSleepers(1);
    await clock.advance(1000);
    await clock.waitForSleepers(1);
    ctl.abort();
    assertEquals((await p).done, true);
  });
  await Deno.remove(root, { recursive: true });
});

Deno.test("DirectoryDiscoverySource.watch reacts to file-system events", async () => {
  const root = await tree({ "a.yaml": svc("s1") });
  // A long rescan interval: only a file-system event can produce the change in time.
  const src = new DirectoryDiscoverySource({
    root,
    clock: systemClock,
    log: nullLogger,
    rescanIntervalMs: 600_000,
    debounceMs: 20,
  });
  await src.snapshot();
  const ctl = new AbortController();
  const it = src.watch(ctl.signal)[Symbol.asyncIterator]();
  const first = it.next();
  await new Promise((r) => setTimeout(r, 50));
  await Deno.writeTextFile(`${root}/b.yaml`, deploy("d9"));
  const ev = await first;
  assertEquals(describe(ev.value!), "upsert apps/v1|Deployment|apps|d9");
  ctl.abort();
  assertEquals((await it.next()).done, true);
  await Deno.remove(root, { recursive: true });
});
