/**
 * Certificates for a test API server, made with the openssl CLI: one CA that signs the serving
 * certificate and the client certificates (as envtest does), plus the service-account signing key pair.
 * Everything lives in one directory that the harness deletes on stop.
 *
 * Deliberately independent of src/pki: the test API server must not depend on the code under test.
 * @module
 */

/** Paths of the files {@linkcode createTestPki} wrote. */
export interface TestPki {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  readonly servingCert: string;
  readonly servingKey: string;
  readonly serviceAccountKey: string;
  readonly serviceAccountPub: string;
}

/** A client certificate and key (PEM text). */
export interface ClientCert {
  readonly certPem: string;
  readonly keyPem: string;
}

// Our own openssl config so the result does not depend on the system's openssl.cnf defaults.
const EXTENSIONS = `
[req]
distinguished_name = dn

[dn]

[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash

[serving]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

/** Runs openssl; a failure throws with openssl's own stderr (it never prints key material there). */
async function openssl(cwd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`openssl ${args[0]} failed: ${err}`);
  }
}

async function newKey(dir: string, file: string): Promise<void> {
  await openssl(dir, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file);
}

/** Escapes a value for an openssl `-subj` argument. */
function subjValue(v: string): string {
  if (!/^[-.:@_a-zA-Z0-9 ]+$/.test(v)) throw new Error(`unsupported character in certificate subject "${v}"`);
  return v;
}

async function signLeaf(
  dir: string,
  base: string,
  subject: string,
  section: "serving" | "client",
): Promise<void> {
  await newKey(dir, `${base}.key`);
  await openssl(
    dir,
    "req",
    "-new",
    "-config",
    "extensions.cnf",
    "-key",
    `${base}.key`,
    "-subj",
    subject,
    "-out",
    `${base}.csr`,
  );
  await openssl(
    dir,
    "x509",
    "-req",
    "-in",
    `${base}.csr`,
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-set_serial",
    `0x${crypto.randomUUID().replaceAll("-", "")}`,
    "-days",
    "30",
    "-extfile",
    "extensions.cnf",
    "-extensions",
    section,
    "-out",
    `${base}.crt`,
  );
  await Deno.remove(`${dir}/${base}.csr`);
}

/** Writes the CA, serving certificate and service-account keys into `dir` (which must exist). */
export async function createTestPki(dir: string): Promise<TestPki> {
  await Deno.writeTextFile(`${dir}/extensions.cnf`, EXTENSIONS);
  await Promise.all([newKey(dir, "ca.key"), newKey(dir, "sa.key")]);
  await Promise.all([
    openssl(
      dir,
      "req",
      "-x509",
      "-new",
      "-key",
      "ca.key",
      "-subj",
      "/CN=meshrelay-testenv-ca",
      "-days",
      "30",
      "-config",
      "extensions.cnf",
      "-extensions",
      "ca",
      "-out",
      "ca.crt",
    ),
    openssl(dir, "pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"),
  ]);
  await signLeaf(dir, "serving", "/CN=kube-apiserver", "serving");
  return {
    dir,
    caCert: `${dir}/ca.crt`,
    caKey: `${dir}/ca.key`,
    servingCert: `${dir}/serving.crt`,
    servingKey: `${dir}/serving.key`,
    serviceAccountKey: `${dir}/sa.key`,
    serviceAccountPub: `${dir}/sa.pub`,
  };
}

/**
 * A client certificate for `user` in `groups`, signed by the test CA. The API server takes the CN as the
 * user name and each O as a group (`system:masters` is the RBAC-bypassing admin group).
 */
export async function issueClientCert(pki: TestPki, user: string, groups: string[]): Promise<ClientCert> {
  const subject = [`/CN=${subjValue(user)}`, ...groups.map((g) => `/O=${subjValue(g)}`)].join("");
  const base = `client-${crypto.randomUUID()}`;
  await signLeaf(pki.dir, base, subject, "client");
  const [certPem, keyPem] = await Promise.all([
    Deno.readTextFile(`${pki.dir}/${base}.crt`),
    Deno.readTextFile(`${pki.dir}/${base}.key`),
  ]);
  await Promise.all([Deno.remove(`${pki.dir}/${base}.crt`), Deno.remove(`${pki.dir}/${base}.key`)]);
  return { certPem, keyPem };
}
