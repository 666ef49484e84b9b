// Peer: Node socket.io v4 serving the socket.io contract (namespaces /odd and /even, event
// `integer`, each stream advancing only while its namespace has sockets).
import http from "node:http";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 3000);
const intervalMs = Number(process.env.INTERVAL_MS ?? 1000);
const last = { odd: -1, even: 0 };

const server = http.createServer((request, response) => {
  if (request.url === "/cache-healthcheck") response.end("ok");
});
const io = new Server(server, { serveClient: false, perMessageDeflate: false });
const namespaces = { odd: io.of("/odd"), even: io.of("/even") };
setInterval(() => {
  for (const [type, namespace] of Object.entries(namespaces)) {
    if (namespace.sockets.size === 0) continue;
    last[type] += 2;
    namespace.emit("integer", last[type]);
  }
}, intervalMs);
server.listen(port, "127.0.0.1", () => {
  console.error(
    JSON.stringify({ message: "listening", addr: `127.0.0.1:${server.address().port}` }),
  );
});
