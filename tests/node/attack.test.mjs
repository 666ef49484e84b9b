// Hostile traffic against the real binary while honest clients stream: raw WebSocket, the
// official socket.io-client 4 over WebSocket and over long-polling, and socket.io-client 2.
// The engine.io session flood comes from the benchmark kit's `flood` (FLOOD_BIN), from
// loopback addresses of its own, so that the honest clients keep theirs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { request } from "node:http";
import { connect } from "node:net";
import http2 from "node:http2";
import WebSocket from "ws";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import ioV2 from "socket.io-client-v2";
import { startServer, assertConsecutive, eventWithin } from "./server.mjs";
import { rawClient, socketIoClient } from "./clients.mjs";

const FLOOD_BIN =
  process.env.FLOOD_BIN ?? fileURLToPath(new URL("../../target/debug/flood", import.meta.url));
const INTERVAL_MS = 100;
const JOIN_TIMEOUT_MS = 2000;
const MAX_PENDING_PER_PEER = 40;
const MAX_CONNECTIONS = 300;
const PROXY = "127.0.0.3";

let server;
let addr;
const honest = [];

before(async () => {
  server = await startServer({
    intervalMs: INTERVAL_MS,
    extraArgs: [
      ...["--join-timeout-ms", String(JOIN_TIMEOUT_MS)],
      ...["--max-pending-per-peer", String(MAX_PENDING_PER_PEER)],
      ...["--max-connections", String(MAX_CONNECTIONS)],
      ...["--trusted-proxies", PROXY],
    ],
  });
  addr = server.url.replace("http://", "");
  honest.push(rawClient(server.wsUrl, "odd"));
  honest.push(socketIoClient(server.url, "even", { transports: ["websocket"] }));
  honest.push(socketIoClient(server.url, "odd", { transports: ["polling"] }));
  honest.push(v2Client(server.url, "/even"));
  await waitUntil("every honest client streaming", () =>
    honest.every((client) => client.seen.length >= 3),
  );
});

after(async () => {
  for (const client of honest) client.close();
  assert.equal(await server.stop(), 0, "server did not exit cleanly");
});

// socket.io-client 2, polling then upgrading, recording what it receives as the others do.
function v2Client(url, namespace) {
  const client = { seen: [], times: [], connects: 0, kind: "socket.io v2" };
  const socket = ioV2(`${url}${namespace}`, { forceNew: true, reconnection: false });
  socket.on("connect", () => {
    client.connects += 1;
  });
  socket.on("integer", (n) => {
    client.seen.push(n);
    client.times.push(Date.now());
  });
  client.parity = namespace.slice(1);
  client.close = () => socket.close();
  return client;
}

async function waitUntil(what, done, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

// Runs the flood with `args` and resolves with its report.
async function flood(args, seconds) {
  const child = spawn(FLOOD_BIN, ["--addr", addr, "--seconds", String(seconds), ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (chunk) => (output += chunk));
  const deadline = setTimeout(() => child.kill("SIGKILL"), (seconds + 20) * 1000);
  // "close", not "exit": the report may still be in the pipe when the process exits.
  const [code] = await once(child, "close");
  clearTimeout(deadline);
  assert.equal(code, 0, `the flood did not finish within ${seconds + 20} s: ${output}`);
  return JSON.parse(output);
}

// One HTTP/1.1 GET from `localAddress`: status, headers and body.
function get(path, localAddress = "127.0.0.1", headers = {}) {
  const [host, port] = addr.split(":");
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, localAddress, headers, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (chunk) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.setTimeout(15000, () => req.destroy(new Error(`no answer to GET ${path} in 15 s`)));
    req.on("error", reject);
    req.end();
  });
}

const handshakePath = (eio) => `/socket.io/?EIO=${eio}&transport=polling`;

// The engine.io sid of a polling handshake's answer (v4 `0{...}`, v3 `<length>:0{...}`).
function sidOf(body) {
  const match = body.match(/"sid":"([^"]+)"/);
  assert.ok(match, `no sid in the handshake's answer: ${body}`);
  return match[1];
}

async function metric(line) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const found = text.split("\n").find((l) => l.startsWith(line));
  return found === undefined ? undefined : Number(found.slice(line.length));
}

