// The hand-over to a new process (`--hand-over`), with real clients of every kind: raw
// WebSocket clients (ws) move, live, with no close and an exact sequence; the official
// socket.io clients, today's and 2.x, reconnect to the new process by themselves and resume
// with no gap; a raw stream inside an HTTP/2 stream cannot move, and gets 1012.
import { test } from "node:test";
import assert from "node:assert/strict";
import http2 from "node:http2";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ioV2 from "socket.io-client-v2";
import { startServer, freshStateFile, assertConsecutive, waitUntil } from "./server.mjs";
import { openTunnel, rawClient, socketIoClient } from "./clients.mjs";

const INTERVAL_MS = 50;
const PER_KIND = 10;

// A socket.io 2.x client resuming as the README shows: `after` in the query, set again
// before every reconnect.
function socketIoV2Client(url, parity) {
  const client = { parity, seen: [], connects: 0, kind: "socket.io 2" };
  const socket = ioV2(`${url}/${parity}`, { forceNew: true });
  socket.on("connect", () => {
    client.connects += 1;
  });
  socket.on("integer", (n) => client.seen.push(n));
  socket.io.on("reconnect_attempt", () => {
    if (client.seen.length) socket.io.opts.query = { after: client.seen.at(-1) };
  });
  client.close = () => socket.close();
  return client;
}

// Promise: hand-over-raw-live, hand-over-sio, hand-over-raw-1012
test("clients of every kind through a hand-over", async () => {
  const stateFile = freshStateFile();
  const control = join(mkdtempSync(join(tmpdir(), "integers-hand-over-")), "control.sock");
  const extraArgs = ["--hand-over", control];
  const old = await startServer({ intervalMs: INTERVAL_MS, stateFile, extraArgs });
  const raw = [];
  const socketio = [];
  for (let i = 0; i < PER_KIND; i++) {
    const parity = i % 2 ? "even" : "odd";
    raw.push(rawClient(old.wsUrl, parity));
    socketio.push(socketIoClient(old.url, parity), socketIoV2Client(old.url, parity));
  }
  const all = [...raw, ...socketio];
  const session = http2.connect(old.url);
  const tunnel = await openTunnel(session, "/_ws/");
  assert.equal(tunnel.status, 200);
  let successor;
  try {
    await waitUntil(
      "every client's first integers",
      () => all.every((c) => c.seen.length >= 3) && tunnel.integers.length >= 3,
    );
    const before = all.map((c) => c.seen.length);
    successor = await startServer({ intervalMs: INTERVAL_MS, stateFile, extraArgs });
    assert.equal(successor.port, old.port, "the new process listens on another port");
    assert.equal(await old.exited(), 0, "the old process did not exit cleanly");
    const { code } = await tunnel.closed;
    assert.equal(code, 1012, "the HTTP/2 stream's close code");
    await waitUntil("every client receiving from the new process", () =>
      all.every((c, i) => c.seen.length >= before[i] + 5),
    );
    for (const client of all) assertConsecutive(assert, client.seen, client.parity);
    assertConsecutive(assert, tunnel.integers, "odd");
    for (const client of raw) assert.equal(client.connects, 1, "a raw client reconnected");
    for (const client of socketio) {
      assert.equal(client.connects, 2, `a ${client.kind ?? "socket.io"} client's connects`);
    }
  } finally {
    for (const client of all) client.close();
    session.close();
    if (successor) assert.equal(await successor.stop(), 0, "the new process did not exit cleanly");
    await old.stop();
  }
});
