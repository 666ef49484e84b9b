// Clients as the project's users write them, shared by the end-to-end tests: each records the
// integers it receives (and when), reconnects by itself and resumes with `after`.
import { Agent } from "node:http";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { eventWithin } from "./server.mjs";

// The official socket.io-client, resuming as the docs suggest: auth as a function of its last
// integer. `localAddress` gives it a source address of its own (what a load balancer hashes);
// other options go to `io()` as they are.
export function socketIoClient(url, parity, { localAddress, ...options } = {}) {
  const client = { parity, seen: [], times: [], connects: 0, left: [], kind: "socket.io" };
  const socket = io(`${url}/${parity}`, {
    forceNew: true,
    ...(localAddress ? { localAddress, agent: new Agent({ localAddress, keepAlive: true }) } : {}),
    ...options,
    auth: (send) => send(client.seen.length ? { after: client.seen.at(-1) } : {}),
  });
  socket.on("connect", () => {
    client.connects += 1;
  });
  socket.on("disconnect", (reason) => client.left.push({ at: Date.now(), reason }));
  socket.on("integer", (n) => {
    client.seen.push(n);
    client.times.push(Date.now());
  });
  client.close = () => socket.disconnect();
  return client;
}

// A raw WebSocket client that reconnects by itself, resuming after the last integer it saw.
export function rawClient(wsUrl, parity, { localAddress } = {}) {
  const client = { parity, seen: [], times: [], connects: 0, closed: false, kind: "raw" };
  const open = () => {
    const query = [
      parity === "even" ? "even" : null,
      client.seen.length ? `after=${client.seen.at(-1)}` : null,
    ]
      .filter(Boolean)
      .join("&");
    const ws = new WebSocket(`${wsUrl}/_ws/${query ? `?${query}` : ""}`, { localAddress });
    ws.on("open", () => {
      client.connects += 1;
    });
    ws.on("message", (data) => {
      client.seen.push(Number(data.toString()));
      client.times.push(Date.now());
    });
    ws.on("error", () => {});
    ws.on("close", () => {
      if (!client.closed) setTimeout(open, 100 + Math.random() * 200);
    });
    client.ws = ws;
  };
  open();
  client.close = () => {
    client.closed = true;
    client.ws.close();
  };
  return client;
}

// Splits unmasked server frames out of `buffer`; returns [frames, rest].
export function frames(buffer) {
  const found = [];
  let offset = 0;
  while (buffer.length - offset >= 2) {
    const opcode = buffer[offset] & 0x0f;
    const length = buffer[offset + 1] & 0x7f;
    if (length >= 126) throw new Error("server frames here are short");
    if (buffer.length - offset < 2 + length) break;
    found.push({ opcode, payload: buffer.subarray(offset + 2, offset + 2 + length) });
    offset += 2 + length;
  }
  return [found, buffer.subarray(offset)];
}

// Opens the raw stream at `path` over an extended CONNECT on `session`, collecting integers
// and the server's close frame.
export async function openTunnel(session, path) {
  const stream = session.request({
    ":method": "CONNECT",
    ":protocol": "websocket",
    ":scheme": "http",
    ":path": path,
    ":authority": "127.0.0.1",
    "sec-websocket-version": "13",
  });
  const [headers] = await eventWithin(stream, "response", `the answer to CONNECT ${path}`);
  const tunnel = { stream, status: headers[":status"], integers: [], body: "" };
  let pending = Buffer.alloc(0);
  tunnel.closed = new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no close frame on ${path}; integers: ${tunnel.integers}`)),
      10000,
    );
    timer.unref(); // a tunnel nobody waits on to close must not keep the test file running
    stream.on("data", (chunk) => {
      if (tunnel.status !== 200) {
        tunnel.body += chunk.toString("utf8");
        return;
      }
      let found;
      [found, pending] = frames(Buffer.concat([pending, chunk]));
      for (const frame of found) {
        if (frame.opcode === 0x1) tunnel.integers.push(Number(frame.payload.toString("utf8")));
        if (frame.opcode === 0x8) {
          clearTimeout(timer);
          resolve({
            code: frame.payload.readUInt16BE(0),
            reason: frame.payload.subarray(2).toString("utf8"),
          });
        }
      }
    });
  });
  tunnel.closed.catch(() => {});
  // A stream error ends the answer too; only a missing end is a failure.
  const ended = eventWithin(stream, "end", `the end of the answer to CONNECT ${path}`);
  tunnel.ended = ended.catch((error) => {
    if (error.message.startsWith("timed out")) throw error;
  });
  tunnel.ended.catch(() => {});
  return tunnel;
}
