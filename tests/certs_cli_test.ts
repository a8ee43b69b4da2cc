/**
 * `meshrelay certs` as users run it: a real process (`deno run --no-prompt -P=certs mod.ts certs …`, so
 * also under the mode's narrowed permissions), with openssl as the independent verifier of every chain
 * and kubectl (when installed) as the reference for manifests.
 */
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertStringIncludes,
} from "../src/testing/assert.ts";
import { FileSecretStore } from "../src/store/mod.ts";

const REPO = new URL("..", import.meta.url).pathname;
const dec = new TextDecoder();

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function certs(cwd: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      "--config",
      `${REPO}deno.json`,
      "-P=certs",
      `${REPO}mod.ts`,
      "certs",
      ...args,
    ],
    cwd,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function ok(cwd: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const r = await certs(cwd, args, env);
  assertEquals(r.code, 0, `certs ${args.join(" ")} failed: ${r.stderr}`);
  return r;
}

async function sh(cwd: string, cmd: string, args: string[]): Promise<Run> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped", stdin: "null" })
    .output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** openssl verify; resolves with its output, fails the test when the chain is rejected. */
async function opensslVerify(cwd: string, args: string[]): Promise<void> {
  const r = await sh(cwd, "openssl", ["verify", ...args]);
  assertEquals(r.code, 0, `openssl verify ${args.join(" ")}: ${r.stdout}${r.stderr}`);
}

async function x509Text(cwd: string, file: string): Promise<string> {
  const r = await sh(cwd, "openssl", ["x509", "-in", file, "-noout", "-text"]);
  assertEquals(r.code, 0, r.stderr);
  return r.stdout;
}

/** The public key of a certificate and of a private key must be the same. */
async function assertKeyMatches(cwd: string, crt: string, key: string): Promise<void> {
  const a = await sh(cwd, "openssl", ["x509", "-in", crt, "-noout", "-pubkey"]);
  const b = await sh(cwd, "openssl", ["pkey", "-in", key, "-pubout"]);
  assertEquals(a.stdout, b.stdout, `${crt} and ${key} do not belong together`);
}

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "meshrelay-certs-cli-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function tree(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(prefix ? `${dir}/${prefix}` : dir)) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    out.push(rel);
    if (e.isDirectory) out.push(...await tree(dir, rel));
  }
  return out.sort();
}

const ROOT = "pki/relay-root-tls-secret/ca.crt";
const SIGNING = "pki/relay-tls-signing-secret/tls.crt";

