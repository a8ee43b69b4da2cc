import * as grpc from "@grpc/grpc-js";
import { FakeClock } from "../clock.ts";
import { AuthenticationError, PermissionDeniedError } from "../errors.ts";
import { MemorySecretStore } from "../store/mod.ts";
import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "../testing/assert.ts";
import { MetricsRegistry } from "./metrics.ts";
import type { IdentifiableCall, Identify } from "./peer_identity.ts";
import { RevocationList } from "./revocation.ts";
import {
  type BoundCertificate,
  identifyWithBinding,
  SESSION_BINDING_METADATA,
  SessionBindings,
} from "./session_binding.ts";

const PEER = "127.0.0.1:40001";
const cert = (clock: FakeClock, cluster = "cluster-1", serial = "0a1b"): BoundCertificate => ({
  cluster,
  serial,
  notBefore: clock.now(),
  notAfter: new Date(clock.now().getTime() + 3_600_000),
});

async function rejectsWith(
  fn: () => Promise<unknown>,
  cls: typeof AuthenticationError | typeof PermissionDeniedError,
  text: string,
): Promise<void> {
  assertStringIncludes((await assertRejects(fn, cls)).message, text);
}

Deno.test("SessionBindings: one use, from the connection it was issued on, within its lifetime", async (t) => {
  const cases: {
    name: string;
    act: (b: SessionBindings, clock: FakeClock, binding: string) => Promise<unknown> | unknown;
    refused?: string;
  }[] = [
    { name: "redeemed from the same connection", act: (b, _c, x) => b.redeem(x, PEER) },
    {
      name: "a second use is refused",
      act: (b, _c, x) => (b.redeem(x, PEER), b.redeem(x, PEER)),
      refused: "unknown or already used",
    },
    {
      name: "another connection is refused, and the binding is spent",
      act: (b, _c, x) => {
        assertThrows(() => b.redeem(x, "127.0.0.1:40002"), AuthenticationError);
        return b.redeem(x, PEER);
      },
      refused: "unknown or already used",
    },
    {
      name: "too late is refused",
      act: async (b, c, x) => (await c.advance(60_000), b.redeem(x, PEER)),
      refused: "expired",
    },
    { name: "just in time is taken", act: async (b, c, x) => (await c.advance(59_999), b.redeem(x, PEER)) },
    { name: "a guess is refused", act: (b) => b.redeem("A".repeat(43), PEER), refused: "unknown" },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const clock = new FakeClock();
      const b = new SessionBindings({ clock });
      const issued = cert(clock);
      const binding = b.issue(issued, PEER);
      assert(/^[A-Za-z0-9_-]{43}$/.test(binding), "256 bits, base64url");
      if (c.refused) {
        const e = await assertRejects(async () => await c.act(b, clock, binding), AuthenticationError);
        assertStringIncludes(e.message, c.refused);
        assert(!e.message.includes(binding), "the message names no secret");
      } else {
        assertEquals(await c.act(b, clock, binding), issued);
      }
    });
  }
  await t.step("a binding for a certificate that has since expired is refused", () => {
    const clock = new FakeClock();
    const b = new SessionBindings({ clock, ttlMs: 10 * 3_600_000 });
    const x = b.issue(cert(clock), PEER);
    clock.advance(3_600_000);
    const e = assertThrows(() => b.redeem(x, PEER), AuthenticationError);
    assertStringIncludes(e.message, "certificate has expired");
  });
  await t.step("the table is bounded: the oldest unredeemed binding goes first", () => {
    const clock = new FakeClock();
    const b = new SessionBindings({ clock, maxEntries: 2 });
    const [x1, x2, x3] = ["a", "b", "c"].map((s) => b.issue(cert(clock, `cluster-${s}`), PEER));
    assertEquals(b.size, 2);
    assertThrows(() => b.redeem(x1, PEER), AuthenticationError);
    assertEquals(b.redeem(x2, PEER).cluster, "cluster-b");
    assertEquals(b.redeem(x3, PEER).cluster, "cluster-c");
  });
  await t.step("expired bindings are dropped as new ones come", async () => {
    const clock = new FakeClock();
    const b = new SessionBindings({ clock, ttlMs: 1_000 });
    b.issue(cert(clock), PEER);
    await clock.advance(1_000);
    b.issue(cert(clock), PEER);
    assertEquals(b.size, 1);
  });
  await t.step("metrics count issued, redeemed and refused", () => {
    const clock = new FakeClock();
    const metrics = new MetricsRegistry();
    const b = new SessionBindings({ clock, metrics });
    const x = b.issue(cert(clock), PEER);
    b.redeem(x, PEER);
    assertThrows(() => b.redeem(x, PEER), AuthenticationError);
    const text = metrics.render();
    for (const r of ["issued", "redeemed", "refused"]) {
      assertStringIncludes(text, `meshrelay_session_bindings_total{result="${r}"} 1`);
    }
  });
});

