import { AlreadyExistsError, InvalidInputError } from "../errors.ts";
import { FileSecretStore } from "../store/mod.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import {
  type OutputPlan,
  preflightDir,
  writeFileAtomic,
  writeFileUndoable,
  writePlanToDir,
} from "./output.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

const PLAN: OutputPlan = {
  secrets: [
    { name: "relay-root-tls-secret", data: { "ca.crt": enc.encode("root") } },
    { name: "relay-server-tls-secret", data: { "tls.crt": enc.encode("crt"), "tls.key": enc.encode("key") } },
    { storeDir: "istio/cluster1", name: "cacerts", data: { "ca-cert.pem": enc.encode("ica") } },
  ],
  files: [{ path: "relay-root-ca.key", data: enc.encode("rootkey") }],
};

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-out-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Every entry under `dir`, relative, sorted (hidden staging or temp leftovers would show up here). */
async function tree(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${dir}/${prefix}`)) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    out.push(rel);
    if (e.isDirectory) out.push(...await tree(dir, rel));
  }
  return out.sort();
}

Deno.test("writePlanToDir", async (t) => {
  await t.step(
    "into a new nested DIR: everything, readable by FileSecretStore, keys 0600, no leftovers",
    async () => {
      await withTmp(async (tmp) => {
        const out = `${tmp}/a/pki`;
        const written = await writePlanToDir(out, PLAN, { force: false });
        assertEquals(written.length, 4);
        const store = new FileSecretStore(out);
        assertEquals(await store.list(), ["istio", "relay-root-tls-secret", "relay-server-tls-secret"]);
        assertEquals(dec.decode((await store.get("relay-server-tls-secret"))!.data["tls.key"]), "key");
        const istio = await new FileSecretStore(`${out}/istio/cluster1`).get("cacerts");
        assertEquals(dec.decode(istio!.data["ca-cert.pem"]), "ica");
        assertEquals((await Deno.stat(`${out}/relay-server-tls-secret/tls.key`)).mode! & 0o777, 0o600);
        assertEquals((await Deno.stat(`${out}/relay-root-ca.key`)).mode! & 0o777, 0o600);
        assertEquals((await Deno.stat(out)).mode! & 0o777, 0o700);
        assertEquals(await tree(`${tmp}/a`), [
          "pki",
          "pki/istio",
          "pki/istio/cluster1",
          "pki/istio/cluster1/cacerts",
          "pki/istio/cluster1/cacerts/ca-cert.pem",
          "pki/relay-root-ca.key",
          "pki/relay-root-tls-secret",
          "pki/relay-root-tls-secret/ca.crt",
          "pki/relay-server-tls-secret",
          "pki/relay-server-tls-secret/tls.crt",
          "pki/relay-server-tls-secret/tls.key",
        ]);
      });
    },
  );

  await t.step(
    "into an existing DIR: refuses existing material without force and changes nothing",
    async () => {
      await withTmp(async (out) => {
        await writePlanToDir(out, { secrets: [PLAN.secrets[1]] }, { force: false });
        const before = await tree(out);
        await assertRejects(() => writePlanToDir(out, PLAN, { force: false }), AlreadyExistsError);
        assertEquals(await tree(out), before);
        assertEquals(await Deno.readTextFile(`${out}/relay-server-tls-secret/tls.key`), "key");
      });
    },
  );

  await t.step("force replaces, and a failure part-way undoes what was already swapped in", async () => {
    await withTmp(async (out) => {
      await writePlanToDir(out, PLAN, { force: false });
      const before = await tree(out);
      const bad: OutputPlan = {
        secrets: [
          { name: "relay-root-tls-secret", data: { "ca.crt": enc.encode("NEW") } },
          { storeDir: "istio/cluster2", name: "cacerts", data: { "ca-cert.pem": enc.encode("x") } },
          { name: "Not_A_Valid_Name", data: { a: enc.encode("x") } },
        ],
      };
      await assertRejects(() => writePlanToDir(out, bad, { force: true }), InvalidInputError);
      assertEquals(await tree(out), before);
      assertEquals(await Deno.readTextFile(`${out}/relay-root-tls-secret/ca.crt`), "root");
      await writePlanToDir(out, { secrets: [bad.secrets[0]] }, { force: true });
      assertEquals(await Deno.readTextFile(`${out}/relay-root-tls-secret/ca.crt`), "NEW");
    });
  });

  await t.step("a failure while staging a new DIR leaves nothing at all", async () => {
    await withTmp(async (tmp) => {
      const bad: OutputPlan = { secrets: [PLAN.secrets[0], { name: "Bad_Name", data: {} }] };
      await assertRejects(() => writePlanToDir(`${tmp}/pki`, bad, { force: false }), InvalidInputError);
      await assertRejects(
        () => writePlanToDir(`${tmp}/new/parents/pki`, bad, { force: false }),
        InvalidInputError,
      );
      assertEquals(await tree(tmp), []);
    });
  });
});

Deno.test("preflightDir", async (t) => {
  const targets = { secrets: [{ name: "relay-root-tls-secret" }], files: ["relay-root-ca.key"] };
  const cases: {
    name: string;
    setup: (tmp: string) => Promise<string>;
    force?: boolean;
    err?: new (msg: string) => Error;
  }[] = [
    { name: "missing nested DIR is fine", setup: (tmp) => Promise.resolve(`${tmp}/x/y/pki`) },
    { name: "empty existing DIR is fine", setup: (tmp) => Promise.resolve(tmp) },
    {
      name: "DIR is a file",
      setup: async (tmp) => (await Deno.writeTextFile(`${tmp}/f`, ""), `${tmp}/f`),
      err: InvalidInputError,
    },
    {
      name: "a parent is a file",
      setup: async (tmp) => (await Deno.writeTextFile(`${tmp}/f`, ""), `${tmp}/f/pki`),
      err: InvalidInputError,
    },
    {
      name: "existing secret folder without force",
      setup: async (tmp) => (await Deno.mkdir(`${tmp}/relay-root-tls-secret`), tmp),
      err: AlreadyExistsError,
    },
    {
      name: "existing key file without force",
      setup: async (tmp) => (await Deno.writeTextFile(`${tmp}/relay-root-ca.key`, ""), tmp),
      err: AlreadyExistsError,
    },
    {
      name: "existing material with force",
      setup: async (tmp) => (await Deno.mkdir(`${tmp}/relay-root-tls-secret`), tmp),
      force: true,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      await withTmp(async (tmp) => {
        const out = await c.setup(tmp);
        const before = await tree(tmp);
        if (c.err) await assertRejects(() => preflightDir(out, targets, c.force ?? false), c.err);
        else await preflightDir(out, targets, c.force ?? false);
        assertEquals(await tree(tmp), before, "preflight must not leave anything behind");
      });
    });
  }
});

Deno.test("writeFileAtomic refuses to replace unless asked", async () => {
  await withTmp(async (tmp) => {
    await writeFileAtomic(`${tmp}/m.yaml`, enc.encode("a"));
    await assertRejects(() => writeFileAtomic(`${tmp}/m.yaml`, enc.encode("b")), AlreadyExistsError);
    await writeFileAtomic(`${tmp}/m.yaml`, enc.encode("c"), { overwrite: true });
    assertEquals(await Deno.readTextFile(`${tmp}/m.yaml`), "c");
    assertEquals((await Deno.stat(`${tmp}/m.yaml`)).mode! & 0o777, 0o600);
    assert((await tree(tmp)).length === 1);
  });
});

Deno.test("writeFileUndoable: undo puts back the replaced file, or removes a new one", async (t) => {
  await t.step("replaced (overwrite): old content and mode back", async () => {
    await withTmp(async (tmp) => {
      await Deno.writeTextFile(`${tmp}/root.key`, "OLD KEY", { mode: 0o400 });
      await Deno.chmod(`${tmp}/root.key`, 0o400);
      const undo = await writeFileUndoable(`${tmp}/root.key`, enc.encode("NEW KEY"), { overwrite: true });
      assertEquals(await Deno.readTextFile(`${tmp}/root.key`), "NEW KEY");
      await undo();
      assertEquals(await Deno.readTextFile(`${tmp}/root.key`), "OLD KEY");
      assertEquals((await Deno.stat(`${tmp}/root.key`)).mode! & 0o777, 0o400);
      assertEquals(await tree(tmp), ["root.key"]);
    });
  });
  await t.step("new: removed", async () => {
    await withTmp(async (tmp) => {
      const undo = await writeFileUndoable(`${tmp}/root.key`, enc.encode("NEW KEY"));
      assertEquals((await Deno.stat(`${tmp}/root.key`)).mode! & 0o777, 0o600);
      await undo();
      assertEquals(await tree(tmp), []);
    });
  });
  await t.step("existing without overwrite: refused, untouched", async () => {
    await withTmp(async (tmp) => {
      await Deno.writeTextFile(`${tmp}/root.key`, "OLD KEY");
      await assertRejects(() => writeFileUndoable(`${tmp}/root.key`, enc.encode("x")), AlreadyExistsError);
      assertEquals(await Deno.readTextFile(`${tmp}/root.key`), "OLD KEY");
    });
  });
});