Deno.test("certs init, agent, server: every chain passes openssl verify -x509_strict", async (t) => {
  const cases = [
    { name: "ECDSA defaults (P-384 root, P-256 below)", flags: [], rootKey: "384 bit", leafKey: "256 bit" },
    { name: "RSA-2048", flags: ["--key-algorithm", "rsa-2048"], rootKey: "2048 bit", leafKey: "2048 bit" },
    { name: "Ed25519", flags: ["--key-algorithm", "ed25519"], rootKey: "ED25519", leafKey: "ED25519" },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      await withTmp(async (dir) => {
        await ok(dir, ["init", "--out", "pki", ...c.flags]);
        await ok(dir, ["agent", "--cluster", "cluster1", "--out", "pki", ...c.flags.slice(0, 2)]);
        await ok(dir, [
          "server",
          "--out",
          "byo",
          "--pki",
          "pki",
          "--dns",
          "relay.example.com",
          "--ip",
          "10.1.2.3",
        ]);
        assertEquals(await tree(`${dir}/pki`), [
          "relay-client-tls-secret",
          "relay-client-tls-secret/ca.crt",
          "relay-client-tls-secret/tls.crt",
          "relay-client-tls-secret/tls.key",
          "relay-identity-token-secret",
          "relay-identity-token-secret/token",
          "relay-root-ca.key",
          "relay-root-tls-secret",
          "relay-root-tls-secret/ca.crt",
          "relay-server-tls-secret",
          "relay-server-tls-secret/ca.crt",
          "relay-server-tls-secret/tls.crt",
          "relay-server-tls-secret/tls.key",
          "relay-tls-signing-secret",
          "relay-tls-signing-secret/ca.crt",
          "relay-tls-signing-secret/tls.crt",
          "relay-tls-signing-secret/tls.key",
        ]);
        const strict = ["-x509_strict", "-CAfile", ROOT, "-untrusted", SIGNING];
        await opensslVerify(dir, ["-x509_strict", "-CAfile", ROOT, SIGNING]);
        await opensslVerify(dir, [...strict, "-purpose", "sslserver", "pki/relay-server-tls-secret/tls.crt"]);
        await opensslVerify(dir, [...strict, "-purpose", "sslclient", "pki/relay-client-tls-secret/tls.crt"]);
        await opensslVerify(dir, [...strict, "-purpose", "sslserver", "byo/relay-server-tls-secret/tls.crt"]);
        for (const s of ["relay-tls-signing-secret", "relay-server-tls-secret", "relay-client-tls-secret"]) {
          await assertKeyMatches(dir, `pki/${s}/tls.crt`, `pki/${s}/tls.key`);
          assertEquals(
            await Deno.readTextFile(`${dir}/pki/${s}/ca.crt`),
            await Deno.readTextFile(`${dir}/${ROOT}`),
          );
          assertEquals((await Deno.stat(`${dir}/pki/${s}/tls.key`)).mode! & 0o777, 0o600);
        }
        await assertKeyMatches(dir, ROOT, "pki/relay-root-ca.key");

        const root = await x509Text(dir, ROOT);
        assertStringIncludes(root, "CA:TRUE, pathlen:1");
        assertMatch(root, /Key Usage: critical\n\s+Certificate Sign, CRL Sign/);
        assertStringIncludes(root, "Subject Key Identifier");
        assertStringIncludes(root, c.rootKey);
        const signing = await x509Text(dir, SIGNING);
        assertStringIncludes(signing, "CA:TRUE, pathlen:0");
        assertMatch(signing, /Key Usage: critical\n\s+Certificate Sign, CRL Sign/);
        assertStringIncludes(signing, "Authority Key Identifier");
        const server = await x509Text(dir, "pki/relay-server-tls-secret/tls.crt");
        assertStringIncludes(server, "TLS Web Server Authentication");
        assertStringIncludes(server, "DNS:meshrelay-server.gloo-mesh.svc");
        assertStringIncludes(server, c.leafKey);
        assert(!/Serial Number: 0 /.test(server), "serial must be random, not 0");
        const client = await x509Text(dir, "pki/relay-client-tls-secret/tls.crt");
        assertStringIncludes(client, "TLS Web Client Authentication");
        assertMatch(client, /X509v3 Subject Alternative Name: *\n\s+DNS:cluster1\n/);
        const byo = await x509Text(dir, "byo/relay-server-tls-secret/tls.crt");
        assertStringIncludes(byo, "DNS:relay.example.com, IP Address:10.1.2.3");

        // The folders are what the server and agent read through FileSecretStore.
        const store = new FileSecretStore(`${dir}/pki`);
        const token = dec.decode((await store.get("relay-identity-token-secret"))!.data.token);
        assertMatch(token, /^[A-Za-z0-9_-]{43}$/);
        assertEquals(Object.keys((await store.get("relay-server-tls-secret"))!.data).sort(), [
          "ca.crt",
          "tls.crt",
          "tls.key",
        ]);
      });
    });
  }
});

