import { assertEquals, assertMatch } from "../testing/assert.ts";
import { isClusterScoped, parseManifests } from "./manifests.ts";

Deno.test("parseManifests", async (t) => {
  const cases: {
    name: string;
    text: string;
    keys: string[];
    errors: RegExp[];
  }[] = [
    {
      name: "multi-document file with empty documents",
      text: "---\napiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: n}\n---\n---\n# c\n" +
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b, namespace: n}\n",
      keys: ["v1/Service/n/a", "apps/v1/Deployment/n/b"],
      errors: [],
    },
    {
      name: "namespaced kind defaults to default, cluster-scoped stays without",
      text:
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
      keys: ["v1/Service/default/a", "v1/Namespace//n"],
      errors: [],
    },
    {
      name: "a broken document is reported with file and index, others kept",
      text: "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: n}\n---\nb: [\n",
      keys: ["v1/Service/n/a"],
      errors: [/^f\.yaml \(document 2\): /],
    },
    {
      name: "missing fields are rejected one by one",
      text: "kind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: a}\n---\n" +
        "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: S\nmetadata: {name: a, labels: {x: 1}}\n---\n- 1\n",
      keys: [],
      errors: [
        /missing apiVersion/,
        /missing kind/,
        /missing metadata$/,
        /metadata.labels.x is not a string/,
        /not a mapping/,
      ],
    },
    {
      name: "List is flattened",
      text:
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: c, namespace: n}}\n",
      keys: ["v1/ConfigMap/n/c"],
      errors: [],
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const r = parseManifests(c.text, "f.yaml", { defaultNamespace: "default" });
      assertEquals(
        r.objects.map((o) => `${o.apiVersion}/${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`),
        c.keys,
      );
      assertEquals(r.errors.length, c.errors.length, r.errors.join("\n"));
      r.errors.forEach((e, i) => assertMatch(e, c.errors[i]));
    });
  }
  await t.step("no defaulting unless asked", () => {
    const r = parseManifests("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n", "f");
    assertEquals(r.objects[0].metadata.namespace, undefined);
  });
  await t.step("isClusterScoped", () => {
    assertEquals([isClusterScoped("Namespace"), isClusterScoped("Service")], [true, false]);
  });
});

Deno.test("parseManifests surfaces a permission error instead of calling the manifest invalid", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mr-perm-" });
  const script = `${dir}/probe.ts`;
  await Deno.writeTextFile(
    script,
    `import { parseManifests } from "${new URL("./manifests.ts", import.meta.url).href}";\n` +
      `try { parseManifests("a: 1\\n", "f"); console.log("parsed"); }\n` +
      `catch (e) { console.log(e instanceof Deno.errors.NotCapable ? "not-capable" : "other: " + e); }\n`,
  );
  const run = async (perms: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        ...perms,
        "--config",
        new URL("../../deno.json", import.meta.url).pathname,
        script,
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const dec = new TextDecoder();
    return dec.decode(out.stdout).trim() || dec.decode(out.stderr);
  };
  try {
    assertEquals(await run(["-R", "--allow-env=LOG_TOKENS,LOG_STREAM"]), "parsed");
    assertEquals(await run(["-R"]), "not-capable");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
