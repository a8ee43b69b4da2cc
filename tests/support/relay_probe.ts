/**
 * Asks a running relay server what it holds, through the protocol itself: a Sync stream opened with a
 * cluster's client certificate gets the server's inventory of that cluster in its Welcome, and the
 * first desired diff after a Hello that lists what the agent's applier holds is exactly the
 * difference between the applied state and the desired state (empty when they are equal).
 * Opening such a stream replaces the cluster's live one, so probe after stopping its agent.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { AgentMessageCodec, ServerMessageCodec } from "../../src/proto/mod.ts";
import { type ClientPair, rawClient } from "./hostile.ts";

/** What the server told the probe. */
export interface Probe {
  /** Welcome: key → version of the cluster's inventory on the server (duplicates kept, to be checked). */
  inventory: [string, string][];
  /** First desired diff after Hello{applied}: what the applied state lacks or has too much. */
  upserts: string[];
  deletes: string[];
}

/** Probes `cluster`'s state on the server at 127.0.0.1:port (see the module comment). */
export async function probe(
  port: number,
  rootPem: string,
  pair: ClientPair,
  applied: Map<string, string>,
  timeoutMs = 15_000,
): Promise<Probe> {
  const c = rawClient(port, rootPem, pair, "127.0.0.1");
  try {
    return await new Promise<Probe>((resolve, reject) => {
      const s = c.sync(new grpc.Metadata(), { deadline: Date.now() + timeoutMs });
      const out: Probe = { inventory: [], upserts: [], deletes: [] };
      let welcomed = false;
      let settled = false;
      s.on("data", (b: Buffer) => {
        const m = ServerMessageCodec.decode(b);
        if (m.welcome) {
          out.inventory.push(...m.welcome.inventory.map((h) => [h.key, h.version] as [string, string]));
          if (!m.welcome.more && !welcomed) {
            welcomed = true;
            const hello = AgentMessageCodec.fromPartial({
              hello: {
                agentVersion: "probe",
                applied: [...applied].map(([key, version]) => ({ key, version })),
              },
            });
            s.write(Buffer.from(AgentMessageCodec.encode(hello).finish()));
          }
        } else if (m.desired) {
          out.upserts.push(...m.desired.upserts.map((u) => u.key));
          out.deletes.push(...m.desired.deletes);
          if (m.desired.last) {
            settled = true;
            s.cancel();
            resolve(out);
          }
        }
      });
      s.on("error", (e: grpc.ServiceError) => {
        if (!settled) reject(new Error(`probe: ${e.code} ${e.details}`));
      });
    });
  } finally {
    c.close();
  }
}
