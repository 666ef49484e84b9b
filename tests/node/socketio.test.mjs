// The socket.io contract, checked with the official socket.io-client from npm.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { io, Manager } from "socket.io-client";
import WebSocket from "ws";
import { startServer, collect, assertConsecutive, eventWithin } from "./server.mjs";

let server;
const sockets = [];

before(async () => {
  server = await startServer({ intervalMs: 40 });
});

after(async () => {
  for (const socket of sockets) socket.disconnect();
  assert.equal(await server.stop(), 0, "server did not exit cleanly");
});

// A client of its own connection, so tests do not share a Manager by accident.
function connect(namespace, options = {}) {
  const socket = io(`${server.url}${namespace}`, {
    forceNew: true,
    reconnection: false,
    ...options,
  });
  sockets.push(socket);
  return socket;
}

function integers(socket, count) {
  return collect((push) => socket.on("integer", push), count);
}

function rawIntegers(path, count) {
  const ws = new WebSocket(`${server.wsUrl}${path}`);
  return collect(
    (push) =>
      ws.on("message", (data, isBinary) => {
        assert.equal(isBinary, false, "raw integers are text frames");
        push(Number(data.toString()));
      }),
    count,
  ).finally(() => ws.close());
}

// Promise: sio-namespaces, sio-event
test("namespaces /odd and /even emit 'integer' with one number", async () => {
  for (const parity of ["odd", "even"]) {
    const socket = connect(`/${parity}`);
    const args = await collect((push) => socket.on("integer", (...a) => push(a)), 4);
    for (const a of args)
      assert.equal(a.length, 1, `expected one argument, got ${JSON.stringify(a)}`);
    assertConsecutive(
      assert,
      args.map((a) => a[0]),
      parity,
    );
    socket.disconnect();
  }
});

