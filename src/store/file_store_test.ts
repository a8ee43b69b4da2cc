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

  await t.step("a stale lock left by a crashed writer does not block forever", async () => {
    const s2 = new FileSecretStore(d, { staleLockMs: 0, lockTimeoutMs: 2000 });
    await Deno.writeTextFile(`${d}/.y.lock`, "");
    await s2.put("y", { a: enc.encode("1") });
    assertEquals(new TextDecoder().decode((await s2.get("y"))!.data.a), "1");
  });

  await Deno.remove(d, { recursive: true });
});