const rssKib = () =>
  Number(readFileSync(`/proc/${server.pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]);

const sessionsSettled = (what) =>
  server.waitForStatus(what, (status) => status.sessions.pending === 0, JOIN_TIMEOUT_MS + 5000);

// Promise: http-status-sessions, attack-peer-429, flag-max-pending-per-peer
// Promise: proxy-untrusted, metric-refused, metric-sessions
test("one address's session flood gets its share of pending sessions, then 429", async () => {
  // Shorter than the join timeout, so that no session of it has closed yet.
  const report = await flood(["--source", "127.0.0.2", "--max-requests", "3000"], 1);
  assert.equal(report.broken, 0, JSON.stringify(report));
  assert.equal(report.statuses["200"], MAX_PENDING_PER_PEER, JSON.stringify(report));
  assert.equal(report.statuses["429"], report.requests - MAX_PENDING_PER_PEER);
  const status = await server.status();
  assert.deepEqual(status.sessions, { joined: 3, pending: MAX_PENDING_PER_PEER });
  assert.equal(await metric('integers_engineio_sessions{state="pending"} '), MAX_PENDING_PER_PEER);
  assert.equal(await metric('integers_engineio_sessions{state="joined"} '), 3);
  assert.ok((await metric('integers_refused_total{reason="peer_pending"} ')) >= 1);

  const refused = await get(handshakePath(4), "127.0.0.2");
  assert.equal(refused.status, 429);
  assert.equal(refused.headers["retry-after"], "5");
  assert.equal(
    refused.body,
    `127.0.0.2 already has ${MAX_PENDING_PER_PEER} socket.io sessions that joined no ` +
      "namespace; join those, or retry later\n",
  );
  // A forwarded address from a peer that is not a trusted proxy changes nothing.
  const forged = await get(handshakePath(4), "127.0.0.2", { "x-forwarded-for": "10.9.9.9" });
  assert.equal(forged.status, 429);

  // Another client is admitted meanwhile, and streams.
  const newcomer = socketIoClient(server.url, "odd");
  await waitUntil("a new client admitted during the flood", () => newcomer.seen.length >= 2);
  newcomer.close();
  await sessionsSettled("the flood's sessions closed at the join timeout");
});

// Promise: http-status-sessions, attack-join-timeout, flag-join-timeout-ms
test("a session that joins nothing is closed at the join timeout, v4 and v2", async () => {
  // v4: the client polls, which is not joining, until a poll brings
  // engine.io's close packet (`1`); the session is gone after.
  const opened = Date.now();
  const sid = sidOf((await get(handshakePath(4), "127.0.0.4")).body);
  for (let polls = 1; ; polls++) {
    const poll = await get(`${handshakePath(4)}&sid=${sid}`, "127.0.0.4");
    assert.equal(poll.status, 200, `poll ${polls}: ${poll.body}`);
    if (poll.body.split("\x1e").includes("1")) break;
    assert.ok(polls < 10, `no close packet in 10 polls: ${poll.body}`);
  }
  const closedAfter = Date.now() - opened;
  assert.ok(closedAfter >= JOIN_TIMEOUT_MS - 50, `v4 session closed after ${closedAfter} ms`);
  assert.ok(closedAfter <= JOIN_TIMEOUT_MS + 1500, `v4 session closed after ${closedAfter} ms`);
  assert.equal((await get(`${handshakePath(4)}&sid=${sid}`, "127.0.0.4")).status, 400);

  // v2: the client never comes back (coming back would join it), so the close shows in the
  // counts; then the session is gone.
  const v2Opened = Date.now();
  const v2Sid = sidOf((await get(handshakePath(3), "127.0.0.4")).body);
  assert.equal((await server.status()).sessions.pending, 1);
  await sessionsSettled("the v2 session closed");
  const v2ClosedAfter = Date.now() - v2Opened;
  assert.ok(v2ClosedAfter >= JOIN_TIMEOUT_MS - 50, `v2 session closed after ${v2ClosedAfter} ms`);
  assert.ok(v2ClosedAfter <= JOIN_TIMEOUT_MS + 1500, `v2 closed after ${v2ClosedAfter} ms`);
  assert.equal((await get(`${handshakePath(3)}&sid=${v2Sid}`, "127.0.0.4")).status, 400);
});

// Promise: attack-flood-memory
test("a long v2 and v4 session flood keeps memory within a bound, and sessions close", async () => {
  // Unbounded, each session the flood opens would stay for the heartbeat
  // (15 s) at about 10 KiB each (bench/RESULTS.md): tens of MiB at the rates below.
  const before = rssKib();
  let peak = before;
  const sampling = setInterval(() => (peak = Math.max(peak, rssKib())), 100);
  const [v4, v2] = await Promise.all([
    flood(["--source", "127.0.0.2", "--max-requests", "200000", "--connections", "8"], 5),
    flood(
      ["--source", "127.0.0.5", "--max-requests", "200000", "--connections", "8"].concat([
        "--path",
        handshakePath(3),
      ]),
      5,
    ),
  ]);
  clearInterval(sampling);
  const opened = v4.statuses["200"] + v2.statuses["200"];
  // Each address holds at most its share at a time; sessions close at the join timeout.
  const windows = Math.ceil((5000 + 500) / JOIN_TIMEOUT_MS);
  assert.ok(opened <= 2 * MAX_PENDING_PER_PEER * windows, `${opened} sessions opened`);
  assert.ok(v4.requests + v2.requests >= 5000, `only ${v4.requests + v2.requests} requests`);
  const grownMib = (peak - before) / 1024;
  assert.ok(grownMib < 24, `RSS grew ${grownMib.toFixed(1)} MiB during the flood`);
  await sessionsSettled("the flood's sessions closed");
});

// Promise: attack-session-counts, attack-session-503, attack-flood-memory, flag-max-sessions
// Promise: flag-trusted-proxies, proxy-trusted, metric-refused
test("past the session limit, 503; behind a trusted proxy each client counts", async () => {
  // Every request forwarded for another client: no address reaches its
  // share, so the server's limit is what stops the flood. Its count must end it, well
  // within the second: the clock ending it would leave requests in flight, neither answered
  // nor broken, and the counts below would not add up.
  const report = await flood(
    ["--source", PROXY, "--forwarded-for-each", "--max-requests", "2000"],
    1,
  );
  const joined = (await server.status()).sessions.joined;
  assert.equal(report.statuses["429"], undefined, JSON.stringify(report));
  assert.equal(report.statuses["200"] + joined, MAX_CONNECTIONS, JSON.stringify(report));
  // Every other request got 503, but for a kept-alive connection the server closed as the
  // flood sent its next request on it, which breaks with no answer at all.
  assert.equal(
    report.statuses["503"] + report.broken,
    report.requests - report.statuses["200"],
    JSON.stringify(report),
  );
  assert.ok(report.broken * 100 <= report.requests, JSON.stringify(report));
  const refused = await get(handshakePath(4), "127.0.0.6");
  assert.equal(refused.status, 503);
  assert.equal(refused.headers["retry-after"], "5");
  assert.equal(
    refused.body,
    `server is at its limit of ${MAX_CONNECTIONS} socket.io sessions, retry later\n`,
  );
  assert.ok((await metric('integers_refused_total{reason="session_limit"} ')) >= 1);
  // A raw stream is no session: one is admitted while every session is taken.
  const raw = rawClient(server.wsUrl, "even");
  await waitUntil("a raw client admitted at the session limit", () => raw.seen.length >= 2);
  raw.close();
  await sessionsSettled("the proxied flood's sessions closed");
});

// Promise: raw-flood-1008, limit-frames-100, attack-frame-flood
test("a raw client flooding frames is closed with 1008 and the reason", async () => {
  const closes = await Promise.all(
    Array.from({ length: 10 }, async () => {
      const ws = new WebSocket(`${server.wsUrl}/_ws/`, { localAddress: "127.0.0.7" });
      await eventWithin(ws, "open", "a flooding client's WebSocket to open");
      for (let i = 0; i < 300; i++) ws.ping();
      const timer = setTimeout(() => ws.terminate(), 10000);
      // A reset would show as an error event first, and no close code: the assertion says so.
      ws.on("error", () => {});
      const [code, reason] = await new Promise((resolve) =>
        ws.on("close", (...args) => resolve(args)),
      );
      clearTimeout(timer);
      return [code, reason.toString()];
    }),
  );
  for (const close of closes)
    assert.deepEqual(close, [1008, "too many messages: more than 100 a second"]);
});

// Promise: attack-oversized-body
test("oversized bodies: 413 on a long-polling session, 426 on the raw endpoint", async () => {
  const body = Buffer.alloc(8 * 1024 * 1024, "a");
  const sid = sidOf((await get(handshakePath(4))).body);
  const polling = await post(`${handshakePath(4)}&sid=${sid}`, body);
  assert.equal(polling.status, 413);
  assert.equal((await post("/_ws/", body)).status, 426);
});

// A POST whose answer may come before its body is read: the status line is what counts, so
// it goes over a plain TCP socket whose failed writes are ignored (the server closes once it
// has answered).
async function post(path, body) {
  const [host, port] = addr.split(":");
  const socket = connect({ host, port: Number(port) });
  socket.on("error", () => {});
  await eventWithin(socket, "connect", `a connection for POST ${path}`);
  let answer = "";
  const status = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer to POST ${path} in 15 s`)), 15000);
    const settle = () => {
      const line = answer.match(/^HTTP\/1\.1 (\d{3})/);
      if (!line) return false;
      clearTimeout(timer);
      resolve({ status: Number(line[1]) });
      return true;
    };
    socket.setEncoding("latin1").on("data", (chunk) => {
      answer += chunk;
      settle();
    });
    socket.on("close", () => {
      if (!settle()) {
        clearTimeout(timer);
        reject(new Error(`POST ${path} closed without an answer: ${answer}`));
      }
    });
  });
  socket.write(
    `POST ${path} HTTP/1.1\r\nhost: ${addr}\r\n` +
      `content-type: text/plain;charset=UTF-8\r\ncontent-length: ${body.length}\r\n\r\n`,
  );
  // In pieces, as an uploader sends, until the answer comes: the server closes once it has
  // answered, and what it has not read by then would reset the connection, answer and all.
  let answered = false;
  status.then(
    () => (answered = true),
    () => (answered = true),
  );
  for (let sent = 0; sent < body.length && !answered && !socket.destroyed; sent += 16384) {
    if (!socket.write(body.subarray(sent, sent + 16384))) {
      // A write that fails once the server has answered and closed (EPIPE) ends the sending;
      // the answer is what counts.
      const drained = eventWithin(socket, "drain", "the socket to drain", 15000).catch(() => {});
      await Promise.race([drained, status]);
    }
    await sleep(1);
  }
  try {
    return await status;
  } finally {
    socket.destroy();
  }
}

