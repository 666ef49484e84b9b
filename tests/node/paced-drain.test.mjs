// A paced drain (`--drain-pace-ms`): clients let go one at a time, evenly over the window,
// while the streams still run, instead of all in the same moment. Raw clients get 1001 at
// their place; the official socket.io client sees its transport end and tries to reconnect by
// itself. Through a hand-over, the socket.io clients reconnect to the new process spread
// over the window, and resume with no gap.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { startServer, freshStateFile, assertConsecutive, waitUntil } from "./server.mjs";
import { rawClient, socketIoClient } from "./clients.mjs";

const INTERVAL_MS = 50;
const PACE_MS = 2000;
const DRAIN_MS = 8000;
const PACED = ["--drain-pace-ms", String(PACE_MS), "--drain-ms", String(DRAIN_MS)];

// A raw client that records its integers and how it was let go, and does not come back.
function leavingRawClient(wsUrl, parity) {
  const client = { parity, seen: [], times: [], kind: "raw" };
  const ws = new WebSocket(`${wsUrl}/_ws/${parity === "even" ? "?even" : ""}`);
  ws.on("message", (data) => {
    client.seen.push(Number(data.toString()));
    client.times.push(Date.now());
  });
  ws.on("error", () => {});
  ws.on("close", (code, reason) => {
    client.left = { at: Date.now(), code, reason: reason.toString() };
  });
  client.close = () => ws.terminate();
  return client;
}

// The official client, recording how it was let go and whether it then tried to come back.
function leavingSocketIoClient(url, parity, transports) {
  const client = { parity, seen: [], times: [], attempts: 0, kind: `socket.io ${transports}` };
  const socket = io(`${url}/${parity}`, { forceNew: true, transports });
  socket.on("integer", (n) => {
    client.seen.push(n);
    client.times.push(Date.now());
  });
  socket.on("disconnect", (reason) => {
    client.left ??= { at: Date.now(), reason };
  });
  socket.io.on("reconnect_attempt", () => {
    client.attempts += 1;
  });
  client.close = () => socket.disconnect();
  return client;
}

// The spread of the clients' leave times, from the signal: first and last, in ms.
function spread(clients, signalled) {
  const times = clients.map((c) => c.left.at - signalled).sort((a, b) => a - b);
  return { first: times[0], last: times.at(-1), times };
}

// Promise: drain-pace, flag-drain-pace-ms, drain-pace-raw, drain-pace-sio, drain-pace-polling
// Promise: drain-pace-logged
test("a paced drain lets clients go one at a time while the streams run", async () => {
  const server = await startServer({ intervalMs: INTERVAL_MS, extraArgs: PACED });
  const raw = [];
  const socketio = [];
  for (let i = 0; i < 8; i++) {
    const parity = i % 2 ? "even" : "odd";
    raw.push(leavingRawClient(server.wsUrl, parity));
    socketio.push(leavingSocketIoClient(server.url, parity, ["websocket"]));
    if (i < 4) socketio.push(leavingSocketIoClient(server.url, parity, ["polling"]));
  }
  const all = [...raw, ...socketio];
  try {
    await waitUntil("every client's first integers", () => all.every((c) => c.seen.length >= 3));
    const signalled = Date.now();
    assert.equal(await server.stop(), 0, "the server did not exit cleanly");
    await waitUntil("every client let go", () =>
      all.every((c) => c.left && (c.attempts > 0 || c.kind === "raw")),
    );
    for (const client of raw) {
      assert.equal(client.left.code, 1001, "a raw client's close code");
      assert.equal(client.left.reason, "server shutting down, reconnect");
    }
    for (const client of socketio) {
      assert.match(
        client.left.reason,
        /^transport (close|error)$/,
        `a ${client.kind} client was not let go at its transport`,
      );
    }
    // A polling client makes its next request on a new connection as often as not, and none
    // is accepted once the drain has begun: it leaves at its next poll, unpaced.
    const websockets = socketio.filter((c) => c.kind === "socket.io websocket");
    for (const [name, group] of [
      ["raw", raw],
      ["socket.io", websockets],
    ]) {
      const { first, last, times } = spread(group, signalled);
      // Evenly over the window: the last a good part of it after the first, and no more than
      // half of them in its first quarter.
      assert.ok(
        last - first >= PACE_MS / 2,
        `${name} clients left within ${last - first} ms of each other: ${times}`,
      );
      const early = times.filter((t) => t - first < PACE_MS / 4).length;
      assert.ok(early <= group.length / 2, `${name}: ${early} left in the first quarter: ${times}`);
      // The streams ran on through the window: the last to leave got integers in its second
      // half, in order.
      const lastOut = group.find((c) => c.left.at - signalled === last);
      assert.ok(
        lastOut.times.at(-1) - signalled >= PACE_MS / 2,
        `${name}: the last to leave got nothing ${lastOut.times.at(-1) - signalled} ms on`,
      );
    }
    for (const client of all) assertConsecutive(assert, client.seen, client.parity);
    const departures = server
      .log()
      .split("\n")
      .filter((line) => line.includes('"message":"disconnected"'));
    assert.equal(departures.length, all.length, "the disconnections logged");
    for (const line of departures) {
      // A raw client's reason is this server's; a socket.io client's is socketioxide's, and
      // this server's is its departure.
      assert.match(
        line,
        /"(reason|departure)":"server shutting down"/,
        `a departure in a paced drain: ${line}`,
      );
    }
  } finally {
    for (const client of all) client.close();
    await server.stop();
  }
});

