// Clients as the project's users write them, shared by the end-to-end tests: each records the
// integers it receives (and when), reconnects by itself and resumes with `after`.
import { Agent } from "node:http";
import { io } from "socket.io-client";
import WebSocket from "ws";

// The official socket.io-client, resuming as the docs suggest: auth as a function of its last
// integer. `localAddress` gives it a source address of its own (what a load balancer hashes);
// other options go to `io()` as they are.
export function socketIoClient(url, parity, { localAddress, ...options } = {}) {
  const client = { parity, seen: [], times: [], connects: 0, kind: "socket.io" };
  const socket = io(`${url}/${parity}`, {
    forceNew: true,
    ...(localAddress ? { localAddress, agent: new Agent({ localAddress, keepAlive: true }) } : {}),
    ...options,
    auth: (send) => send(client.seen.length ? { after: client.seen.at(-1) } : {}),
  });
  socket.on("connect", () => {
    client.connects += 1;
  });
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
