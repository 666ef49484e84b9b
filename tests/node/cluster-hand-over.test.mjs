// A hand-over in cluster mode: an instance of a cluster on Debian's redis-server is replaced by
// a new process started with its `--hand-over` path. Its raw clients move, live; the cluster's
// streams run on through it, with no gap and no repeat on any instance.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, assertConsecutive, waitUntil } from "./server.mjs";
import { rawClient, socketIoClient } from "./clients.mjs";
import {
  assertAlternating,
  freePort,
  metric,
  startRedis,
  watchClaimsWithdrawn,
  watchTicks,
} from "./infra.mjs";

const INTERVAL_MS = 100;

// Promise: hand-over-cluster
test("an instance of a cluster handed over: its raw clients move, the streams run on", async () => {
  const redisPort = await freePort();
  const redis = await startRedis(redisPort);
  const control = join(mkdtempSync(join(tmpdir(), "integers-cluster-hand-over-")), "c.sock");
  const cluster = ["--redis", `redis://127.0.0.1:${redisPort}`, "--cluster-name", "handed"];
  const handing = [...cluster, "--hand-over", control];
  const start = (extraArgs) => startServer({ intervalMs: INTERVAL_MS, extraArgs });
  let old;
  let other;
  let successor;
  const clients = [];
  try {
    old = await start(handing);
    other = await start(cluster);
    const raw = ["odd", "even", "odd", "even"].map((parity) => rawClient(old.wsUrl, parity));
    const socketio = ["odd", "even"].map((parity) => socketIoClient(old.url, parity));
    // A client of the instance that stays, to show the streams run on through the hand-over.
    const beside = ["odd", "even"].map((parity) => rawClient(other.wsUrl, parity));
    clients.push(...raw, ...socketio, ...beside);
    await waitUntil("every client's first integers", () =>
      clients.every((c) => c.seen.length >= 3),
    );
    const before = clients.map((c) => c.seen.length);
    successor = await start(handing);
    assert.equal(successor.port, old.port, "the new process listens on another port");
    assert.equal(await old.exited(), 0, "the old process did not exit cleanly");
    await waitUntil("every client receiving after the hand-over", () =>
      clients.every((c, i) => c.seen.length >= before[i] + 10),
    );
    for (const client of clients) assertConsecutive(assert, client.seen, client.parity);
    for (const client of [...raw, ...beside]) {
      assert.equal(client.connects, 1, "a raw client reconnected");
    }
    for (const client of socketio) assert.equal(client.connects, 2, "a socket.io client");
    assert.equal(await metric(successor.url, 'integers_hand_overs_total{outcome="taken"}'), 1);
    assert.equal(await metric(successor.url, "integers_connections_taken_over_total"), raw.length);
  } finally {
    for (const client of clients) client.close();
    if (successor) assert.equal(await successor.stop(), 0, "the new process did not exit cleanly");
    await other?.stop();
    await old?.stop();
    await redis.stop();
  }
});

// Promise: hand-over-cluster-clock
test("a leader handed over: the new process takes its lease at once, and its clock", async () => {
  const redisPort = await freePort();
  const redis = await startRedis(redisPort);
  const control = join(mkdtempSync(join(tmpdir(), "integers-cluster-clock-")), "c.sock");
  const handing = ["--redis", `redis://127.0.0.1:${redisPort}`, "--cluster-name", "clock"];
  handing.push("--hand-over", control);
  let old;
  let successor;
  let channel;
  let claims;
  const clients = [];
  try {
    channel = await watchTicks(redisPort, "clock");
    claims = await watchClaimsWithdrawn(redisPort, "clock");
    old = await startServer({ intervalMs: INTERVAL_MS, extraArgs: handing });
    clients.push(rawClient(old.wsUrl, "odd"), rawClient(old.wsUrl, "even"));
    await waitUntil("the old process leading, and its first ticks", async () => {
      const status = await old.status();
      return status.cluster.leader && channel.ticks().length >= 4;
    });
    successor = await startServer({ intervalMs: INTERVAL_MS, extraArgs: handing });
    assert.equal(await old.exited(), 0, "the old process did not exit cleanly");
    const before = channel.ticks().length;
    await waitUntil("four ticks of the new process", () => channel.ticks().length >= before + 4);
    // Alone in the cluster with the old one, the new process asks for the released lease
    // first, and ticks on the old one's clock.
    const leading = successor.event("leading: this instance ticks");
    assert.ok(leading, "the new process did not lead");
    assert.equal(leading.handed_clock, true, JSON.stringify(leading));
    assertAlternating(channel.ticks());
    for (const client of clients) {
      assertConsecutive(assert, client.seen, client.parity);
      assert.equal(client.connects, 1, "a raw client reconnected");
    }
    // The old process's claims on the streams were left to lapse, not withdrawn: its clients
    // moved, and the streams were in demand all along.
    assert.equal(claims.withdrawn(), 0, "claims withdrawn through the hand-over");
  } finally {
    for (const client of clients) client.close();
    await channel?.stop();
    await claims?.stop();
    if (successor) assert.equal(await successor.stop(), 0, "the new process did not exit cleanly");
    await old?.stop();
    await redis.stop();
  }
});
