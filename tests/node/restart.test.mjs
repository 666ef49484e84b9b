// Deploys and crashes: 110 clients (official socket.io-client with default reconnection, and
// raw WebSocket clients that reconnect with ?after) ride through a SIGTERM and a kill -9, and
// resume with nothing missed while the streams moved on without them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { startServer, startGate, freshStateFile } from "./server.mjs";
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

// The clients reach the server through a gate. Across the restart the gate stays shut while a
// keeper client of each stream, connected straight to the new server, moves both streams on:
// a client that came back without resuming would then have a gap.
async function rideThrough(signal) {
  const stateFile = freshStateFile();
  let server = await startServer({ intervalMs: INTERVAL_MS, stateFile });
  const gate = await startGate();
  await gate.setTarget(server);
  const clients = [];
  const keepers = [];
  for (let i = 0; i < SOCKETIO_CLIENTS; i++)
    clients.push(socketIoClient(gate.url, i % 2 ? "even" : "odd"));
  for (let i = 0; i < RAW_CLIENTS; i++) clients.push(rawClient(gate.wsUrl, i % 2 ? "even" : "odd"));
  try {
    await waitUntil("every client's first integers", () =>
      clients.every((c) => c.seen.length >= 3),
    );
    await gate.setTarget(null);
    const exit = await server.stop(signal);
    assert.equal(exit, signal === "SIGTERM" ? 0 : "SIGKILL");
    const before = clients.map((c) => c.seen.length);
    const lastBefore = (parity) =>
      Math.max(...clients.filter((c) => c.parity === parity).map((c) => c.seen.at(-1)));
    const stoppedAt = Date.now();
    server = await startServer({ intervalMs: INTERVAL_MS, stateFile });
    for (const parity of ["odd", "even"]) keepers.push(rawClient(server.wsUrl, parity));
    await waitUntil("both streams moving on without the clients", () =>
      keepers.every((k) => k.seen.length >= 5),
    );
    for (const keeper of keepers) {
      assert.ok(
        keeper.seen[0] > lastBefore(keeper.parity),
        `${keeper.parity} repeated an integer after the restart`,
      );
    }
    await gate.setTarget(server);
    await waitUntil("every client back and receiving", () =>
      clients.every((c, i) => c.seen.length >= before[i] + 3),
    );
    const backWithinMs = Date.now() - stoppedAt;
    for (const client of clients) {
      const { seen, parity } = client;
      assert.ok(client.connects >= 2, "a client never reconnected");
      for (let i = 1; i < seen.length; i++) {
        assert.ok(
          seen[i] > seen[i - 1],
          `${parity} client saw ${seen[i]} again after ${seen[i - 1]}: ${seen}`,
        );
        assert.equal(seen[i], seen[i - 1] + 2, `${parity} client has a gap: ${seen}`);
      }
    }
    return backWithinMs;
  } finally {
    for (const client of [...clients, ...keepers]) client.close();
    gate.close();
    await server.stop();
  }
}

// Promise: sio-shutdown, stream-restart, restart-sio-reconnect, storm-all-back
// Promise: resume-after-restart
test("a graceful restart: every client comes back by itself and misses nothing", async (t) => {
  const backWithinMs = await rideThrough("SIGTERM");
  t.diagnostic(
    `all ${SOCKETIO_CLIENTS + RAW_CLIENTS} clients receiving again ${backWithinMs} ms after the ` +
      `stop`,
  );
});

// Promise: storm-all-back, resume-after-restart, durable-crash-no-repeat
test("a crash (kill -9): no client ever sees an integer twice", async (t) => {
  const backWithinMs = await rideThrough("SIGKILL");
  t.diagnostic(
    `all ${SOCKETIO_CLIENTS + RAW_CLIENTS} clients receiving again ${backWithinMs} ms after the ` +
      `crash`,
  );
});

// A SIGTERM closes every socket.io transport before the process exits: a long-polling client's
// open poll is answered with the close, not cut, so it sees "transport close" as a WebSocket
// client does, and not "transport error".
// Promise: sio-shutdown
test("a SIGTERM closes socket.io's WebSocket and long-polling transports alike", async () => {
  const server = await startServer({ intervalMs: INTERVAL_MS });
  const clients = [];
  for (const transports of [["websocket"], ["polling"]]) {
    for (const parity of ["odd", "even"]) {
      clients.push(socketIoClient(server.url, parity, { transports, reconnection: false }));
    }
  }
  try {
    await waitUntil("every client's first integers", () =>
      clients.every((c) => c.seen.length >= 3),
    );
    assert.equal(await server.stop(), 0, "the server did not exit cleanly");
    await waitUntil("every client's disconnect", () => clients.every((c) => c.left.length > 0));
    for (const [i, client] of clients.entries()) {
      const transport = i < 2 ? "websocket" : "polling";
      assert.equal(client.left[0].reason, "transport close", `a ${transport} client`);
    }
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
});