Deno.test("certs istio: the three architectures as Istio cacerts", async (t) => {
  await withTmp(async (dir) => {
    await ok(dir, ["init", "--out", "pki"]);
    const cacerts = (arch: string, cluster: string) => `${arch}/istio/${cluster}/cacerts`;
    await t.step("separate-intermediates: per-cluster intermediates under the relay root", async () => {
      await ok(dir, ["istio", "--cluster", "c1", "--cluster", "c2", "--out", "pki"]);
      for (const c of ["c1", "c2"]) {
        const d = cacerts("pki", c);
        assertEquals(
          await Deno.readTextFile(`${dir}/${d}/root-cert.pem`),
          await Deno.readTextFile(`${dir}/${ROOT}`),
        );
        const text = await x509Text(dir, `${d}/ca-cert.pem`);
        assertMatch(text, /Subject: O ?= ?Istio, CN ?= ?Intermediate CA, L ?= ?c[12]/);
        assertStringIncludes(text, `L = ${c}`);
        assertStringIncludes(text, "CA:TRUE, pathlen:0");
        assertStringIncludes(text, "DNS:istiod.istio-system.svc");
        const chain = await Deno.readTextFile(`${dir}/${d}/cert-chain.pem`);
        assertEquals(
          chain,
          (await Deno.readTextFile(`${dir}/${d}/ca-cert.pem`)) +
            (await Deno.readTextFile(`${dir}/${d}/root-cert.pem`)),
        );
        await opensslVerify(dir, ["-x509_strict", "-CAfile", `${d}/root-cert.pem`, `${d}/ca-cert.pem`]);
        await assertKeyMatches(dir, `${d}/ca-cert.pem`, `${d}/ca-key.pem`);
      }
    });
    await t.step(
      "separate-roots: an Istio root apart from the relay root, reused by a later run",
      async () => {
        await ok(dir, ["istio", "--cluster", "c3", "--architecture", "separate-roots", "--out", "pki"]);
        const root = await Deno.readTextFile(`${dir}/pki/istio/root-cert.pem`);
        assertNotEquals(root, await Deno.readTextFile(`${dir}/${ROOT}`));
        assertMatch(await x509Text(dir, "pki/istio/root-cert.pem"), /Subject: O ?= ?Istio, CN ?= ?Root CA/);
        await ok(dir, ["istio", "--cluster", "c4", "--architecture", "separate-roots", "--out", "pki"]);
        for (const c of ["c3", "c4"]) {
          const d = cacerts("pki", c);
          assertEquals(await Deno.readTextFile(`${dir}/${d}/root-cert.pem`), root);
          await opensslVerify(dir, [
            "-x509_strict",
            "-CAfile",
            "pki/istio/root-cert.pem",
            `${d}/ca-cert.pem`,
          ]);
        }
        const err = await certs(dir, ["verify", `${cacerts("pki", "c3")}/ca-cert.pem`, "--ca", ROOT]);
        assertEquals(err.code, 1, "an Istio intermediate must not chain to the relay root");
      },
    );
    await t.step("shared: every cluster's cacerts is the relay signing CA", async () => {
      await ok(dir, ["istio", "--cluster", "c5", "--architecture", "shared", "--out", "pki"]);
      const d = cacerts("pki", "c5");
      assertEquals(
        await Deno.readTextFile(`${dir}/${d}/ca-cert.pem`),
        await Deno.readTextFile(`${dir}/${SIGNING}`),
      );
      assertEquals(
        await Deno.readTextFile(`${dir}/${d}/ca-key.pem`),
        await Deno.readTextFile(`${dir}/pki/relay-tls-signing-secret/tls.key`),
      );
      await opensslVerify(dir, ["-x509_strict", "-CAfile", `${d}/root-cert.pem`, `${d}/ca-cert.pem`]);
    });
    await t.step("Ed25519 is refused for Istio, with the reason", async () => {
      const r = await certs(dir, ["istio", "--cluster", "c6", "--key-algorithm", "ed25519", "--out", "pki"]);
      assertEquals(r.code, 2);
      assertStringIncludes(r.stderr, "Istio's plug-in CA supports RSA and ECDSA P-256/P-384 keys only");
      await ok(dir, ["init", "--out", "ed", "--key-algorithm", "ed25519"]);
      const shared = await certs(dir, [
        "istio",
        "--cluster",
        "c6",
        "--architecture",
        "shared",
        "--out",
        "ed",
      ]);
      assertEquals(shared.code, 2);
      assertStringIncludes(shared.stderr, "not ed25519");
      assertEquals((await tree(`${dir}/ed`)).filter((p) => p.startsWith("istio")), []);
    });
  });
});

/** Splits a multi-document YAML stream of our Secrets into (name, namespace, data bytes). */
function parseSecretsYaml(
  text: string,
): { doc: string; name: string; namespace?: string; data: Record<string, Uint8Array> }[] {
  return text.split(/^---\n/m).map((doc) => {
    const name = /^ {2}name: (.+)$/m.exec(doc)![1];
    const namespace = /^ {2}namespace: (.+)$/m.exec(doc)?.[1];
    const data: Record<string, Uint8Array> = {};
    const block = /^data:\n((?: {2}.+\n)+)/m.exec(doc)![1];
    for (const line of block.trimEnd().split("\n")) {
      const [k, v] = line.trim().split(": ");
      data[k] = Uint8Array.from(atob(v.replaceAll('"', "")), (ch) => ch.charCodeAt(0));
    }
    return { doc, name, namespace, data };
  });
}

