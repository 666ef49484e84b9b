// socket.io v2 clients (engine.io v3), checked with the official socket.io-client 2.5.0 from
// npm beside 4.8.4: namespaces over every transport, the idle rule, `/` from the moment of
// connect, resume across a restart with the README's query recipe, refusals, and one stream
// seen alike by v2, v4 and raw clients.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import ioV2 from "socket.io-client-v2";
import { io as ioV4 } from "socket.io-client";
import { startServer, startGate, freshStateFile, collect, assertConsecutive } from "./server.mjs";
import { rawClient } from "./clients.mjs";

const INTERVAL_MS = 50;
// How long the server waits before it takes a v2 connection to want `/` (README).
const ROOT_DECISION_MS = 1000;

let server;
const opened = [];

before(async () => {
  server = await startServer({ intervalMs: INTERVAL_MS });
});

after(async () => {
  for (const socket of opened) socket.close();
  assert.equal(await server.stop(), 0, "server did not exit cleanly");
});

// A v2 client of its own connection, without reconnection unless asked for.
function connectV2(url, namespace, options = {}) {
  const manager = new ioV2.Manager(url, { reconnection: false, ...options });
  const socket = manager.socket(namespace);
  opened.push(socket);
  return socket;
}

async function waitUntil(what, done, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// The first `what` event of `emitter`, within a deadline.
function first(emitter, what, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no ${what} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    emitter.once(what, (value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

const TRANSPORTS = [
  ["websocket only", { transports: ["websocket"] }, "websocket"],
  ["polling only", { transports: ["polling"] }, "polling"],
  ["polling upgraded to websocket", {}, "websocket"],
];
const NAMESPACES = [
  ["/odd", "", "odd"],
  ["/even", "", "even"],
  ["/", "", "odd"],
  ["/", "?even", "even"],
];

for (const [transportName, options, transport] of TRANSPORTS) {
  for (const [namespace, query, parity] of NAMESPACES) {
    // Promise: sio-engineio, sio-transports, v2-namespaces
    test(`v2 ${transportName}: ${namespace}${query} streams ${parity}`, async () => {
      const socket = connectV2(`${server.url}${query}`, namespace, options);
      const args = await collect((push) => socket.on("integer", (...a) => push(a)), 5);
      for (const a of args)
        assert.equal(a.length, 1, `expected one argument: ${JSON.stringify(a)}`);
      assertConsecutive(
        assert,
        args.map((a) => a[0]),
        parity,
      );
      if (transport === "websocket") {
        await waitUntil(
          "the upgrade to websocket",
          () => socket.io.engine.transport.name === "websocket",
        );
      }
      assert.equal(socket.io.engine.transport.name, transport);
      socket.close();
    });
  }
}

// Promise: v2-root-idle, metric-connects
test("a v2 client of /even alone leaves odd idle, even past the decision for /", async () => {
  const own = await startServer({ intervalMs: INTERVAL_MS });
  try {
    const socket = connectV2(own.url, "/even", { transports: ["websocket"] });
    // Enough even integers to span the decision for `/` twice over.
    const count = Math.ceil((2 * ROOT_DECISION_MS) / INTERVAL_MS);
    const values = await collect((push) => socket.on("integer", push), count);
    assertConsecutive(assert, values, "even");
    const status = await own.status();
    assert.deepEqual(status.odd, {
      subscribers: { raw: 0, socketio: 0 },
      last: null,
      running: false,
    });
    assert.equal(status.even.subscribers.socketio, 1);
    // Not even for a moment: `/` never joined a stream.
    const metrics = await (await fetch(`${own.url}/metrics`)).text();
    assert.match(metrics, /^integers_connects_total\{protocol="socketio"\} 1$/m);
    const joined = own
      .log()
      .split("\n")
      .filter((line) => line.includes('"message":"connected"'));
    assert.equal(joined.length, 1, `one socket joined a stream: ${joined}`);
    assert.match(joined[0], /"ns":"\/even"/);
    socket.close();
  } finally {
    await own.stop();
  }
});

// Promise: v2-root-off
test("a namespace asked for after the decision takes / off its stream", async () => {
  const own = await startServer({ intervalMs: INTERVAL_MS });
  try {
    const manager = new ioV2.Manager(own.url, { reconnection: false, transports: ["websocket"] });
    const root = manager.socket("/");
    opened.push(root);
    // `/` follows odd once the decision is made.
    await first(root, "integer", ROOT_DECISION_MS + 10000);
    assert.equal((await own.status()).odd.subscribers.socketio, 1);
    // Later, the same connection asks for /even: `/` stops following, and odd idles.
    const even = manager.socket("/even");
    opened.push(even);
    await first(even, "integer");
    await own.waitForStatus(
      "`/` off the odd stream, /even on its own",
      (s) =>
        s.odd.subscribers.socketio === 0 && !s.odd.running && s.even.subscribers.socketio === 1,
    );
    assert.equal(root.connected, true, "`/` stays connected");
    assert.match(own.log(), /socket\.io v2 client joined another namespace: `\/` stops following/);
  } finally {
    await own.stop();
  }
});

for (const [transportName, options, transport] of TRANSPORTS) {
  // Promise: v2-socket-query
  test(`v2 ${transportName}: a namespace's own query, as v2 apps give it`, async () => {
    const own = await startServer({ intervalMs: INTERVAL_MS });
    try {
      // The idiom of v2 apps: the client sends the query inside the namespace's connect
      // packet (`40/odd?token=x,`), and on its connection too.
      const sockets = ["odd", "even"].map((parity) => {
        const socket = ioV2(`${own.url}/${parity}`, {
          query: { token: `x-${parity}` },
          forceNew: true,
          reconnection: false,
          ...options,
        });
        opened.push(socket);
        return { parity, socket };
      });
      for (const { parity, socket } of sockets) {
        const args = await collect((push) => socket.on("integer", (n) => push(n)), 5);
        assertConsecutive(assert, args, parity);
      }
      for (const { socket } of sockets) {
        if (transport === "websocket") {
          await waitUntil(
            "the upgrade to websocket",
            () => socket.io.engine.transport.name === "websocket",
          );
        }
        assert.equal(socket.io.engine.transport.name, transport);
      }
      // Past the decision for `/`, neither connection follows `/` too.
      await sleep(ROOT_DECISION_MS + 200);
      const status = await own.status();
      assert.equal(status.odd.subscribers.socketio, 1, "odd's socket.io subscribers");
      assert.equal(status.even.subscribers.socketio, 1, "even's socket.io subscribers");
      for (const { socket } of sockets) socket.close();
    } finally {
      await own.stop();
    }
  });
}

// A v2 socket of its own connection over WebSocket, without reconnection, its URL carrying the
// namespace's own query.
function ownQuerySocket(url) {
  return ioV2(url, { forceNew: true, reconnection: false, transports: ["websocket"] });
}

// Promise: v2-socket-query-idle
test("a v2 client of /even with a query of its own leaves odd idle", async () => {
  const own = await startServer({ intervalMs: INTERVAL_MS });
  try {
    const socket = ownQuerySocket(`${own.url}/even?token=x`);
    opened.push(socket);
    await collect((push) => socket.on("integer", (n) => push(n)), 3);
    const { odd } = await own.status();
    await sleep(ROOT_DECISION_MS + 200);
    const status = await own.status();
    assert.equal(status.odd.running, false, "the odd stream runs");
    assert.equal(status.odd.last, odd.last, "the odd stream moved");
    assert.equal(status.odd.subscribers.socketio, 0, "odd's socket.io subscribers");
    assert.equal(status.even.running, true, "the even stream does not run");
    socket.close();
  } finally {
    await own.stop();
  }
});

// Promise: v2-socket-query-after
test("v2 resume across a restart with after in the namespace's own query", async () => {
  const stateFile = freshStateFile();
  let own = await startServer({ intervalMs: INTERVAL_MS, stateFile });
  const gate = await startGate();
  await gate.setTarget(own);
  // The connection's query carries no `after`: only the namespace's does, updated before each
  // reconnection as a v2 app updates it.
  const socket = ioV2(`${gate.url}/odd?token=x`, {
    forceNew: true,
    reconnectionDelay: 100,
    transports: ["websocket"],
  });
  const client = { seen: [], connects: 0 };
  socket.on("connect", () => {
    client.connects += 1;
  });
  socket.on("integer", (n) => client.seen.push(n));
  socket.io.on("reconnect_attempt", () => {
    if (client.seen.length) socket.query = `token=x&after=${client.seen.at(-1)}`;
  });
  let keeper;
  try {
    await waitUntil("the first integers", () => client.seen.length >= 3);
    await gate.setTarget(null);
    assert.equal(await own.stop(), 0);
    const count = client.seen.length;
    own = await startServer({ intervalMs: INTERVAL_MS, stateFile });
    keeper = rawClient(own.wsUrl, "odd");
    await waitUntil("the stream moving on without the client", () => keeper.seen.length >= 5);
    await gate.setTarget(own);
    await waitUntil("the client back and receiving", () => client.seen.length >= count + 5);
    assert.ok(client.connects >= 2, "the client never reconnected");
    assertConsecutive(assert, client.seen, "odd");
  } finally {
    socket.close();
    keeper?.close();
    gate.close();
    await own.stop();
  }
});

// Promise: v2-socket-query-refused
test("a bad after in a namespace's own query gets an error on that namespace", async () => {
  const socket = connectV2(server.url, "/odd", { transports: ["websocket"], autoConnect: false });
  socket.query = "after=x";
  socket.open();
  const errors = await refusals(socket, 1, "/odd?after=x");
  const message = typeof errors[0] === "string" ? errors[0] : errors[0]?.message;
  assert.match(message, /^after must be a non-negative integer, got "x"$/);
  assert.equal(socket.connected, false);
  socket.close();
});

// Promise: v2-socket-query-nothing-kept
test("many distinct namespace queries leave nothing behind once the sockets go", async () => {
  const own = await startServer({ intervalMs: INTERVAL_MS });
  const sockets = [];
  try {
    for (let i = 0; i < 200; i++) {
      const socket = ownQuerySocket(`${own.url}/${i % 2 ? "even" : "odd"}?token=t${i}`);
      sockets.push(socket);
    }
    await waitUntil("every socket connected", () => sockets.every((s) => s.connected));
    const during = await own.status();
    assert.equal(during.odd.subscribers.socketio + during.even.subscribers.socketio, 200);
    for (const socket of sockets) socket.close();
    const after = await own.waitForStatus(
      "every session and subscriber gone",
      (s) =>
        s.sessions.joined + s.sessions.pending === 0 &&
        s.odd.subscribers.socketio + s.even.subscribers.socketio === 0,
    );
    assert.equal(after.sessions.joined, 0);
    // The same namespaces serve the next client: nothing was made per query.
    const next = ownQuerySocket(`${own.url}/odd?token=new`);
    sockets.push(next);
    await collect((push) => next.on("integer", (n) => push(n)), 3);
  } finally {
    for (const socket of sockets) socket.close();
    await own.stop();
  }
});

// Promise: v2-root-join
test("a v2 client of / gets every odd integer from the moment it connected", async () => {
  // A keeper keeps odd moving throughout.
  const keeper = ioV4(`${server.url}/odd`, { forceNew: true, transports: ["websocket"] });
  opened.push(keeper);
  await first(keeper, "integer");
  const before = (await server.status()).odd.last;
  const socket = connectV2(server.url, "/", { transports: ["websocket"] });
  const values = [];
  socket.on("integer", (n) => values.push(n));
  await first(socket, "connect");
  // Read once connected: the last odd integer the server had produced by then, or one more.
  const atConnect = (await server.status()).odd.last;
  await waitUntil("the first odd integers on /", () => values.length >= 5);
  assertConsecutive(assert, values, "odd");
  assert.ok(values[0] > before, `replayed ${values[0]}, from before it connected (${before})`);
  assert.ok(
    values[0] <= atConnect + 2,
    `missed integers after connecting: the first was ${values[0]}, the stream stood at ` +
      `${atConnect}`,
  );
  socket.close();
  keeper.close();
});

// Promise: v2-after-query, resume-v2-query, resume-after-restart
test("v2 resume across a restart: the README's query recipe misses nothing", async () => {
  const stateFile = freshStateFile();
  let own = await startServer({ intervalMs: INTERVAL_MS, stateFile });
  const gate = await startGate();
  await gate.setTarget(own);
  const clients = ["/odd", "/even", "/"].map((namespace) => {
    const socket = ioV2(`${gate.url}${namespace}`, { forceNew: true, reconnectionDelay: 100 });
    const client = { namespace, socket, seen: [], connects: 0 };
    socket.on("connect", () => {
      client.connects += 1;
    });
    socket.on("integer", (n) => client.seen.push(n));
    socket.io.on("reconnect_attempt", () => {
      if (client.seen.length) socket.io.opts.query = { after: client.seen.at(-1) };
    });
    return client;
  });
  let keepers = [];
  try {
    await waitUntil("every client's first integers", () =>
      clients.every((c) => c.seen.length >= 3),
    );
    await gate.setTarget(null);
    assert.equal(await own.stop(), 0);
    const counts = clients.map((c) => c.seen.length);
    own = await startServer({ intervalMs: INTERVAL_MS, stateFile });
    keepers = ["odd", "even"].map((parity) => rawClient(own.wsUrl, parity));
    await waitUntil("both streams moving on without the clients", () =>
      keepers.every((k) => k.seen.length >= 5),
    );
    await gate.setTarget(own);
    await waitUntil("every client back and receiving", () =>
      clients.every((c, i) => c.seen.length >= counts[i] + 5),
    );
    for (const { namespace, seen, connects } of clients) {
      assert.ok(connects >= 2, `${namespace} never reconnected`);
      assertConsecutive(assert, seen, namespace === "/even" ? "even" : "odd");
    }
  } finally {
    for (const { socket } of clients) socket.close();
    for (const keeper of keepers) keeper.close();
    gate.close();
    await own.stop();
  }
});

// Promise: v2-refusals
test("v2 refusals: a bad after, an after ahead, an unknown namespace", async () => {
  // A v2 client hands `/`'s errors to every one of its sockets, and `/` reads the same
  // connection query: a socket of `/odd` or `/even` refused for its own `after` hears two
  // errors, `/`'s and its namespace's own, and never connects.
  const cases = [
    ["/odd", "?after=x", /^after must be a non-negative integer, got "x"$/, 2],
    ["/", "?after=-1", /^after must be a non-negative integer, got "-1"$/, 1],
    // `?even` makes `/` ask for even too.
    [
      "/even",
      `?even&after=${Number.MAX_SAFE_INTEGER}`,
      /^after=\d+ is ahead of the even stream, whose last integer is \d+$/,
      2,
    ],
    ["/nope", "", /^Invalid namespace$/, 1],
  ];
  for (const [namespace, query, expected, count] of cases) {
    const socket = connectV2(`${server.url}${query}`, namespace, { transports: ["websocket"] });
    const errors = await refusals(socket, count, `${namespace}${query}`);
    for (const error of errors) {
      const message = typeof error === "string" ? error : error?.message;
      assert.match(message, expected, `${namespace}${query}: ${JSON.stringify(error)}`);
    }
    assert.equal(socket.connected, false, `${namespace}${query} connected`);
    socket.close();
  }
});

// The first `count` errors of a v2 socket, failing at once if it connects instead.
function refusals(socket, count, what, timeoutMs = 10000) {
  const errors = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${what}: ${errors.length} of ${count} errors in ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on("connect", () => {
      clearTimeout(timer);
      reject(new Error(`${what} connected after ${errors.length} errors`));
    });
    socket.on("error", (error) => {
      errors.push(error);
      if (errors.length === count) {
        clearTimeout(timer);
        resolve(errors);
      }
    });
  });
}

// Promise: limit-connections-503
test("v2 refusals: the connection limit answers 503 and the client does not connect", async () => {
  const own = await startServer({ intervalMs: INTERVAL_MS, extraArgs: ["--max-connections", "1"] });
  try {
    const held = connectV2(own.url, "/odd", { transports: ["websocket"] });
    await first(held, "integer");
    const response = await fetch(`${own.url}/socket.io/?EIO=3&transport=polling`);
    assert.equal(response.status, 503);
    assert.equal(await response.text(), "server is at its limit of 1 connections, retry later\n");
    const refused = connectV2(own.url, "/odd", { transports: ["polling"] });
    await first(refused, "connect_error");
    assert.equal(refused.connected, false);
    held.close();
  } finally {
    await own.stop();
  }
});

// Promise: v2-namespaces, stream-one-counter
test("v2, v4 and raw clients of one stream see the same integers", async () => {
  const v2 = connectV2(server.url, "/even", { transports: ["websocket"] });
  const v4 = ioV4(`${server.url}/even`, { forceNew: true, transports: ["websocket"] });
  opened.push(v4);
  const raw = rawClient(server.wsUrl, "even");
  const seen = { v2: [], v4: [] };
  v2.on("integer", (n) => seen.v2.push(n));
  v4.on("integer", (n) => seen.v4.push(n));
  try {
    await waitUntil(
      "ten integers on every client",
      () => seen.v2.length >= 10 && seen.v4.length >= 10 && raw.seen.length >= 10,
    );
    const from = Math.max(seen.v2[0], seen.v4[0], raw.seen[0]);
    const upTo = Math.min(seen.v2.at(-1), seen.v4.at(-1), raw.seen.at(-1));
    assert.ok(upTo - from >= 8, `the three saw too little in common: ${from}..${upTo}`);
    const window = (values) => values.filter((n) => n >= from && n <= upTo);
    for (const values of [seen.v2, seen.v4, raw.seen]) assertConsecutive(assert, values, "even");
    assert.deepEqual(window(seen.v2), window(raw.seen));
    assert.deepEqual(window(seen.v4), window(raw.seen));
  } finally {
    v2.close();
    v4.close();
    raw.close();
  }
});
