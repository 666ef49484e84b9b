// Deploys and crashes: 110 clients (official socket.io-client with default reconnection, and
// raw WebSocket clients that reconnect with ?after) ride through a SIGTERM and a kill -9.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { startServer, freshStateFile } from "./server.mjs";
import { rawClient, socketIoClient } from "./clients.mjs";

const SOCKETIO_CLIENTS = 60;
const RAW_CLIENTS = 50;
const INTERVAL_MS = 50;

async function waitUntil(what, done, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function rideThrough(signal) {
  const stateFile = freshStateFile();
  let server = await startServer({ intervalMs: INTERVAL_MS, stateFile });
  const clients = [];
  for (let i = 0; i < SOCKETIO_CLIENTS; i++) clients.push(socketIoClient(server.url, i % 2 ? "even" : "odd"));
  for (let i = 0; i < RAW_CLIENTS; i++) clients.push(rawClient(server.wsUrl, i % 2 ? "even" : "odd"));
  try {
    await waitUntil("every client's first integers", () => clients.every((c) => c.seen.length >= 3));
    const exit = await server.stop(signal);
    assert.equal(exit, signal === "SIGTERM" ? 0 : "SIGKILL");
    const before = clients.map((c) => c.seen.length);
    const stoppedAt = Date.now();
    server = await startServer({ intervalMs: INTERVAL_MS, port: server.port, stateFile });
    await waitUntil("every client back and receiving", () => clients.every((c, i) => c.seen.length >= before[i] + 3));
    const backWithinMs = Date.now() - stoppedAt;
    for (const client of clients) {
      const { seen, parity } = client;
      assert.ok(client.connects >= 2, "a client never reconnected");
      for (let i = 1; i < seen.length; i++) {
        assert.ok(seen[i] > seen[i - 1], `${parity} client saw ${seen[i]} again after ${seen[i - 1]}: ${seen}`);
        assert.equal(seen[i], seen[i - 1] + 2, `${parity} client has a gap: ${seen}`);
      }
    }
    return backWithinMs;
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
}

test("a graceful restart: every client comes back by itself and misses nothing", async (t) => {
  const backWithinMs = await rideThrough("SIGTERM");
  t.diagnostic(`all ${SOCKETIO_CLIENTS + RAW_CLIENTS} clients receiving again ${backWithinMs} ms after the stop`);
  assert.ok(backWithinMs < 20000, `clients took ${backWithinMs} ms to come back`);
});

test("a crash (kill -9): no client ever sees an integer twice", async (t) => {
  const backWithinMs = await rideThrough("SIGKILL");
  t.diagnostic(`all ${SOCKETIO_CLIENTS + RAW_CLIENTS} clients receiving again ${backWithinMs} ms after the crash`);
});
