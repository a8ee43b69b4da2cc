/**
 * Closing a grpc-js client without leaking its connection.
 *
 * grpc-js 1.14 resolves a channel's target asynchronously. A channel closed while it is CONNECTING can
 * still receive that resolution afterwards: its load balancer then creates a subchannel for the closed
 * channel, connects it, and nothing ever releases it. Measured here: an agent whose first Sync stream
 * was cancelled while dialing (its certificate had just changed) kept a second TLS connection to the
 * server for its whole life, and the server held twice the connections, and memory, it should.
 * Waiting until the channel has left CONNECTING (READY, TRANSIENT_FAILURE or the deadline), and then
 * one more turn of the event loop, before closing it lets the load balancer hand back what it created.
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { setTimeout } from "node:timers";

/**
 * Longest wait for a CONNECTING channel before it is closed anyway: by then the resolution (an IP
 * address, or a DNS answer) has long arrived, so closing no longer leaks.
 */
const SETTLE_MS = 5_000;

/**
 * Closes `client`'s channel now, or, while it is connecting, as soon as it has settled (at most
 * `settleMs`). Pending calls are the caller's to cancel first; this never throws.
 */
export function closeClient(client: grpc.Client, settleMs = SETTLE_MS): void {
  const close = () => {
    try {
      client.close();
    } catch {
      // already closed
    }
  };
  let channel: ReturnType<grpc.Client["getChannel"]>;
  try {
    channel = client.getChannel();
  } catch {
    return close();
  }
  const state = channel.getConnectivityState(false);
  if (state !== grpc.connectivityState.CONNECTING) return close();
  // Our own timer, unref'd: grpc-js' watch deadline would keep a stopping process alive.
  const timer = setTimeout(close, settleMs);
  timer.unref();
  channel.watchConnectivityState(state, Infinity, () => {
    timer.close();
    // Not in this turn: the load balancer reacts to READY with a deferred (nextTick) "connect if
    // idle", which would reconnect the subchannel a close in this same turn had just released.
    setTimeout(close, 0);
  });
}
