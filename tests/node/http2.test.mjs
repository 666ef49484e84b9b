// The raw stream over HTTP/2 (RFC 8441's extended CONNECT, as a proxy speaking HTTP/2 to the
// server would open it), checked with Node's own HTTP/2 client: there the WebSocket is a stream
// among others on one connection, so the server cannot write to the socket and takes another
// path than HTTP/1.1's.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http2 from "node:http2";
import { startServer, assertConsecutive, eventWithin } from "./server.mjs";
import { frames, openTunnel } from "./clients.mjs";

let server;

before(async () => {
  server = await startServer({ intervalMs: 40 });
});

after(async () => {
  assert.equal(await server.stop(), 0, "server did not exit cleanly");
});

// A masked client frame, as RFC 6455 requires of clients.
function clientFrame(opcode, payload) {
  const mask = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]));
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length]), mask, masked]);
}

// Opens the raw stream at `path` on `session` as RFC 8441 says, with `extra` headers.
function extendedConnect(session, path, extra = {}) {
  return session.request({
    ":method": "CONNECT",
    ":protocol": "websocket",
    ":scheme": "http",
    ":path": path,
    ":authority": `127.0.0.1:${server.port}`,
    "sec-websocket-version": "13",
    ...extra,
  });
}

// Promise: raw-http2
test("the raw stream over an HTTP/2 extended CONNECT", async () => {
  const session = http2.connect(server.url);
  const [settings] = await eventWithin(session, "remoteSettings", "the server's HTTP/2 settings");
  assert.equal(settings.enableConnectProtocol, true, "the server offers extended CONNECT");
  const stream = extendedConnect(session, "/_ws/?even");
  const [headers] = await eventWithin(stream, "response", "the extended CONNECT's answer");
  assert.equal(headers[":status"], 200);

  const integers = [];
  let pending = Buffer.alloc(0);
  const closeReply = new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no close reply; integers so far: ${integers}`)),
      10000,
    );
    stream.on("data", (chunk) => {
      let found;
      [found, pending] = frames(Buffer.concat([pending, chunk]));
      for (const frame of found) {
        if (frame.opcode === 0x1) {
          integers.push(Number(frame.payload.toString("utf8")));
          if (integers.length === 5) stream.write(clientFrame(0x8, [0x03, 0xe8]));
        } else if (frame.opcode === 0x8) {
          clearTimeout(timer);
          resolve(frame.payload.readUInt16BE(0));
        }
      }
    });
  });
  assert.equal(await closeReply, 1000, "the server answers the close");
  assert.ok(integers.length >= 5, `${integers}`);
  assertConsecutive(assert, integers, "even");
  stream.close();
  session.close();
});

// RFC 8441 drops HTTP/1.1's key and accept; a client that sends the key anyway still gets
// HTTP/2's 200 and the stream, never HTTP/1.1's 101.
// Promise: raw-http2
test("an HTTP/2 extended CONNECT that sends a WebSocket key anyway gets 200", async () => {
  const session = http2.connect(server.url);
  await eventWithin(session, "remoteSettings", "the server's HTTP/2 settings");
  const stream = extendedConnect(session, "/_ws/", {
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
  });
  stream.on("error", () => {});
  const [headers] = await eventWithin(stream, "response", "the extended CONNECT's answer");
  assert.equal(headers[":status"], 200);
  assert.equal(headers["sec-websocket-accept"], undefined);
  const [chunk] = await eventWithin(stream, "data", "the first integer");
  const [found] = frames(chunk);
  assert.equal(found[0]?.opcode, 0x1, "a text frame first");
  const integer = found[0].payload.toString("utf8");
  assert.match(integer, /^[0-9]*[13579]$/, "an odd integer");
  stream.close();
  session.close();
});

async function waitFor(what, done, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// Promise: raw-http2
test("over HTTP/2, even and after work as over HTTP/1.1, and a bad after is refused", async () => {
  const session = http2.connect(server.url);
  try {
    const first = await openTunnel(session, "/_ws/?even");
    assert.equal(first.status, 200);
    await waitFor("three even integers", () => first.integers.length >= 3);
    const after = first.integers[0];
    const resumed = await openTunnel(session, `/_ws/?even&after=${after}`);
    await waitFor("five resumed integers", () => resumed.integers.length >= 5);
    assert.equal(resumed.integers[0], after + 2, `${resumed.integers}`);
    assertConsecutive(assert, resumed.integers, "even");
    const refused = await openTunnel(session, "/_ws/?after=x");
    await refused.ended;
    assert.equal(refused.status, 400);
    assert.equal(refused.body, 'after must be a non-negative integer, got "x"\n');
    first.stream.close();
    resumed.stream.close();
  } finally {
    session.close();
  }
});

// Promise: raw-http2, raw-bad-frame
test("over HTTP/2, bad frames get their close codes", async () => {
  const session = http2.connect(server.url);
  try {
    const unmasked = await openTunnel(session, "/_ws/");
    await waitFor("an integer", () => unmasked.integers.length >= 1);
    unmasked.stream.write(Buffer.from([0x81, 0x02, 0x68, 0x69])); // "hi", unmasked
    assert.equal((await unmasked.closed).code, 1002);
    unmasked.stream.write(clientFrame(0x8, [0x03, 0xe8]));
    const big = await openTunnel(session, "/_ws/");
    await waitFor("an integer", () => big.integers.length >= 1);
    const payload = Buffer.alloc(5000, 0x61);
    const mask = Buffer.from([1, 2, 3, 4]);
    const header = Buffer.from([0x81, 0x80 | 126, 5000 >> 8, 5000 & 0xff]);
    big.stream.write(Buffer.concat([header, mask, payload.map((byte, i) => byte ^ mask[i % 4])]));
    const closed = await big.closed;
    assert.equal(closed.code, 1009);
    assert.match(closed.reason, /^message too big/);
    big.stream.write(clientFrame(0x8, [0x03, 0xe8]));
  } finally {
    session.close();
  }
});

// Promise: raw-shutdown-1001, restart-raw-1001
test("over HTTP/2, a shutdown closes the stream with 1001", async () => {
  const own = await startServer({ intervalMs: 40 });
  const session = http2.connect(own.url);
  try {
    const tunnel = await openTunnel(session, "/_ws/?even");
    await waitFor("an integer", () => tunnel.integers.length >= 1);
    const exit = own.stop();
    assert.deepEqual(await tunnel.closed, {
      code: 1001,
      reason: "server shutting down, reconnect",
    });
    tunnel.stream.write(clientFrame(0x8, [0x03, 0xe9])); // the close handshake's answer
    assert.equal(await exit, 0);
  } finally {
    session.destroy();
    await own.stop();
  }
});