async function kubectlAvailable(): Promise<boolean> {
  try {
    return (await new Deno.Command("kubectl", {
      args: ["version", "--client"],
      stdout: "null",
      stderr: "null",
    }).output())
      .code === 0;
  } catch {
    return false;
  }
}

Deno.test("certs --format yaml|json: Kubernetes Secrets, data as kubectl create secret generic makes it", async (t) => {
  const haveKubectl = await kubectlAvailable();
  await withTmp(async (dir) => {
    const y = await ok(dir, ["init", "--format", "yaml"]);
    assertEquals(await tree(dir), [], "yaml output writes no files");
    assertStringIncludes(y.stderr, "root CA key was not kept");
    const docs = parseSecretsYaml(y.stdout);
    await t.step("four Secrets in gloo-mesh with the seeds' names and keys", () => {
      assertEquals(docs.map((d) => [d.name, d.namespace, Object.keys(d.data).sort()]), [
        ["relay-root-tls-secret", "gloo-mesh", ["ca.crt"]],
        ["relay-tls-signing-secret", "gloo-mesh", ["ca.crt", "tls.crt", "tls.key"]],
        ["relay-server-tls-secret", "gloo-mesh", ["ca.crt", "tls.crt", "tls.key"]],
        ["relay-identity-token-secret", "gloo-mesh", ["token"]],
      ]);
      for (const d of docs) {
        assert(d.doc.startsWith("apiVersion: v1\ndata:\n"), d.doc.slice(0, 40));
        assertStringIncludes(d.doc, "kind: Secret\nmetadata:\n  creationTimestamp: null\n");
        assert(d.doc.endsWith("type: Opaque\n"));
      }
      assertMatch(dec.decode(docs[2].data["tls.key"]), /^-----BEGIN PRIVATE KEY-----\n/);
    });
    await t.step(
      haveKubectl
        ? "each document equals kubectl's for the same files"
        : "kubectl not installed: NOT compared",
      async () => {
        if (!haveKubectl) {
          console.log(
            "certs_cli_test: kubectl is not installed; yaml was checked against the base64-of-file rule only",
          );
          return;
        }
        for (const d of docs) {
          const files = await Deno.makeTempDir({ dir, prefix: "files-" });
          const args = [
            "create",
            "secret",
            "generic",
            d.name,
            "-n",
            d.namespace!,
            "--type=Opaque",
            "--dry-run=client",
          ];
          for (const [k, v] of Object.entries(d.data)) {
            await Deno.writeFile(`${files}/${k}`, v);
            args.push(`--from-file=${k}=${files}/${k}`);
          }
          const r = await sh(dir, "kubectl", [...args, "-o", "yaml"]);
          assertEquals(r.code, 0, r.stderr);
          assertEquals(d.doc, r.stdout, `${d.name} differs from kubectl's`);
        }
      },
    );
    await t.step("json: a v1 List of the same Secrets; --out writes a 0600 file", async () => {
      const j = await ok(dir, ["init", "--format", "json", "--namespace", "mesh", "--out", "secrets.json"]);
      assertEquals(j.stdout, "");
      assertEquals((await Deno.stat(`${dir}/secrets.json`)).mode! & 0o777, 0o600);
      const list = JSON.parse(await Deno.readTextFile(`${dir}/secrets.json`));
      assertEquals([list.apiVersion, list.kind, list.items.length], ["v1", "List", 4]);
      assertEquals(list.items[2].metadata, {
        name: "relay-server-tls-secret",
        namespace: "mesh",
        creationTimestamp: null,
      });
      assertEquals(list.items[2].type, "Opaque");
      const crt = dec.decode(Uint8Array.from(atob(list.items[2].data["tls.crt"]), (c) => c.charCodeAt(0)));
      assertStringIncludes(crt, "-----BEGIN CERTIFICATE-----");
    });
    await t.step("agent and istio from an init folder, as manifests", async () => {
      await ok(dir, ["init", "--out", "pki"]);
      const a = await ok(dir, ["agent", "--cluster", "c1", "--format", "yaml", "--pki", "pki"]);
      assertEquals(parseSecretsYaml(a.stdout).map((d) => d.name), ["relay-client-tls-secret"]);
      const i = await ok(dir, ["istio", "--cluster", "c1", "--format", "yaml", "--pki", "pki"]);
      const [cacerts] = parseSecretsYaml(i.stdout);
      assertEquals([cacerts.name, cacerts.namespace], ["cacerts", "istio-system"]);
      assertEquals(Object.keys(cacerts.data).sort(), [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
      ]);
      assertEquals((await tree(`${dir}/pki`)).some((p) => p.startsWith("istio")), false);
    });
  });
});

