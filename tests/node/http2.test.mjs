// The raw stream over HTTP/2 (RFC 8441's extended CONNECT, as a proxy speaking HTTP/2 to the
// server would open it), checked with Node's own HTTP/2 client: there the WebSocket is a stream
// among others on one connection, so the server cannot write to the socket and takes another
// path than HTTP/1.1's.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http2 from "node:http2";
import { once } from "node:events";
import { startServer, assertConsecutive } from "./server.mjs";

let server;

before(async () => {
  server = await startServer({ intervalMs: 40 });
});

after(async () => {
  assert.equal(await server.stop(), 0, "server did not exit cleanly");
});

// Splits unmasked server frames out of `buffer`; returns [frames, rest].
function frames(buffer) {
  const found = [];
  let offset = 0;
  while (buffer.length - offset >= 2) {
    const opcode = buffer[offset] & 0x0f;
    const length = buffer[offset + 1] & 0x7f;
    assert.ok(length < 126, "server frames here are short");
    if (buffer.length - offset < 2 + length) break;
    found.push({ opcode, payload: buffer.subarray(offset + 2, offset + 2 + length) });
    offset += 2 + length;
  }
  return [found, buffer.subarray(offset)];
}

// A masked client frame, as RFC 6455 requires of clients.
function clientFrame(opcode, payload) {
  const mask = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]));
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length]), mask, masked]);
}

test("the raw stream over an HTTP/2 extended CONNECT", async () => {
  const session = http2.connect(server.url);
  const [settings] = await once(session, "remoteSettings");
  assert.equal(settings.enableConnectProtocol, true, "the server offers extended CONNECT");
  const stream = session.request({
    ":method": "CONNECT",
    ":protocol": "websocket",
    ":scheme": "http",
    ":path": "/_ws/?even",
    ":authority": `127.0.0.1:${server.port}`,
    "sec-websocket-version": "13",
  });
  const [headers] = await once(stream, "response");
  assert.equal(headers[":status"], 200);

  const integers = [];
  let pending = Buffer.alloc(0);
  const closeReply = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no close reply; integers so far: ${integers}`)), 10000);
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