// Promise: attack-upgrade-churn
test("upgrade churn: streams opened and dropped leave nothing behind", async () => {
  for (let batch = 0; batch < 6; batch++) {
    const dropped = Array.from({ length: 50 }, async (_, i) => {
      const ws = new WebSocket(`${server.wsUrl}/_ws/${i % 2 ? "?even" : ""}`, {
        localAddress: "127.0.0.8",
      });
      await eventWithin(ws, "open", "a churned raw stream's upgrade");
      ws.terminate();
    });
    await Promise.all(dropped);
  }
  const status = await server.waitForStatus(
    "the dropped streams gone",
    (s) => s.odd.subscribers.raw === 1 && s.even.subscribers.raw === 0,
  );
  assert.equal(status.odd.subscribers.raw, 1, "only the honest raw client is left");
});

// Promise: attack-rapid-reset
test("HTTP/2 rapid reset: the connection is closed, the server serves on", async () => {
  // hyper's bound: 20 streams reset before the server took them.
  const session = http2.connect(server.url);
  await eventWithin(session, "remoteSettings", "the server's HTTP/2 settings");
  const ended = new Promise((resolve) => {
    session.on("goaway", (code) => resolve(`goaway ${code}`));
    session.on("close", () => resolve("close"));
    session.on("error", (error) => resolve(`error ${error.code}`));
  });
  let sent = 0;
  for (; sent < 1000 && !session.closed && !session.destroyed; sent++) {
    const stream = session.request({ ":path": "/status" });
    stream.on("error", () => {});
    stream.close(http2.constants.NGHTTP2_CANCEL);
    if (sent % 50 === 49) await sleep(1);
  }
  const timer = setTimeout(() => session.destroy(), 10000);
  const how = await ended;
  clearTimeout(timer);
  assert.notEqual(how, "close", "the session ended only when the test gave up on it");
  assert.match(how, /^goaway|^error/, how);
  session.destroy();
  assert.equal((await fetch(`${server.url}/status`)).status, 200);
});

