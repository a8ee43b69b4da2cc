import * as grpc from "@grpc/grpc-js";
import { FakeClock } from "../clock.ts";
import { InvalidInputError } from "../errors.ts";
import { nullLogger } from "../log.ts";
import { type CertificateResponse, IdentityClient, IdentityService } from "../proto/mod.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { channelFor, type ChannelInput, sessionMetadata, splitAddress } from "./client_credentials.ts";
import { ServerTls } from "./server_tls.ts";
import { makeTestPki } from "./testing_pki.ts";

Deno.test("channelFor: IP targets, --authority, and a wrong trust anchor", async (t) => {
  const pki = await makeTestPki(); // server cert SANs: DNS localhost, IP 127.0.0.1
  const other = await makeTestPki();
  const tls = await ServerTls.load({
    store: pki.store,
    clock: new FakeClock(),
    log: nullLogger,
    requestClientCert: true,
  });
  const server = new grpc.Server();
  server.addService(IdentityService, {
    bootstrap: (
      call: grpc.ServerUnaryCall<unknown, CertificateResponse>,
      cb: grpc.sendUnaryData<CertificateResponse>,
    ) =>
      cb(null, {
        certificatePem: String(call.getAuthContext().sslPeerCertificate?.subject.CN ?? "anonymous"),
        chainPem: String(call.metadata.get("x-meshrelay-cluster")[0] ?? ""),
        caPem: "",
        notAfterUnixMs: 0,
        sessionBinding: "",
      }),
    renew: (_c: unknown, cb: grpc.sendUnaryData<CertificateResponse>) =>
      cb({ code: grpc.status.UNIMPLEMENTED }),
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", tls.credentials, (e, p) => e ? rej(e) : res(p))
  );
  const dial = async (
    input: Omit<ChannelInput, "serverAddress"> & { host: string },
    md = new grpc.Metadata(),
  ) => {
    const ch = channelFor({ ...input, serverAddress: `${input.host}:${port}` });
    const c = new IdentityClient(ch.target, ch.credentials, ch.options);
    try {
      return await new Promise<string>((res) =>
        c.bootstrap(
          { token: "", cluster: "", csrPem: "" },
          md,
          { deadline: Date.now() + 5000 },
          (e, r) => res(e ? `error ${e.code}` : `${r.certificatePem}|${r.chainPem}`),
        )
      );
    } finally {
      c.close();
    }
  };
  const client = await pki.client("cluster-1");
  const cases: {
    name: string;
    input: Omit<ChannelInput, "serverAddress"> & { host: string };
    want: string;
  }[] = [
    { name: "DNS name", input: { host: "localhost", rootCaPem: pki.rootPem }, want: "anonymous|" },
    {
      name: "IP address, checked against the IP SAN",
      input: { host: "127.0.0.1", rootCaPem: pki.rootPem },
      want: "anonymous|",
    },
    {
      name: "IP address with --authority",
      input: { host: "127.0.0.1", rootCaPem: pki.rootPem, authority: "localhost" },
      want: "anonymous|",
    },
    {
      name: "--authority the certificate does not name",
      input: { host: "127.0.0.1", rootCaPem: pki.rootPem, authority: "relay.example.com" },
      want: `error ${grpc.status.UNAVAILABLE}`,
    },
    {
      name: "another root CA",
      input: { host: "localhost", rootCaPem: other.rootPem },
      want: `error ${grpc.status.UNAVAILABLE}`,
    },
    {
      name: "mTLS client certificate",
      input: {
        host: "127.0.0.1",
        rootCaPem: pki.rootPem,
        client: { certChainPem: client.chainPem, keyPem: client.keyPem },
      },
      want: "cluster-1|",
    },
  ];
  try {
    for (const c of cases) await t.step(c.name, async () => assertEquals(await dial(c.input), c.want));
    await t.step("session metadata", async () => {
      assertEquals(
        await dial({ host: "localhost", rootCaPem: pki.rootPem }, sessionMetadata("cluster-7", "tok")),
        "anonymous|cluster-7",
      );
    });
  } finally {
    server.forceShutdown();
  }
});

Deno.test("splitAddress", async (t) => {
  const ok: [string, string, number][] = [["localhost:9900", "localhost", 9900], [
    "127.0.0.1:1",
    "127.0.0.1",
    1,
  ], ["[::1]:9900", "::1", 9900]];
  for (const [a, host, port] of ok) await t.step(a, () => assertEquals(splitAddress(a), { host, port }));
  for (const bad of ["localhost", ":9900", "host:0", "host:70000", "::1:9900"]) {
    await t.step(`refuses ${bad}`, () => {
      assertThrows(() => splitAddress(bad), InvalidInputError);
    });
  }
});
