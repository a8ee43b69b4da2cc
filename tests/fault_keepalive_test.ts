/**
 * A hung link (connection open, nothing forwarded) is found by the agent's keepalive, in the time the
 * flags say, and the agent is back in sync once the link works again; and by the server's keepalive,
 * which frees the stream of an agent that vanished without closing. The chaos test's stalls are
 * shorter than the default keepalives (agent 30 s + 10 s, server 60 s + 20 s), so they prove recovery,
 * not detection.
 */
import { FaultProxy } from "../src/testing/fault_proxy.ts";
import { assert } from "../src/testing/assert.ts";
import { localAgentArgs, localServerArgs, type Proc, sleep, withRelay } from "./relay_e2e_harness.ts";

/**
 * A server and one agent in sync through a fault proxy, each with its extra flags, in a
 * {@linkcode withRelay} run (which kills both when it ends, pass or fail); `body` runs with them.
 */
function throughProxy(
  name: string,
  extra: { server?: string[]; agent?: string[] },
  body: (p: { server: Proc; agent: Proc; proxy: FaultProxy }) => Promise<void>,
): Promise<void> {
  return withRelay(name, async (run) => {
    const secrets = `${run.dir}/secrets`;
    const { proc: server, port } = await run.server([
      ...localServerArgs(run.config),
      "--secrets-dir",
      secrets,
      ...extra.server ?? [],
    ], `${name}-server`);
    const proxy = await FaultProxy.start({ targetPort: port });
    try {
      const dir = `${run.dir}/agent`;
      await Deno.mkdir(`${dir}/discovery`, { recursive: true });
      const agent = run.agent([
        ...localAgentArgs({
          cluster: "cluster-1",
          serverAddress: `127.0.0.1:${proxy.port}`,
          serverSecrets: secrets,
          agentDir: dir,
        }),
        ...extra.agent ?? [],
      ], `${name}-agent`);
      await agent.waitForLine((l) => l.msg === "in sync with the server", "first sync");
      await body({ server, agent, proxy });
    } finally {
      await proxy.close();
    }
  });
}

Deno.test("keepalive: an agent gives up a hung connection by itself and resyncs after it", async () => {
  const agentFlags = ["--keepalive-interval", "1s", "--keepalive-timeout", "1s"];
  await throughProxy("keepalive", { agent: agentFlags }, async ({ server, agent, proxy }) => {
    const from = agent.mark;
    proxy.mode = "stall";
    const stalledAt = Date.now();
    // Nothing closes the connection: only the agent's own ping can tell it is dead.
    await agent.waitForLine(
      (l) => l.msg === "sync session ended; retrying",
      "session given up",
      15_000,
      from,
    );
    const noticedMs = Date.now() - stalledAt;
    // 1 s of quiet, 1 s for the answer, plus scheduling: far below the default's 40 s.
    assert(noticedMs < 10_000, `noticed after ${noticedMs} ms`);
    await sleep(500);
    const back = agent.mark;
    proxy.mode = "pass";
    await agent.waitForLine((l) => l.msg === "in sync with the server", "in sync again", 60_000, back);
    assert(server.exited === undefined, "server still running");
  });
});

Deno.test("keepalive: the server frees the stream of an agent that vanished without closing", async () => {
  // The agent keeps its default keepalive (30 s + 10 s): only the server's ping can notice in time.
  const serverFlags = ["--keepalive-interval", "1s", "--keepalive-timeout", "1s"];
  await throughProxy("keepalive-server", { server: serverFlags }, async ({ server, agent, proxy }) => {
    const from = server.mark;
    proxy.mode = "stall";
    const stalledAt = Date.now();
    await server.waitForLine(
      (l) => l.msg === "sync stream ended by the peer" && l.cluster === "cluster-1",
      "stream freed by the server",
      15_000,
      from,
    );
    const noticedMs = Date.now() - stalledAt;
    // 1 s of quiet, 1 s for the answer, plus scheduling: far below the default's 80 s.
    assert(noticedMs < 10_000, `noticed after ${noticedMs} ms`);
    assert(agent.exited === undefined, "agent still running");
  });
});