/** Bring-your-own CA keys in every PEM form openssl writes. */
async function makeByoRoot(dir: string): Promise<void> {
  const conf = [
    "[req]",
    "distinguished_name = dn",
    "[dn]",
    "[v3_ca]",
    "basicConstraints = critical, CA:true",
    "keyUsage = critical, keyCertSign, cRLSign",
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid:always",
  ].join("\n");
  await Deno.writeTextFile(`${dir}/ca.conf`, conf);
  const run = async (...args: string[]) => {
    const r = await sh(dir, "openssl", args);
    assertEquals(r.code, 0, `openssl ${args.join(" ")}: ${r.stderr}`);
  };
  await run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pkcs8.key");
  await run("rsa", "-in", "rsa.pkcs8.key", "-traditional", "-out", "rsa.pkcs1.key");
  await run(
    "rsa",
    "-in",
    "rsa.pkcs8.key",
    "-traditional",
    "-aes256",
    "-passout",
    "pass:s3cret",
    "-out",
    "rsa.legacy-enc.key",
  );
  await run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.sec1.key");
  await run(
    "pkcs8",
    "-topk8",
    "-in",
    "ec.sec1.key",
    "-v2",
    "aes-256-cbc",
    "-passout",
    "pass:s3cret",
    "-out",
    "ec.enc.key",
  );
  for (const [key, crt] of [["rsa.pkcs8.key", "rsa.crt"], ["ec.sec1.key", "ec.crt"]]) {
    await run(
      "req",
      "-new",
      "-x509",
      "-key",
      key,
      "-subj",
      "/CN=BYO Root",
      "-days",
      "30",
      "-config",
      "ca.conf",
      "-extensions",
      "v3_ca",
      "-out",
      crt,
    );
  }
}

Deno.test("certs init --ca-cert/--ca-key: bring your own CA in every key form", async (t) => {
  await withTmp(async (dir) => {
    await makeByoRoot(dir);
    const cases = [
      { name: "RSA PKCS#8", crt: "rsa.crt", key: "rsa.pkcs8.key" },
      { name: "RSA PKCS#1", crt: "rsa.crt", key: "rsa.pkcs1.key" },
      { name: "RSA legacy encrypted PEM", crt: "rsa.crt", key: "rsa.legacy-enc.key", pass: "s3cret" },
      { name: "EC SEC1", crt: "ec.crt", key: "ec.sec1.key" },
      { name: "EC encrypted PKCS#8", crt: "ec.crt", key: "ec.enc.key", pass: "s3cret" },
    ];
    for (const [i, c] of cases.entries()) {
      await t.step(c.name, async () => {
        const out = `byo${i}`;
        const env: Record<string, string> = c.pass ? { MESHRELAY_CA_KEY_PASSPHRASE: c.pass } : {};
        await ok(dir, ["init", "--ca-cert", c.crt, "--ca-key", c.key, "--out", out], env);
        assertEquals(
          await Deno.readTextFile(`${dir}/${out}/relay-root-tls-secret/ca.crt`),
          await Deno.readTextFile(`${dir}/${c.crt}`),
        );
        assertEquals(
          (await tree(`${dir}/${out}`)).includes("relay-root-ca.key"),
          false,
          "no root key of ours",
        );
        await opensslVerify(dir, [
          "-x509_strict",
          "-purpose",
          "sslserver",
          "-CAfile",
          c.crt,
          "-untrusted",
          `${out}/relay-tls-signing-secret/tls.crt`,
          `${out}/relay-server-tls-secret/tls.crt`,
        ]);
      });
    }
  });
});