// One socket.io handshake on a connection of its own, closed once answered.
function oneShotHandshake(url) {
  return new Promise((resolve, reject) => {
    const request = http.get(`${url}/socket.io/?EIO=4&transport=polling`, {
      agent: false,
      headers: { Connection: "close" },
    });
    request.setTimeout(10000, () => request.destroy(new Error("no handshake answer in 10 s")));
    request.on("error", reject);
    request.on("response", (response) => {
      assert.equal(response.statusCode, 200, "a handshake's status");
      response.resume();
      response.on("end", resolve);
    });
  });
}

// Promise: drain-pace-sio
test("socket.io connections open after a thousand others came and went are paced", async () => {
  const server = await startServer({ intervalMs: INTERVAL_MS, extraArgs: PACED });
  const socketio = [];
  for (let i = 0; i < 8; i++) {
    socketio.push(leavingSocketIoClient(server.url, i % 2 ? "even" : "odd", ["websocket"]));
  }
  try {
    await waitUntil("every client's first integers", () =>
      socketio.every((c) => c.seen.length >= 3),
    );
    // The server's record of the connections socket.io runs on is swept of the closed ones
    // once it holds 1,024: these pass that, and the open ones must stay in it.
    for (let i = 0; i < 1100; i++) await oneShotHandshake(server.url);
    const signalled = Date.now();
    assert.equal(await server.stop(), 0, "the server did not exit cleanly");
    await waitUntil("every client let go", () => socketio.every((c) => c.left && c.attempts > 0));
    const { first, last, times } = spread(socketio, signalled);
    assert.ok(
      last - first >= PACE_MS / 2,
      `socket.io clients left within ${last - first} ms of each other: ${times}`,
    );
  } finally {
    for (const client of socketio) client.close();
    await server.stop();
  }
});

// Promise: drain-pace-within
test("a pace longer than half the drain is refused at start", async () => {
  // A server that starts anyway is stopped, and the missing rejection fails the test.
  const started = startServer({ extraArgs: ["--drain-pace-ms", "2501", "--drain-ms", "5000"] });
  await assert.rejects(
    started.then(async (server) => {
      await server.stop();
      return server;
    }),
    /server exited with 1:[^]*--drain-pace-ms \(2501\) must be at most half of --drain-ms \(5000\)/,
  );
});

// Promise: drain-pace-hand-over
test("through a hand-over, socket.io clients are let go over the window", async () => {
  const stateFile = freshStateFile();
  const control = join(mkdtempSync(join(tmpdir(), "integers-paced-")), "control.sock");
  const extraArgs = ["--hand-over", control, ...PACED];
  const old = await startServer({ intervalMs: INTERVAL_MS, stateFile, extraArgs });
  const raw = [];
  const socketio = [];
  for (let i = 0; i < 10; i++) {
    const parity = i % 2 ? "even" : "odd";
    raw.push(rawClient(old.wsUrl, parity));
    socketio.push(socketIoClient(old.url, parity));
  }
  const all = [...raw, ...socketio];
  let successor;
  try {
    await waitUntil("every client's first integers", () => all.every((c) => c.seen.length >= 3));
    const before = all.map((c) => c.seen.length);
    successor = await startServer({ intervalMs: INTERVAL_MS, stateFile, extraArgs });
    await waitUntil(
      "every socket.io client back on the new process",
      () => socketio.every((c) => c.connects === 2),
      DRAIN_MS + 10000,
    );
    assert.equal(await old.exited(), 0, "the old process did not exit cleanly");
    for (const client of socketio) {
      assert.equal(client.left[0].reason, "transport close", "a socket.io client let go");
    }
    const times = socketio.map((c) => c.left[0].at).sort((a, b) => a - b);
    assert.ok(
      times.at(-1) - times[0] >= PACE_MS / 2,
      `socket.io clients were let go within ${times.at(-1) - times[0]} ms: ${times}`,
    );
    await waitUntil("every client receiving from the new process", () =>
      all.every((c, i) => c.seen.length >= before[i] + 5),
    );
    for (const client of all) assertConsecutive(assert, client.seen, client.parity);
    for (const client of raw) assert.equal(client.connects, 1, "a raw client reconnected");
  } finally {
    for (const client of all) client.close();
    if (successor) assert.equal(await successor.stop(), 0, "the new process did not exit cleanly");
    await old.stop();
  }
});
