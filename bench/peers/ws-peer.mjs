// Peer: Node `http` + `ws` serving the raw contract (one text frame per integer on /_ws,
// `?even` for the even stream, each stream advancing only while it has clients).
import http from "node:http";
import { WebSocketServer } from "ws";

const port = Number(process.env.PORT ?? 3000);
const intervalMs = Number(process.env.INTERVAL_MS ?? 1000);
const streams = { odd: { last: -1, clients: new Set() }, even: { last: 0, clients: new Set() } };

const server = http.createServer((request, response) => {
  if (request.url === "/cache-healthcheck") response.end("ok");
  else response.writeHead(404).end();
});
const sockets = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on("upgrade", (request, socket, head) => {
  const url = new URL(request.url, "http://peer");
  if (!url.pathname.startsWith("/_ws") && !url.pathname.startsWith("/socket.io")) {
    socket.destroy();
    return;
  }
  sockets.handleUpgrade(request, socket, head, (ws) => {
    const stream = streams[url.searchParams.has("even") ? "even" : "odd"];
    stream.clients.add(ws);
    ws.on("close", () => stream.clients.delete(ws));
    ws.on("error", () => stream.clients.delete(ws));
  });
});
setInterval(() => {
  for (const stream of Object.values(streams)) {
    if (stream.clients.size === 0) continue;
    stream.last += 2;
    const text = String(stream.last);
    for (const ws of stream.clients) ws.send(text);
  }
}, intervalMs);
server.listen(port, "127.0.0.1", () => {
  console.error(
    JSON.stringify({ message: "listening", addr: `127.0.0.1:${server.address().port}` }),
  );
});