Deno.test("the prerequisites doc's openssl script output imports as bring-your-own material", async (t) => {
  await withTmp(async (dir) => {
    const r = await sh(dir, "bash", [`${REPO}tests/fixtures/seed_relay_certs.sh`]);
    assertEquals(r.code, 0, r.stderr);
    await t.step("its root as --ca-cert/--ca-key for init", async () => {
      await ok(dir, ["init", "--ca-cert", "relay-root.crt", "--ca-key", "relay-root.key", "--out", "pki"]);
      // The seed's root has no keyUsage, so only the non-strict check can pass on a chain under it.
      await opensslVerify(dir, [
        "-purpose",
        "sslserver",
        "-CAfile",
        "relay-root.crt",
        "-untrusted",
        SIGNING,
        "pki/relay-server-tls-secret/tls.crt",
      ]);
    });
    await t.step("its signing cert as --signing-cert/--signing-key for agent", async () => {
      await ok(dir, [
        "agent",
        "--cluster",
        "c1",
        "--signing-cert",
        "relay-tls-signing.crt",
        "--signing-key",
        "relay-tls-signing.key",
        "--root-cert",
        "relay-root.crt",
        "--out",
        "agent",
      ]);
      await opensslVerify(dir, [
        "-purpose",
        "sslclient",
        "-CAfile",
        "relay-root.crt",
        "-untrusted",
        "relay-tls-signing.crt",
        "agent/relay-client-tls-secret/tls.crt",
      ]);
    });
    await t.step("its server cert is inspected and checked", async () => {
      const i = await ok(dir, ["inspect", "relay-server-tls.crt"]);
      assertStringIncludes(i.stdout, "Serial Number: 0 (0x00)");
      await ok(dir, ["check", "."]);
    });
  });
});

