import { assertEquals } from "../testing/assert.ts";
import { AgentMessageCodec, IdentityService, RelayService, ServerMessageCodec } from "./mod.ts";
import { haveProtoc, staleFiles } from "../../scripts/gen_proto.ts";

Deno.test("wire messages survive an encode/decode round trip", async (t) => {
  const cases = [
    {
      name: "hello with held versions",
      msg: { hello: { agentVersion: "0.1.0", applied: [{ key: "a", version: "v1" }], more: false } },
    },
    {
      name: "discovery chunk",
      msg: {
        discovery: {
          generation: 7,
          upserts: [{ key: "v1|Service|ns|a", version: "h", objectJson: new TextEncoder().encode("{}") }],
          deletes: ["v1|Service|ns|b"],
          last: true,
        },
      },
    },
    {
      name: "status",
      msg: { status: { generation: 3, statuses: [{ key: "k", state: "failed", message: "no" }] } },
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const back = AgentMessageCodec.decode(
        AgentMessageCodec.encode(AgentMessageCodec.fromPartial(c.msg)).finish(),
      );
      assertEquals(
        AgentMessageCodec.encode(back).finish(),
        AgentMessageCodec.encode(AgentMessageCodec.fromPartial(c.msg)).finish(),
      );
      const key = Object.keys(c.msg)[0] as keyof typeof back;
      assertEquals(back[key] !== undefined, true);
    });
  }
  await t.step("server welcome", () => {
    const w = { welcome: { cluster: "c1", inventory: [], more: false, maxMessageBytes: 4 << 20 } };
    const back = ServerMessageCodec.decode(
      ServerMessageCodec.encode(ServerMessageCodec.fromPartial(w)).finish(),
    );
    assertEquals(back.welcome?.cluster, "c1");
    assertEquals(back.welcome?.maxMessageBytes, 4 << 20);
  });
});

Deno.test("service paths are versioned under meshrelay.relay.v1", () => {
  assertEquals(IdentityService.bootstrap.path, "/meshrelay.relay.v1.Identity/Bootstrap");
  assertEquals(IdentityService.renew.path, "/meshrelay.relay.v1.Identity/Renew");
  assertEquals(RelayService.sync.path, "/meshrelay.relay.v1.Relay/Sync");
});

Deno.test({
  name: "src/proto/gen is what deno task proto generates from the .proto sources",
  ignore: !await haveProtoc(),
  fn: async () => {
    assertEquals(await staleFiles(), []);
  },
});
