import { PreconditionError } from "../errors.ts";
import { nullLogger } from "../log.ts";
import { MemorySecretStore } from "../store/mod.ts";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { ensureServerMaterial, type ServerMaterialOptions } from "./server_material.ts";

const NOW = new Date();
const base = (store = new MemorySecretStore()): ServerMaterialOptions => ({
  store,
  log: nullLogger,
  now: NOW,
  mode: "mtls",
  generateCerts: true,
  disableCa: false,
  generateToken: true,
  serverDnsNames: ["localhost"],
  serverIpAddresses: ["127.0.0.1"],
});

Deno.test("ensureServerMaterial creates what each mode needs", async (t) => {
  const cases: { name: string; opts: Partial<ServerMaterialOptions>; want: string[]; canIssue: boolean }[] = [
    { name: "insecure", opts: { mode: "insecure" }, want: [], canIssue: false },
    {
      name: "tls",
      opts: { mode: "tls" },
      want: [
        "relay-root-ca-key-secret",
        "relay-root-tls-secret",
        "relay-server-tls-secret",
        "relay-identity-token-secret",
      ],
      canIssue: false,
    },
    {
      name: "mtls",
      opts: {},
      want: [
        "relay-root-ca-key-secret",
        "relay-root-tls-secret",
        "relay-tls-signing-secret",
        "relay-server-tls-secret",
        "relay-identity-token-secret",
      ],
      canIssue: true,
    },
    {
      name: "mtls, no CA, no token (bring-your-own client certs)",
      opts: { disableCa: true, generateToken: false },
      want: ["relay-root-ca-key-secret", "relay-root-tls-secret", "relay-server-tls-secret"],
      canIssue: false,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const store = new MemorySecretStore();
      const r = await ensureServerMaterial({ ...base(store), ...c.opts });
      assertEquals(r.created, c.want);
      assertEquals(r.canIssue, c.canIssue);
      assertEquals((await store.list()).sort(), [...c.want].sort());
    });
  }
});

Deno.test("ensureServerMaterial leaves existing material alone and is idempotent", async () => {
  const store = new MemorySecretStore();
  await store.put("relay-identity-token-secret", { token: new TextEncoder().encode("mine") });
  const first = await ensureServerMaterial(base(store));
  assert(!first.created.includes("relay-identity-token-secret"));
  const versions = await Promise.all((await store.list()).map(async (n) => (await store.get(n))!.version));
  const second = await ensureServerMaterial(base(store));
  assertEquals(second.created, []);
  assertEquals(
    await Promise.all((await store.list()).map(async (n) => (await store.get(n))!.version)),
    versions,
  );
  assertEquals(
    new TextDecoder().decode((await store.get("relay-identity-token-secret"))!.data.token),
    "mine",
  );
});

Deno.test("ensureServerMaterial: concurrent starts agree on one set of material", async () => {
  const store = new MemorySecretStore();
  const [a, b] = await Promise.all([ensureServerMaterial(base(store)), ensureServerMaterial(base(store))]);
  assertEquals([...a.created, ...b.created].filter((n) => n === "relay-root-ca-key-secret").length, 1);
  assert(a.canIssue && b.canIssue);
});

Deno.test("ensureServerMaterial refuses to invent what it may not", async (t) => {
  await t.step("generation disabled, nothing there", async () => {
    const e = await assertRejects(
      () => ensureServerMaterial({ ...base(), generateCerts: false }),
      PreconditionError,
    );
    assert(e.message.includes("relay-tls-signing-secret"), e.message);
  });
  await t.step("root without key cannot sign a missing server cert", async () => {
    const full = new MemorySecretStore();
    await ensureServerMaterial(base(full));
    const store = new MemorySecretStore();
    const root = (await full.get("relay-root-tls-secret"))!;
    await store.put("relay-root-tls-secret", { "ca.crt": root.data["ca.crt"] });
    const e = await assertRejects(
      () => ensureServerMaterial({ ...base(store), mode: "tls" }),
      PreconditionError,
    );
    assert(e.message.includes("key of the root CA"), e.message);
  });
});

Deno.test("generated chains pass openssl's strict verification", async () => {
  const store = new MemorySecretStore();
  await ensureServerMaterial(base(store));
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-material-" });
  try {
    const w = async (secret: string, key: string) => {
      const p = `${dir}/${secret}-${key}`;
      await Deno.writeFile(p, (await store.get(secret))!.data[key]);
      return p;
    };
    const root = await w("relay-root-tls-secret", "ca.crt");
    const out = await new Deno.Command("openssl", {
      args: [
        "verify",
        "-x509_strict",
        "-purpose",
        "sslserver",
        "-CAfile",
        root,
        await w("relay-server-tls-secret", "tls.crt"),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    const sig = await new Deno.Command("openssl", {
      args: ["verify", "-x509_strict", "-CAfile", root, await w("relay-tls-signing-secret", "tls.crt")],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(sig.code, 0, new TextDecoder().decode(sig.stderr));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
