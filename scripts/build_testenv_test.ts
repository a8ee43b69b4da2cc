import { assert, assertEquals, assertRejects } from "../src/testing/assert.ts";
import { findGo, GoMissingError, inputHash, kubernetesVersion, ldflags } from "./build_testenv.ts";

Deno.test("kubernetesVersion reads the required k8s.io/kubernetes version from go.mod", async (t) => {
  const cases: [string, string, string | undefined][] = [
    [
      "require block",
      "require (\n\tgo.etcd.io/etcd/server/v3 v3.6.4\n\tk8s.io/kubernetes v1.34.4\n)\n",
      "v1.34.4",
    ],
    [
      "a go.mod that only replaces is refused",
      "replace k8s.io/api => k8s.io/api v0.34.4\n",
      undefined,
    ],
  ];
  for (const [name, goMod, want] of cases) {
    await t.step(name, () => {
      if (want) assertEquals(kubernetesVersion(goMod), want);
      else {
        let threw = false;
        try {
          kubernetesVersion(goMod);
        } catch {
          threw = true;
        }
        assert(threw);
      }
    });
  }
  assertEquals(
    kubernetesVersion(await Deno.readTextFile(new URL("../tests/kube/apiserver/go.mod", import.meta.url))),
    "v1.34.4",
  );
});

Deno.test("ldflags stamp the version kube-apiserver reports", () => {
  const f = ldflags("v1.34.4");
  assert(f.includes("-X k8s.io/component-base/version.gitVersion=v1.34.4"), f);
  assert(f.includes("-X k8s.io/component-base/version.gitMajor=1"), f);
  assert(f.includes("-X k8s.io/component-base/version.gitMinor=34"), f);
});

Deno.test("findGo: $GO, then PATH, then the default install; GoMissingError when none", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    const go = `${dir}/go`;
    await Deno.writeTextFile(go, "#!/bin/sh\n");
    await Deno.chmod(go, 0o755);
    await Deno.mkdir(`${dir}/notexec`);
    await Deno.writeTextFile(`${dir}/notexec/go`, "");
    await t.step("GO wins", async () => assertEquals(await findGo({ GO: go, PATH: "/nope" }, []), go));
    await t.step("PATH entry", async () => assertEquals(await findGo({ PATH: `/nope:${dir}` }, []), go));
    await t.step("non-executable files are skipped", async () => {
      assertEquals(await findGo({ PATH: `${dir}/notexec:${dir}` }, []), go);
    });
    await t.step("default install location", async () => assertEquals(await findGo({ PATH: "" }, [go]), go));
    await t.step("missing", async () => {
      const e = await assertRejects(() => findGo({ PATH: "/nope" }, [`${dir}/none`]), GoMissingError);
      assert(e.message.includes("Kubernetes tests will be skipped"), e.message);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("inputHash changes with go.sum, main.go, the Go version and the flags", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const f of ["go.mod", "go.sum", "main.go"]) await Deno.writeTextFile(`${dir}/${f}`, f);
    const base = await inputHash(dir, "go1.26.8", "-s");
    assertEquals(await inputHash(dir, "go1.26.8", "-s"), base);
    assert(await inputHash(dir, "go1.26.9", "-s") !== base);
    assert(await inputHash(dir, "go1.26.8", "-w") !== base);
    await Deno.writeTextFile(`${dir}/main.go`, "changed");
    assert(await inputHash(dir, "go1.26.8", "-s") !== base);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