function call(peer: string, binding?: string, withCert = false): IdentifiableCall {
  const metadata = new grpc.Metadata();
  if (binding !== undefined) metadata.set(SESSION_BINDING_METADATA, binding);
  return {
    metadata,
    getPeer: () => peer,
    // Only whether a verified certificate is there matters to the binding path.
    getAuthContext: () => withCert ? { sslPeerCertificate: { raw: new Uint8Array([0x30, 0]) } } : {},
  } as unknown as IdentifiableCall;
}

Deno.test("identifyWithBinding: the binding stands for the issued certificate, checked like it", async (t) => {
  const clock = new FakeClock();
  const byCertificate: Identify = () =>
    Promise.reject(new AuthenticationError("no valid client certificate"));
  const setup = async () => {
    const bindings = new SessionBindings({ clock });
    const revocations = await RevocationList.load(new MemorySecretStore());
    const registered = new Set(["cluster-1"]);
    const identify = identifyWithBinding(
      { bindings, revocations, isRegistered: (c) => registered.has(c) },
      byCertificate,
    );
    return { bindings, revocations, registered, identify };
  };
  await t.step("a bound Sync call is the certificate's cluster and serial, via binding", async () => {
    const { bindings, identify } = await setup();
    const x = bindings.issue(cert(clock), PEER);
    const id = await identify(call(PEER, x));
    assertEquals([id.cluster, id.serial, id.via], ["cluster-1", "0a1b", "binding"]);
  });
  await t.step("no binding: the certificate path decides (no certificate: refused)", async () => {
    const { identify } = await setup();
    await rejectsWith(() => identify(call(PEER)), AuthenticationError, "no valid client certificate");
  });
  await t.step("a verified certificate wins over a binding, which stays unspent", async () => {
    const { bindings, identify } = await setup();
    const x = bindings.issue(cert(clock), PEER);
    await rejectsWith(
      () => identify(call(PEER, x, true)),
      AuthenticationError,
      "no valid client certificate",
    );
    assertEquals(bindings.size, 1);
  });
  await t.step("a revoked certificate's binding is refused", async () => {
    const { bindings, revocations, identify } = await setup();
    await revocations.revokeSerial("0a1b", { now: clock.now(), reason: "test" });
    const x = bindings.issue(cert(clock), PEER);
    await rejectsWith(() => identify(call(PEER, x)), PermissionDeniedError, "was revoked");
  });
  await t.step("a deregistered cluster's binding is refused", async () => {
    const { bindings, registered, identify } = await setup();
    const x = bindings.issue(cert(clock), PEER);
    registered.delete("cluster-1");
    await rejectsWith(() => identify(call(PEER, x)), PermissionDeniedError, "not registered");
  });
  await t.step("a binding from another connection is refused", async () => {
    const { bindings, identify } = await setup();
    const x = bindings.issue(cert(clock), PEER);
    await rejectsWith(() => identify(call("10.0.0.9:5555", x)), AuthenticationError, "another connection");
  });
});