// Promise: limit-head-10s, attack-slowloris
test("slowloris: a head that trickles in is dropped at the 10 s head limit", async () => {
  const started = Date.now();
  const lifetimes = await Promise.all(
    Array.from({ length: 50 }, async () => {
      const [host, port] = addr.split(":");
      const socket = connect({ host, port: Number(port), localAddress: "127.0.0.9" });
      socket.on("error", () => {});
      await eventWithin(socket, "connect", "a slowloris connection");
      socket.write("GET /status HTTP/1.1\r\nHost: t\r\n");
      const drip = setInterval(() => socket.write("x-drip: 1\r\n"), 500);
      const guard = setTimeout(() => socket.destroy(), 20000);
      // Dropped by a FIN or a reset alike: `once` would reject on the reset's error event.
      await new Promise((resolve) => socket.on("close", resolve));
      clearInterval(drip);
      clearTimeout(guard);
      return Date.now() - started;
    }),
  );
  for (const lifetime of lifetimes) {
    assert.ok(lifetime >= 9500, `dropped after ${lifetime} ms`);
    assert.ok(lifetime <= 12000, `still open after ${lifetime} ms`);
  }
});

// Promise: attack-honest-clients, flag-interval-ms
test("the honest clients saw every integer, on time, on one connection each", () => {
  // Runs last: the sequences span every attack above.
  for (const client of honest) {
    assert.equal(client.connects, 1, `${client.kind} ${client.parity} reconnected`);
    assertConsecutive(assert, client.seen, client.parity);
    const pauses = client.times.slice(1).map((time, i) => time - client.times[i]);
    const longest = Math.max(...pauses);
    // A stall an attack causes lasts seconds. One interval of slack beyond the next tick's is
    // for the long-polling client, which gets each integer on a request of its own: on a busy
    // machine, one round trip can land past the next tick.
    assert.ok(
      longest <= 3 * INTERVAL_MS,
      `${client.kind} ${client.parity} waited ${longest} ms between two integers`,
    );
  }
});
