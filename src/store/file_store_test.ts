import { FileSecretStore } from "./file_store.ts";
import { secretStoreContract } from "./contract_test_suite.ts";
import { assert, assertEquals } from "../testing/assert.ts";

Deno.test("FileSecretStore passes the SecretStore contract", async (t) => {
  const dirs: string[] = [];
  await secretStoreContract(t, async () => {
    const d = await Deno.makeTempDir();
    dirs.push(d);
    return new FileSecretStore(`${d}/store`);
  });
  for (const d of dirs) await Deno.remove(d, { recursive: true });
});

Deno.test("FileSecretStore layout and recovery", async (t) => {
  const d = await Deno.makeTempDir();
  const store = new FileSecretStore(d);
  const enc = new TextEncoder();

  await t.step("one folder per secret, one 0600 file per key", async () => {
    await store.put("relay-identity-token-secret", { token: enc.encode("t0k") });
    const st = await Deno.stat(`${d}/relay-identity-token-secret/token`);
    assertEquals(st.mode! & 0o777, 0o600);
    assertEquals(await Deno.readTextFile(`${d}/relay-identity-token-secret/token`), "t0k");
  });

  await t.step("a folder written by hand reads as a secret", async () => {
    await Deno.mkdir(`${d}/relay-root-tls-secret`);
    await Deno.writeTextFile(`${d}/relay-root-tls-secret/ca.crt`, "pem");
    const s = await store.get("relay-root-tls-secret");
    assert(s);
    assertEquals(new TextDecoder().decode(s.data["ca.crt"]), "pem");
  });

  await t.step("a swap interrupted between renames is repaired on read", async () => {
    await store.put("x", { a: enc.encode("old") });
    // Simulate a crash after the old folder was moved aside and before the new one was moved in.
    await Deno.rename(`${d}/x`, `${d}/.x.old-deadbeef`);
    await Deno.mkdir(`${d}/.x.tmp-cafe`);
    const s = await store.get("x");
    assertEquals(new TextDecoder().decode(s!.data.a), "old");
    const names = [];
    for await (const e of Deno.readDir(d)) names.push(e.name);
    assert(!names.some((n) => n.startsWith(".x.")), names.join(","));
  });

  await t.step("a put whose old folder cannot be removed still succeeds, with the new data", async (st) => {
    await store.put("z", { a: enc.encode("old") });
    const pinned = await pinFile(d, "z", "a");
    if (!pinned) {
      await st.step({ name: "needs chattr +i (root) or chmod (non-root)", ignore: true, fn: () => {} });
      return;
    }
    try {
      const s = await store.put("z", { a: enc.encode("new") });
      assertEquals(new TextDecoder().decode(s.data.a), "new");
      assertEquals(await Deno.readTextFile(`${d}/z/a`), "new");
    } finally {
      await pinned.release();
    }
    // The leftover is dropped by the next put once it can be.
    await store.put("z", { a: enc.encode("newer") });
    const names = [];
    for await (const e of Deno.readDir(d)) names.push(e.name);
    assert(!names.some((n) => n.startsWith(".z.")), names.join(","));
  });

  await t.step("a stale lock left by a crashed writer does not block forever", async () => {
    const s2 = new FileSecretStore(d, { staleLockMs: 0, lockTimeoutMs: 2000 });
    await Deno.writeTextFile(`${d}/.y.lock`, "");
    await s2.put("y", { a: enc.encode("1") });
    assertEquals(new TextDecoder().decode((await s2.get("y"))!.data.a), "1");
  });

  await Deno.remove(d, { recursive: true });
});

/**
 * Makes the file `key` of secret folder `name` under `root` impossible to delete: `chattr +i` as root
 * (permission bits do not stop root), a read-only folder otherwise. Returns undefined when neither works
 * here. `release` undoes it wherever the store has moved the folder since (`.name.old-…`).
 */
async function pinFile(
  root: string,
  name: string,
  key: string,
): Promise<{ release: () => Promise<void> } | undefined> {
  const chattr = async (flag: string, path: string) => {
    try {
      const out = await new Deno.Command("chattr", { args: [flag, path], stdout: "null", stderr: "null" })
        .output();
      return out.success;
    } catch {
      return false;
    }
  };
  const asRoot = Deno.uid() === 0;
  if (asRoot ? !(await chattr("+i", `${root}/${name}/${key}`)) : false) return undefined;
  if (!asRoot) await Deno.chmod(`${root}/${name}`, 0o555);
  return {
    release: async () => {
      for await (const e of Deno.readDir(root)) {
        if (!e.isDirectory || (e.name !== name && !e.name.startsWith(`.${name}.old-`))) continue;
        if (asRoot) await chattr("-i", `${root}/${e.name}/${key}`);
        else await Deno.chmod(`${root}/${e.name}`, 0o700);
      }
    },
  };
}
