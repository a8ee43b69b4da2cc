import { grpcDetailsText, GrpcStatus } from "./errors.ts";
import { errorFromStatus } from "./relay/identity_transport.ts";
import { assertEquals } from "./testing/assert.ts";

Deno.test("grpcDetailsText: grpc-js connection failures as one clear line", async (t) => {
  await t.step("the empty 'Resolution note' grpc-js appends is dropped", () => {
    assertEquals(
      grpcDetailsText(
        "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ",
      ),
      "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1",
    );
  });
  await t.step("a resolution note with content stays", () => {
    assertEquals(grpcDetailsText("x. Resolution note: DNS failed"), "x. Resolution note: DNS failed");
  });
  await t.step("TLS against a plaintext server says what is likely wrong", () => {
    assertEquals(
      grpcDetailsText("Last error: Error: received corrupt message (ssl3_get_record:wrong version number)."),
      "Last error: Error: received corrupt message (ssl3_get_record:wrong version number). " +
        "(TLS to a server that speaks plaintext? both sides need the same --tls-mode)",
    );
  });
  await t.step("one line", () => {
    assertEquals(grpcDetailsText("a\n  b\tc "), "a b c");
  });
  await t.step("errorFromStatus uses it", () => {
    const e = errorFromStatus({
      code: GrpcStatus.UNAVAILABLE,
      details: "No connection established. Last error: Failed to connect. Resolution note: ",
    });
    assertEquals(e.message, "relay server: No connection established. Last error: Failed to connect");
  });
});
