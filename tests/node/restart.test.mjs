// Deploys and crashes: 110 clients (official socket.io-client with default reconnection, and
// raw WebSocket clients that reconnect with ?after) ride through a SIGTERM and a kill -9.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { startServer, freshStateFile } from "./server.mjs";

const SOCKETIO_CLIENTS = 60;
const RAW_CLIENTS = 50;
const INTERVAL_MS = 50;

// A socket.io client as the docs suggest for resuming: auth as a function of the last integer.
function socketIoClient(url, parity) {
  const client = { parity, seen: [], connects: 0 };
  const socket = io(`${url}/${parity}`, {
    forceNew: true,
    auth: (send) => send(client.seen.length ? { after: client.seen.at(-1) } : {}),
  });
  socket.on("connect", () => { client.connects += 1; });
  socket.on("integer", (n) => client.seen.push(n));
  client.close = () => socket.disconnect();
  return client;
}

// A raw client that reconnects by itself, resuming after the last integer it saw.
function rawClient(wsUrl, parity) {
  const client = { parity, seen: [], connects: 0, closed: false };
  const open = () => {
    const query = [parity === "even" ? "even" : null, client.seen.length ? `after=${client.seen.at(-1)}` : null].filter(Boolean).join("&");
    const ws = new WebSocket(`${wsUrl}/_ws/${query ? `?${query}` : ""}`);
    ws.on("open", () => { client.connects += 1; });
    ws.on("message", (data) => client.seen.push(Number(data.toString())));
    ws.on("error", () => {});
    ws.on("close", () => { if (!client.closed) setTimeout(open, 100 + Math.random() * 200); });
    client.ws = ws;
  };
  open();
  client.close = () => { client.closed = true; client.ws.close(); };
  return client;
}

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
