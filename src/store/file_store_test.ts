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

Deno.test("FileSecretStore reads a Kubernetes secret volume: symlinked keys, swapped on rotation", async () => {
  const d = await Deno.makeTempDir();
  try {
    const store = new FileSecretStore(d);
    // What the kubelet writes for a Secret mounted at DIR/relay-server-tls-secret (cert-manager's rotation
    // reaches a pod this way): each key a link into ..data, ..data a link to a timestamped folder.
    const sec = `${d}/relay-server-tls-secret`;
    await Deno.mkdir(`${sec}/..2026_01_01_a`, { recursive: true });
    await Deno.writeTextFile(`${sec}/..2026_01_01_a/tls.crt`, "crt-1");
    await Deno.writeTextFile(`${sec}/..2026_01_01_a/tls.key`, "key-1");
    await Deno.symlink("..2026_01_01_a", `${sec}/..data`);
    await Deno.symlink("..data/tls.crt", `${sec}/tls.crt`);
    await Deno.symlink("..data/tls.key", `${sec}/tls.key`);
    await Deno.symlink("..data/gone", `${sec}/dangling`);
    const dec = new TextDecoder();
    const first = await store.get("relay-server-tls-secret");
    assert(first);
    assertEquals(Object.keys(first.data).sort(), ["tls.crt", "tls.key"]);
    assertEquals(dec.decode(first.data["tls.crt"]), "crt-1");

    // The kubelet's atomic update: a new timestamped folder, then ..data re-pointed by a rename.
    await Deno.mkdir(`${sec}/..2026_02_01_b`);
    await Deno.writeTextFile(`${sec}/..2026_02_01_b/tls.crt`, "crt-2");
    await Deno.writeTextFile(`${sec}/..2026_02_01_b/tls.key`, "key-2");
    await Deno.symlink("..2026_02_01_b", `${sec}/..data_tmp`);
    await Deno.rename(`${sec}/..data_tmp`, `${sec}/..data`);
    const second = await store.get("relay-server-tls-secret");
    assert(second);
    assertEquals(dec.decode(second.data["tls.key"]), "key-2");
    assert(second.version !== first.version, "a rotation changes the version the server's reload watches");

    // A projected volume may link a whole secret folder.
    await Deno.mkdir(`${d}/..projected/relay-root-tls-secret`, { recursive: true });
    await Deno.writeTextFile(`${d}/..projected/relay-root-tls-secret/ca.crt`, "root");
    await Deno.symlink("..projected/relay-root-tls-secret", `${d}/relay-root-tls-secret`);
    assertEquals(await store.list(), ["relay-root-tls-secret", "relay-server-tls-secret"]);
    assertEquals(dec.decode((await store.get("relay-root-tls-secret"))!.data["ca.crt"]), "root");
  } finally {
    await Deno.remove(d, { recursive: true });
  }
});