Deno.test("bad input: one line, the right exit code, nothing written", async (t) => {
  await withTmp(async (dir) => {
    await ok(dir, ["init", "--out", "pki"]);
    await makeByoRoot(dir);
    await Deno.writeTextFile(
      `${dir}/garbage.pem`,
      "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    await Deno.writeTextFile(`${dir}/file`, "x");
    const server = "pki/relay-server-tls-secret";
    const cases: {
      name: string;
      args: string[];
      code: number;
      says: RegExp;
      env?: Record<string, string>;
    }[] = [
      {
        name: "garbage PEM as CA",
        args: ["init", "--ca-cert", "garbage.pem", "--ca-key", "rsa.pkcs8.key", "--out", "o"],
        code: 2,
        says: /--ca-cert/,
      },
      {
        name: "a certificate where a key is expected",
        args: ["init", "--ca-cert", "rsa.crt", "--ca-key", "rsa.crt", "--out", "o"],
        code: 2,
        says: /--ca-key: contains a certificate, not a private key/,
      },
      {
        name: "a leaf used as issuer",
        args: ["init", "--ca-cert", `${server}/tls.crt`, "--ca-key", `${server}/tls.key`, "--out", "o"],
        code: 2,
        says: /CA/,
      },
      {
        name: "a key that does not match",
        args: ["init", "--ca-cert", "rsa.crt", "--ca-key", "ec.sec1.key", "--out", "o"],
        code: 2,
        says: /--ca-key: the key does not belong to the certificate in --ca-cert$/,
      },
      {
        name: "encrypted key without passphrase",
        args: ["init", "--ca-cert", "ec.crt", "--ca-key", "ec.enc.key", "--out", "o"],
        code: 2,
        says: /MESHRELAY_CA_KEY_PASSPHRASE/,
      },
      {
        name: "wrong passphrase",
        args: ["init", "--ca-cert", "ec.crt", "--ca-key", "ec.enc.key", "--out", "o"],
        env: { MESHRELAY_CA_KEY_PASSPHRASE: "nope" },
        code: 2,
        says: /passphrase/,
      },
      {
        name: "missing CA file",
        args: ["init", "--ca-cert", "none.crt", "--ca-key", "none.key", "--out", "o"],
        code: 2,
        says: /--ca-cert none.crt: no such file/,
      },
      {
        name: "--out under a regular file",
        args: ["init", "--out", "file/pki"],
        code: 2,
        says: /not a directory/,
      },
      { name: "--out is a regular file", args: ["init", "--out", "file"], code: 2, says: /not a directory/ },
      {
        name: "--out of yaml in a missing folder",
        args: ["init", "--format", "yaml", "--out", "nodir/x.yaml"],
        code: 2,
        says: /not an existing directory/,
      },
      {
        name: "existing material without --force",
        args: ["init", "--out", "pki"],
        code: 1,
        says: /already exist.*--force/,
      },
      {
        name: "agent without a signing CA",
        args: ["agent", "--cluster", "c1", "--out", "o"],
        code: 2,
        says: /relay-tls-signing-secret/,
      },
      {
        name: "agent with an invalid cluster name",
        args: ["agent", "--cluster", "Bad_Name", "--out", "pki"],
        code: 2,
        says: /DNS label/,
      },
      { name: "unknown flag", args: ["init", "--out", "o", "--bogus"], code: 2, says: /unknown option/ },
      { name: "missing required flag", args: ["agent", "--out", "o"], code: 2, says: /--cluster/ },
      {
        name: "bad --days",
        args: ["init", "--out", "o", "--days-root", "ten"],
        code: 2,
        says: /positive whole number/,
      },
      {
        name: "bad --key-algorithm",
        args: ["init", "--out", "o", "--key-algorithm", "dsa"],
        code: 2,
        says: /ecdsa-p256/,
      },
      {
        name: "yaml with two clusters",
        args: ["istio", "--cluster", "a", "--cluster", "b", "--format", "yaml", "--pki", "pki"],
        code: 2,
        says: /one --cluster/,
      },
      {
        name: "verify garbage",
        args: ["verify", "garbage.pem", "--ca", "pki/relay-root-tls-secret/ca.crt"],
        code: 2,
        says: /CERT/,
      },
      {
        name: "inspect a key",
        args: ["inspect", `${server}/tls.key`],
        code: 2,
        says: /private key, not a certificate/,
      },
      {
        name: "check a folder without certificates",
        args: ["check", "pki/relay-identity-token-secret"],
        code: 2,
        says: /no certificate/,
      },
    ];
    const before = await tree(dir);
    for (const c of cases) {
      await t.step(c.name, async () => {
        const r = await certs(dir, c.args, c.env);
        const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
        assertEquals(r.code, c.code, `${c.name}: ${r.stderr}`);
        assertEquals(lines.length, 1, `${c.name}: expected one line, got:\n${r.stderr}`);
        assertMatch(lines[0], /^meshrelay certs: /);
        assertMatch(lines[0], c.says);
        assert(!/-----BEGIN|\n\s+at /.test(r.stderr), `${c.name}: leaked PEM or a stack trace`);
        assertEquals(r.stdout, "");
        assertEquals(await tree(dir), before, `${c.name}: left files behind`);
      });
    }
  });
});

Deno.test("a failure after --root-key-out puts back the key file --force was replacing", async () => {
  await withTmp(async (dir) => {
    await ok(dir, ["init", "--out", "pki", "--root-key-out", "root.key"]);
    const key = await Deno.readTextFile(`${dir}/root.key`);
    // A secret folder that is now a file: preflight passes with --force, writing the secrets fails.
    await Deno.remove(`${dir}/pki/relay-server-tls-secret`, { recursive: true });
    await Deno.writeTextFile(`${dir}/pki/relay-server-tls-secret`, "not a folder");
    const before = await tree(dir);
    const r = await certs(dir, ["init", "--force", "--out", "pki", "--root-key-out", "root.key"]);
    assertNotEquals(r.code, 0);
    assertMatch(r.stderr.trim(), /^meshrelay certs: .*nothing was changed$/);
    assertEquals(await tree(dir), before);
    assertEquals(await Deno.readTextFile(`${dir}/root.key`), key, "the root key it was replacing is gone");
  });
});

Deno.test("certs verify and check: exit codes and reasons", async (t) => {
  await withTmp(async (dir) => {
    await ok(dir, ["init", "--out", "pki", "--days-server", "30"]);
    const leaf = "pki/relay-server-tls-secret/tls.crt";
    const verify: { name: string; args: string[]; code: number; reason?: string }[] = [
      {
        name: "valid for its name",
        args: ["--purpose", "server", "--dns", "meshrelay-server.gloo-mesh"],
        code: 0,
      },
      { name: "wildcard name", args: ["--dns", "anything.gloo-mesh"], code: 0 },
      { name: "wrong purpose", args: ["--purpose", "client"], code: 1, reason: "eku" },
      { name: "wrong name", args: ["--dns", "evil.example.com"], code: 1, reason: "hostname" },
      { name: "after expiry", args: ["--at", "2099-01-01T00:00:00Z"], code: 1, reason: "expired" },
      { name: "before issue", args: ["--at", "2000-01-01T00:00:00Z"], code: 1, reason: "not_yet_valid" },
      { name: "wrong root", args: ["--ca", "pki/relay-tls-signing-secret/tls.key"], code: 2 },
    ];
    for (const v of verify) {
      await t.step(`verify: ${v.name}`, async () => {
        const r = await certs(dir, ["verify", leaf, "--ca", "pki/relay-root-tls-secret/ca.crt", ...v.args]);
        assertEquals(r.code, v.code, r.stderr);
        if (v.reason) {
          assertEquals(r.stderr.trim().split("\n").length, 1);
          assertStringIncludes(r.stderr, `INVALID (${v.reason})`);
        }
      });
    }
    await t.step("verify: a chain from another root is unknown_issuer", async () => {
      await ok(dir, ["init", "--out", "other"]);
      const r = await certs(dir, ["verify", leaf, "--ca", "other/relay-root-tls-secret/ca.crt"]);
      assertEquals(r.code, 1);
      assertStringIncludes(r.stderr, "INVALID (unknown_issuer)");
    });
    const now = Date.now();
    const at = (days: number) => new Date(now + days * 86_400_000).toISOString();
    const check = [
      { name: "fresh: all ok", at: at(0), code: 0, status: "ok" },
      { name: "server past 2/3 of 30 days: renew", at: at(21), code: 1, status: "renew" },
      { name: "server past its end: expired", at: at(31), code: 3, status: "expired" },
    ];
    for (const c of check) {
      await t.step(`check: ${c.name}`, async () => {
        const r = await certs(dir, ["check", "pki", "--at", c.at, "--json"]);
        assertEquals(r.code, c.code, r.stderr);
        const items = JSON.parse(r.stdout) as { subject: string; status: string; paths: string[] }[];
        assertEquals(items.length, 3, "root, signing CA and server, each once");
        assertEquals(items.find((i) => i.subject.startsWith("CN=meshrelay-server"))?.status, c.status);
      });
    }
    await t.step("check: --warn-fraction", async () => {
      assertEquals((await certs(dir, ["check", "pki", "--at", at(21), "--warn-fraction", "0.9"])).code, 0);
      // --help states the default as people say it, and lists the exit codes check really returns.
      const help = (await ok(dir, ["check", "--help"])).stdout.replace(/\s+/g, " ");
      assertStringIncludes(help, "(default: 2/3)");
      assertStringIncludes(help, "1 something is due for renewal");
      assertStringIncludes(help, "3 something has expired");
    });
  });
});

Deno.test("certs progress: a line per step with --verbose, quiet in a pipe without it", async () => {
  await withTmp(async (dir) => {
    const quiet = await ok(dir, ["init", "--out", "a"]);
    assertEquals(quiet.stderr.trim().split("\n").length, 1, quiet.stderr);
    assertStringIncludes(quiet.stderr, "wrote a/relay-root-tls-secret");
    const verbose = await ok(dir, ["init", "--out", "b", "--verbose"]);
    for (const step of ["root CA key (ecdsa-p384)", "signing CA key (ecdsa-p256)", "server certificate"]) {
      assertMatch(verbose.stderr, new RegExp(`${step.replace(/[()]/g, "\\$&")} \\.\\.\\. done \\(\\d`));
    }
  });
});