// Promise: sio-event
test('the wire format is 42/<ns>,["integer",N]', async () => {
  const ws = new WebSocket(`${server.wsUrl}/socket.io/?EIO=4&transport=websocket`);
  const frames = [];
  ws.on("message", (data) => {
    const frame = data.toString();
    if (frame === "2")
      ws.send("3"); // answer heartbeats, and leave them out of what we check
    else frames.push(frame);
  });
  await eventWithin(ws, "open", "the engine.io WebSocket to open");
  ws.send("40/even,");
  const deadline = Date.now() + 5000;
  while (frames.filter((f) => f.startsWith("42")).length < 2 && Date.now() < deadline)
    await sleep(10);
  ws.close();
  assert.match(frames[0], /^0\{"sid":/, "engine.io open packet first");
  assert.match(frames[1], /^40\/even,\{"sid":"[^"]+"\}$/, "namespace connect acknowledged");
  const events = frames.filter((f) => f.startsWith("42"));
  assert.ok(events.length >= 2, `no events: ${frames}`);
  for (const frame of events) assert.match(frame, /^42\/even,\["integer",\d*[02468]\]$/);
});

for (const [name, options, expectedTransport] of [
  ["websocket only", { transports: ["websocket"] }, "websocket"],
  ["polling only", { transports: ["polling"] }, "polling"],
  ["polling upgraded to websocket", {}, "websocket"],
]) {
  // Promise: sio-engineio, sio-transports
  test(`transport: ${name}`, async () => {
    const socket = connect("/odd", options);
    const values = await integers(socket, 6);
    assertConsecutive(assert, values, "odd");
    assert.equal(socket.io.engine.transport.name, expectedTransport);
    socket.disconnect();
  });
}

// Promise: sio-root
test("namespace / is odd by default, even with ?even or auth { even: true }", async () => {
  const cases = [
    [{}, "odd"],
    [{ query: { even: "" } }, "even"],
    [{ query: { even: "1" } }, "even"],
    [{ auth: { even: true } }, "even"],
    [{ auth: { even: false } }, "odd"],
  ];
  for (const [options, parity] of cases) {
    const socket = connect("/", options);
    assertConsecutive(assert, await integers(socket, 3), parity);
    socket.disconnect();
  }
});

// Promise: sio-namespaces
test("namespaces multiplexed on one connection each get their own stream", async () => {
  const odd = io(`${server.url}/odd`, { reconnection: false });
  const even = io(`${server.url}/even`, { reconnection: false });
  sockets.push(odd, even);
  assert.equal(odd.io, even.io, "the client shares one Manager");
  const [odds, evens] = await Promise.all([integers(odd, 4), integers(even, 4)]);
  assertConsecutive(assert, odds, "odd");
  assertConsecutive(assert, evens, "even");
  odd.disconnect();
  even.disconnect();
});

// Two sockets on one Manager (one connection), each with its namespace and auth, and the
// stream each must get.
async function sharingOneConnection(managerOptions, wanted) {
  const manager = new Manager(server.url, { reconnection: false, ...managerOptions });
  const opened = wanted.map(([namespace, auth]) => manager.socket(namespace, { auth }));
  sockets.push(...opened);
  for (const socket of opened) socket.connect();
  const got = await Promise.all(opened.map((socket) => integers(socket, 3)));
  wanted.forEach(([, , parity], i) => assertConsecutive(assert, got[i], parity));
  for (const socket of opened) socket.disconnect();
}

// Promise: sio-namespaces
test("/odd and /even keep their stream whatever the connection's query or auth asks", async () => {
  // The connection's query asks `/` for even; each namespace's auth asks for the other stream.
  await sharingOneConnection({ query: { even: "" } }, [
    ["/odd", { even: true }, "odd"],
    ["/even", { even: false }, "even"],
  ]);
});

// Promise: sio-root
test("/ with auth { even: true } on a connection shared with /odd is even", async () => {
  // The second namespace rides on the first one's connection, whose query it cannot change:
  // auth is how it asks for even.
  await sharingOneConnection({}, [
    ["/odd", undefined, "odd"],
    ["/", { even: true }, "even"],
  ]);
});

// Promise: sio-bad-namespace
test("an unknown namespace gets connect_error", async () => {
  const socket = connect("/nope");
  const [error] = await eventWithin(socket, "connect_error", "connect_error for /nope");
  assert.equal(error.message, "Invalid namespace");
  assert.equal(socket.connected, false);
});

// Promise: sio-bad-namespace, v2-socket-query-v4-unchanged
test("a v4 connect packet naming a namespace with a query gets today's refusal", async () => {
  // The official v4 client puts a URL's query on the connection; written by hand, a namespace
  // with one is a namespace the server does not have, as it always was (the v2 rewrite is for
  // engine.io v3 alone).
  const ws = new WebSocket(`${server.wsUrl}/socket.io/?EIO=4&transport=websocket`);
  const messages = [];
  ws.on("message", (data) => messages.push(data.toString()));
  try {
    await eventWithin(ws, "open", "the engine.io v4 WebSocket open");
    const deadline = Date.now() + 10000;
    while (!messages.some((m) => m.startsWith("0{"))) {
      if (Date.now() > deadline) throw new Error(`no engine.io open packet: ${messages}`);
      await sleep(10);
    }
    ws.send("40/odd?after=1,");
    while (!messages.some((m) => m.startsWith("44"))) {
      if (Date.now() > deadline) throw new Error(`no connect_error: ${messages}`);
      await sleep(10);
    }
    assert.equal(
      messages.find((m) => m.startsWith("44")),
      '44/odd?after=1,{"message":"Invalid namespace"}',
    );
  } finally {
    ws.terminate();
  }
});

// Promise: stream-one-counter
test("socket.io and raw clients of one parity receive identical integers", async () => {
  for (const parity of ["odd", "even"]) {
    const socket = connect(`/${parity}`);
    const fromSocketIo = integers(socket, 12);
    // The raw client joins once the socket.io client is receiving, so their integers overlap.
    await eventWithin(socket, "integer", `a first ${parity} integer over socket.io`);
    const fromRaw = await rawIntegers(`/_ws/${parity === "even" ? "?even" : ""}`, 6);
    const seen = await fromSocketIo;
    assertConsecutive(assert, seen, parity);
    assertConsecutive(assert, fromRaw, parity);
    const start = seen.indexOf(fromRaw[0]);
    assert.ok(start > 0, `raw client's ${fromRaw[0]} is not in the socket.io client's ${seen}`);
    assert.deepEqual(seen.slice(start, start + fromRaw.length), fromRaw);
    socket.disconnect();
  }
});

// Promise: stream-idle
test("idle rule: an unwatched stream keeps its value; odd and even are independent", async () => {
  await server.waitForStatus(
    "no subscribers",
    (s) =>
      s.odd.subscribers.socketio +
        s.odd.subscribers.raw +
        s.even.subscribers.socketio +
        s.even.subscribers.raw ===
      0,
  );
  const before = await server.status();
  const odd = connect("/odd");
  const first = await integers(odd, 3);
  odd.disconnect();
  const lastOdd = first.at(-1);
  await server.waitForStatus("odd idle", (s) => !s.odd.running && s.odd.subscribers.socketio === 0);
  await sleep(40 * 8);
  const idle = await server.status();
  assert.equal(idle.even.last, before.even.last, "even moved while only odd was wanted");
  const again = connect("/odd");
  const next = await integers(again, 2);
  assert.deepEqual(next, [idle.odd.last + 2, idle.odd.last + 4]);
  assert.ok(
    idle.odd.last >= lastOdd && idle.odd.last <= lastOdd + 2,
    `odd ran on while idle: ${idle.odd.last} after ${lastOdd}`,
  );
  again.disconnect();
});

// Promise: stream-exactly-once
test("churn: random joins and leaves on both protocols never break a sequence", async () => {
  const RUN_MS = 4000;
  const CLIENTS = 20;
  const deadline = Date.now() + RUN_MS;
  let sequences = 0;
  let seed = 12345;
  const random = (bound) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % bound;
  };
  async function oneClient() {
    while (Date.now() < deadline) {
      const parity = random(2) ? "even" : "odd";
      const wanted = 1 + random(5);
      let values;
      switch (random(3)) {
        case 0: {
          const socket = connect(`/${parity}`, { transports: ["websocket"] });
          values = await integers(socket, wanted);
          socket.disconnect();
          break;
        }
        case 1: {
          const socket = connect(`/${parity}`, { transports: ["polling"] });
          values = await integers(socket, wanted);
          socket.disconnect();
          break;
        }
        default:
          values = await rawIntegers(`/_ws/${parity === "even" ? "?even" : ""}`, wanted);
      }
      assertConsecutive(assert, values, parity);
      sequences += 1;
      await sleep(random(50));
    }
  }
  await Promise.all(Array.from({ length: CLIENTS }, oneClient));
  assert.ok(sequences > CLIENTS * 5, `churn too light: ${sequences}`);
  const status = await server.waitForStatus(
    "everyone gone and the generator idle",
    (s) =>
      !s.odd.running &&
      !s.even.running &&
      s.odd.subscribers.socketio +
        s.odd.subscribers.raw +
        s.even.subscribers.socketio +
        s.even.subscribers.raw ===
        0,
  );
  await sleep(40 * 5);
  assert.deepEqual(await server.status(), status, "something moved after everyone left");
});
