// Resuming over socket.io with auth.after, and the answers to an after that cannot be honoured.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { startServer, collect, assertConsecutive } from "./server.mjs";

let server;
const closers = [];

before(async () => {
  server = await startServer({ intervalMs: 30 });
});

after(async () => {
  for (const close of closers) close();
  assert.equal(await server.stop(), 0);
});

function connect(namespace, options = {}) {
  const socket = io(`${server.url}${namespace}`, {
    forceNew: true,
    reconnection: false,
    ...options,
  });
  closers.push(() => socket.disconnect());
  return socket;
}

const integers = (socket, count) => collect((push) => socket.on("integer", push), count);

// Promise: sio-after-replay, resume-sio-auth
test("auth.after replays what was missed, then the live stream", async () => {
  // A raw client keeps the even stream running while the socket.io client is away.
  const keeper = new WebSocket(`${server.wsUrl}/_ws/?even`);
  closers.push(() => keeper.close());
  const kept = [];
  keeper.on("message", (data) => kept.push(Number(data.toString())));

  const first = connect("/even");
  const seen = await integers(first, 3);
  first.disconnect();
  const last = seen.at(-1);
  await collect((push) => keeper.on("message", push), 10);

  for (const [namespace, options] of [
    ["/even", {}],
    ["/", { auth: { even: true } }],
    ["/even", { transports: ["polling"] }],
  ]) {
    const back = connect(namespace, { ...options, auth: { ...options.auth, after: last } });
    const resumed = await integers(back, 15);
    assert.equal(resumed[0], last + 2, `${namespace} ${JSON.stringify(options)}: ${resumed}`);
    assertConsecutive(assert, resumed, "even");
    for (const n of kept.filter((n) => n > last && n <= resumed.at(-1))) {
      assert.ok(resumed.includes(n), `missed ${n} that the live client saw`);
    }
    back.disconnect();
  }
});

// Promise: sio-after-replay, resume-sio-auth
test("auth.after as a function resumes at every reconnect", async () => {
  let last = null;
  const socket = connect("/odd", { auth: (send) => send(last === null ? {} : { after: last }) });
  const values = [];
  socket.on("integer", (n) => {
    last = n;
    values.push(n);
  });
  await collect((push) => socket.on("integer", push), 3);
  socket.disconnect();
  // A raw client keeps odd moving while the socket.io client is away: reconnecting without
  // its after, it would skip what the keeper saw.
  const keeper = new WebSocket(`${server.wsUrl}/_ws/`);
  closers.push(() => keeper.close());
  const kept = await collect(
    (push) => keeper.on("message", (data) => push(Number(data.toString()))),
    5,
  );
  assert.ok(kept[0] > last, `odd did not move on from ${last}: ${kept}`);
  socket.connect();
  await collect((push) => socket.on("integer", push), 10);
  assertConsecutive(assert, values, "odd");
  for (const n of kept)
    assert.ok(values.includes(n), `missed ${n}, produced while away: ${values}`);
});

// Promise: sio-after-bad, bad-input-answers
test("an after that cannot be honoured gets connect_error with the reason", async () => {
  const odd = connect("/odd");
  await integers(odd, 2);
  const cases = [
    ["/odd", { after: "abc" }, /after must be a non-negative integer, got "abc"/],
    ["/odd", { after: -1 }, /after must be a non-negative integer, got "-1"/],
    ["/odd", { after: 1.5 }, /non-negative integer/],
    ["/odd", { after: [3] }, /non-negative integer/],
    ["/odd", { after: 10 ** 12 }, /is ahead of the odd stream, whose last integer is \d+/],
    ["/", { even: true, after: 10 ** 12 }, /ahead of the even stream/],
  ];
  for (const [namespace, auth, message] of cases) {
    const socket = connect(namespace, { auth });
    const error = await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no connect_error for ${JSON.stringify(auth)} in 10 s`)),
        10000,
      );
      socket.once("connect_error", (error) => {
        clearTimeout(timer);
        resolve(error);
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        reject(new Error(`${JSON.stringify(auth)} was accepted`));
      });
    });
    assert.match(error.message, message, JSON.stringify(auth));
  }
  // Nothing of that disturbed the stream.
  assertConsecutive(assert, await integers(odd, 3), "odd");
});
