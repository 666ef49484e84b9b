// Cluster mode: three instances sharing one Redis (Debian's redis-server, on a random loopback
// port) behind Debian's nginx running the documented example config, with real clients: the
// official socket.io-client and `ws`.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { get } from "node:http";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { launchChromium } from "./chromium.mjs";
import { eventWithin, startServer } from "./server.mjs";
import { rawClient, socketIoClient } from "./clients.mjs";
import {
  assertGapless,
  freePort,
  healthy,
  metric,
  metricOr0,
  startNginx,
  startNginxSite,
  startRedis,
  waitUntil,
} from "./infra.mjs";

const INTERVAL_MS = 200;
// The leader's lease: one interval and half of one, at least 200 ms more (docs/cluster.md).
const LEASE_MS = INTERVAL_MS + Math.max(INTERVAL_MS / 2, 200);
// A follower's look at the lease: a quarter interval, at least 50 ms.
const LEASE_POLL_MS = Math.max(INTERVAL_MS / 4, 50);

// The HTTP status of a GET of `url` sent from `localAddress`.
function statusFrom(url, localAddress) {
  return new Promise((resolve, reject) => {
    const request = get(url, { localAddress, agent: false, timeout: 5000 }, (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.on("timeout", () => request.destroy(new Error(`no answer to ${url} in 5 s`)));
    request.on("error", reject);
  });
}

// When `instance` logged `message`, each time, in milliseconds since the epoch.
function logTimes(instance, message) {
  return instance
    .log()
    .split("\n")
    .filter((line) => line.includes(`"message":"${message}"`))
    .map((line) => Date.parse(JSON.parse(line).timestamp));
}

// The first value `probe` gives that is not undefined, within a deadline.
async function waitFor(what, probe, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// Waits until every panel of the demo page has received `count` integers.
function everyPanelReceived(page, count) {
  return page.waitForFunction(
    (count) =>
      [...document.querySelectorAll(".panel")].every(
        (panel) => Number(panel.dataset.received ?? 0) >= count,
      ),
    count,
    { timeout: 20000 },
  );
}

// Debian's Chromium on the demo page at `url`, collecting the page's errors.
async function openDemoPage(url) {
  const browser = await launchChromium();
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`${url}/`);
  return { browser, page, errors };
}

describe("three instances sharing one Redis", () => {
  let redis;
  let redisPort;
  let instances = [];
  let nginx;
  let killedPort;
  // Every character a cluster name may hold: letters, digits, `-`, `_` and `.`.
  const cluster = `test_${process.pid}.a-1`;
  const startInstance = (port = 0) =>
    startServer({
      intervalMs: INTERVAL_MS,
      port,
      extraArgs: ["--redis", `redis://127.0.0.1:${redisPort}`, "--cluster-name", cluster],
    });
  // 24 clients through nginx, from source addresses 127.0.0.FIRST on: half raw, half socket.io
  // (with `options`), half of each odd and half even, every one resuming by itself.
  const mixedClients = (first, options = {}) =>
    Array.from({ length: 24 }, (_, i) => {
      const localAddress = `127.0.0.${first + i}`;
      const parity = i % 2 ? "even" : "odd";
      return i % 4 < 2
        ? rawClient(nginx.wsUrl, parity, { localAddress })
        : socketIoClient(nginx.url, parity, {
            localAddress,
            reconnectionDelay: 100,
            reconnectionDelayMax: 500,
            ...options,
          });
    });

  before(async () => {
    redisPort = await freePort();
    redis = await startRedis(redisPort);
    for (let i = 0; i < 3; i++) instances.push(await startInstance());
    nginx = await startNginx(
      await freePort(),
      instances.map((instance) => instance.port),
    );
    await waitUntil(
      "one leader",
      async () =>
        (await Promise.all(instances.map((instance) => instance.status()))).filter(
          (s) => s.cluster.leader,
        ).length === 1,
    );
  });

  after(async () => {
    await nginx?.stop();
    for (const instance of instances) await instance.stop();
    await redis?.stop();
  });

  // Promise: cluster-nginx-example, cluster-nginx-sticky, cluster-same-integers
  // Promise: cluster-nginx-ports, flag-redis, proxy-sticky
  it("gives every client of a type the same integers, whichever instance it is on", async (t) => {
    // First the streams run for a while with clients on one instance only: instances that
    // kept counters of their own would then start their clients over at 1 and 2.
    const early = [rawClient(instances[0].wsUrl, "odd"), rawClient(instances[0].wsUrl, "even")];
    await waitUntil("the first instance's streams under way", () =>
      early.every((c) => c.seen.length >= 5),
    );
    const clients = [...early];
    for (const instance of instances) {
      for (const parity of ["odd", "even"]) {
        clients.push(rawClient(instance.wsUrl, parity));
        clients.push(socketIoClient(instance.url, parity));
      }
    }
    // And through nginx, with socket.io's default transports (long-polling, then upgrade).
    clients.push(
      socketIoClient(nginx.url, "odd", { localAddress: "127.0.0.21", reconnectionDelay: 100 }),
    );
    clients.push(
      socketIoClient(nginx.url, "even", { localAddress: "127.0.0.22", reconnectionDelay: 100 }),
    );
    try {
      await waitUntil("every client's first integers", () =>
        clients.every((c) => c.seen.length >= 3),
      );
      for (const parity of ["odd", "even"]) {
        // Every client of a stream, on every instance and through nginx, receives the same
        // integers: each gets the integer two ticks past the newest any of them has now.
        const ofType = clients.filter((c) => c.parity === parity);
        const target = Math.max(...ofType.map((c) => c.seen.at(-1))) + 4;
        await waitUntil(`every ${parity} client to reach ${target}`, () =>
          ofType.every((c) => c.seen.at(-1) >= target),
        );
        const missing = ofType.filter((c) => !c.seen.includes(target));
        assert.deepEqual(
          missing.map((c) => c.seen),
          [],
          `${parity} clients that never received ${target}`,
        );
        t.diagnostic(
          `${ofType.length} ${parity} clients on 3 instances and nginx all received ${target}`,
        );
      }
      for (const client of clients) assertGapless(client);
    } finally {
      for (const client of clients) client.close();
    }
  });

  // Promise: cluster-advance-any, cluster-idle, cluster-idle-one-tick
  it("keeps a type idle while no instance has its clients, and runs it while any has", async () => {
    const lasts = async (parity) =>
      (await Promise.all(instances.map((instance) => instance.status()))).map(
        (s) => s[parity].last,
      );
    // The previous test's clients are gone: nothing runs anywhere.
    await waitUntil("every stream idle", async () =>
      (await Promise.all(instances.map((i) => i.status()))).every(
        (s) => !s.odd.running && !s.even.running,
      ),
    );
    const idleOdd = await lasts("odd");
    const idleEven = await lasts("even");
    await sleep(5 * INTERVAL_MS);
    assert.deepEqual(await lasts("odd"), idleOdd, "odd advanced with no client anywhere");
    assert.deepEqual(await lasts("even"), idleEven, "even advanced with no client anywhere");

    // One even client on the second instance runs even everywhere, and only even.
    const client = rawClient(instances[1].wsUrl, "even");
    try {
      await waitUntil("three even integers", () => client.seen.length >= 3);
      await waitUntil("every instance past them", async () =>
        (await lasts("even")).every((last) => last >= client.seen[2]),
      );
      assert.deepEqual(await lasts("odd"), idleOdd, "odd advanced for an even client");
      // It leaves as an integer arrives, a whole interval before the next tick is due.
      const left = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no even integer to leave on")), 10000);
        client.ws.once("message", (data) => {
          clearTimeout(timer);
          client.close();
          resolve(Number(data.toString()));
        });
      });
      // At most one tick after it left (the leader may tick while its instance withdraws the
      // claim), and then none.
      await waitUntil("even idle on every instance", async () =>
        (await Promise.all(instances.map((i) => i.status()))).every((s) => !s.even.running),
      );
      const stopped = await lasts("even");
      assert.ok(
        Math.max(...stopped) <= left + 2,
        `even went on to ${stopped} after its last client left at ${left}`,
      );
      await sleep(5 * INTERVAL_MS);
      assert.deepEqual(
        await lasts("even"),
        stopped,
        "even kept advancing after its last client left",
      );
    } finally {
      client.close();
    }
  });

  // Promise: cluster-no-state-file, flag-state-file-redis
  it("leaves the state file alone: Redis keeps the counters", async () => {
    for (const instance of instances) {
      assert.equal(
        existsSync(instance.stateFile),
        false,
        `${instance.stateFile} was written in cluster mode`,
      );
    }
  });

  // Promise: cluster-state-in-redis, cluster-crash-lapse, cluster-idle-crash
  it("lets a crashed instance's demand lapse within 3 s (1 s margin)", async (t) => {
    const statuses = await Promise.all(instances.map((instance) => instance.status()));
    const followerIndex = statuses.findIndex((s) => !s.cluster.leader);
    const follower = instances[followerIndex];
    const observer = instances.find((instance) => instance !== follower);
    const client = rawClient(follower.wsUrl, "odd");
    try {
      await waitUntil("the follower's client receiving", () => client.seen.length >= 3);
    } finally {
      client.closed = true; // no reconnecting: the instance is about to die with it
    }
    await follower.stop("SIGKILL");
    const killedAt = Date.now();
    // The stream stops once the claim lapses: two reads an interval and a half apart agree.
    let idleAt;
    await waitUntil(
      "odd to stop",
      async () => {
        const before = (await observer.status()).odd.last;
        await sleep(1.5 * INTERVAL_MS);
        if ((await observer.status()).odd.last !== before) return false;
        idleAt = Date.now() - 1.5 * INTERVAL_MS;
        return true;
      },
      10000,
    );
    t.diagnostic(`odd stopped ${idleAt - killedAt} ms after the crash`);
    assert.ok(
      idleAt - killedAt <= 3000 + 1000,
      `odd ran ${idleAt - killedAt} ms after its only client's instance crashed`,
    );
    instances[followerIndex] = await startInstance(follower.port);
    await waitUntil(
      "the replacement in the cluster",
      async () => (await instances[followerIndex].status()).cluster !== undefined,
    );
  });

  // Promise: cluster-name-apart, cluster-start-over, flag-cluster-name
  it("keeps two cluster names on one Redis apart", async () => {
    const other = await startServer({
      intervalMs: INTERVAL_MS,
      extraArgs: [
        "--redis",
        `redis://127.0.0.1:${redisPort}`,
        "--cluster-name",
        `${cluster}-other`,
      ],
    });
    const idle = (await instances[0].status()).even.last;
    const client = rawClient(other.wsUrl, "even");
    try {
      await waitUntil("the other cluster's client receiving", () => client.seen.length >= 3);
      assert.deepEqual(
        client.seen.slice(0, 3),
        [2, 4, 6],
        "the other cluster did not start its own streams",
      );
      assert.equal(
        (await instances[0].status()).even.last,
        idle,
        "this cluster's even moved for the other's client",
      );
    } finally {
      client.close();
      assert.equal(await other.stop(), 0);
    }
  });

  // Promise: cluster-nginx-next, cluster-nginx-example
  it("sends a new connection on to the next instance when one is down", async () => {
    // The example config in front of two of the instances and a port nobody listens on.
    const dead = await freePort();
    const proxy = await startNginx(await freePort(), [instances[0].port, instances[1].port, dead]);
    try {
      // Requests from 30 addresses, which the config's hash spreads over all three servers;
      // each one that hashes to the dead one is passed on, the first one included.
      const answers = [];
      for (let i = 0; i < 30; i++) {
        answers.push(await statusFrom(`${proxy.url}/status`, `127.0.0.${100 + i}`));
      }
      assert.deepEqual(
        answers.filter((status) => status !== 200),
        [],
        "answers other than 200 through nginx with one instance down",
      );
      assert.match(
        proxy.errorLog(),
        new RegExp(`connect\\(\\) failed \\(111: Connection refused\\).*127\\.0\\.0\\.1:${dead}`),
        "no request was sent to the dead instance first: nothing tested",
      );
    } finally {
      await proxy.stop();
    }
  });

  // Promise: cluster-nginx-example, http-status-cluster
  it("serves the demo page through nginx, all four streams live, naming the instance", async () => {
    const { browser, page, errors } = await openDemoPage(nginx.url);
    try {
      await everyPanelReceived(page, 3);
      await page.waitForSelector(".cluster:not([hidden])", { timeout: 10000 });
      const line = (await page.textContent(".cluster")).replace(/\s+/g, " ");
      assert.match(
        line,
        new RegExp(
          `Cluster ${cluster}: instance \\S+, (leader \\(ticks\\)|follower), ` +
            `Redis up at 127\\.0\\.0\\.1:${redisPort}`,
        ),
      );
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });

  // Promise: cluster-state-in-redis, slow-raw-backlog, slow-sio-backlog, slow-demo-resumes
  it("cuts clients left too far behind, and the demo page resumes them with no gap", async () => {
    // A counter that jumps further than --client-backlog (128) leaves every client too far
    // behind to be served in order: raw clients are closed with 1013, socket.io clients
    // disconnected by the server. The page comes back by itself with `after` and is replayed
    // what it missed, within --max-backlog (1000).
    const { browser, page, errors } = await openDemoPage(nginx.url);
    try {
      const received = () =>
        page.$$eval(".panel", (panels) => panels.map((p) => Number(p.dataset.received ?? 0)));
      await everyPanelReceived(page, 3);
      const before = await received();
      const cuts = async (protocol) =>
        (
          await Promise.all(
            instances.map((i) =>
              metricOr0(
                i.url,
                `integers_disconnects_total{protocol="${protocol}",reason="slow_client"}`,
              ),
            ),
          )
        ).reduce((a, b) => a + b, 0);
      const cutBefore = { raw: await cuts("raw"), socketio: await cuts("socketio") };
      for (const parity of ["odd", "even"]) {
        execFileSync("redis-cli", [
          "-p",
          String(redisPort),
          "INCRBY",
          `integers:{${cluster}}:pos:${parity}`,
          "300",
        ]);
      }
      // Each panel gets past the jump: 300 integers more than it had.
      await page.waitForFunction(
        (before) =>
          [...document.querySelectorAll(".panel")].every(
            (panel, i) => Number(panel.dataset.received ?? 0) >= before[i] + 300,
          ),
        before,
        { timeout: 30000 },
      );
      const panels = await page.$$eval(".panel", (all) =>
        all.map((p) => ({
          name: `${p.dataset.protocol}/${p.dataset.parity}`,
          gaps: p.querySelector(".gaps").textContent,
          state: p.querySelector(".state").dataset.state,
        })),
      );
      // The page's two raw and two socket.io clients were each cut, and came back.
      assert.ok((await cuts("raw")) >= cutBefore.raw + 2, "the raw panels were not cut");
      assert.ok(
        (await cuts("socketio")) >= cutBefore.socketio + 2,
        "the socket.io panels were not cut",
      );
      for (const panel of panels) {
        assert.equal(panel.gaps, "0", `${panel.name} missed integers across the cut`);
        assert.equal(panel.state, "connected", `${panel.name} did not come back`);
      }
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });

  // Promise: cluster-redis-down-connected, cluster-redis-down-health, cluster-redis-down-status
  // Promise: cluster-redis-down-logged-once, cluster-redis-down-metric, cluster-redis-down-pause
  // Promise: cluster-redis-down-resume, cluster-redis-empty-floor, cluster-no-repeat
  // Promise: cluster-redis-down-admit, cluster-redis-backoff
  // Promise: http-status-cluster, health-ok, metric-redis-up
  it("pauses while Redis restarts without counters, then goes on without repeats", async (t) => {
    const clients = [];
    const late = [];
    instances.forEach((instance, i) => {
      clients.push(rawClient(instance.wsUrl, i % 2 ? "even" : "odd"));
      clients.push(socketIoClient(instance.url, i % 2 ? "odd" : "even"));
    });
    try {
      await waitUntil("every client's first integers", () =>
        clients.every((c) => c.seen.length >= 3),
      );
      const outageLogs = new Map(
        instances.map((instance) => [
          instance,
          instance
            .log()
            .split("\n")
            .filter((line) => line.includes('"redis unreachable;')).length,
        ]),
      );
      await redis.stop();
      const stoppedAt = Date.now();
      const atStop = clients.map((c) => c.seen.length);
      await waitUntil("every instance to notice", async () =>
        (await Promise.all(instances.map((i) => i.status()))).every((s) => !s.cluster.redis_up),
      );
      for (const instance of instances)
        assert.equal(await metric(instance.url, "integers_redis_up"), 0);
      // Redis's port now takes each connection and drops it at once, so every attempt to reach
      // Redis is counted. Once the back-off has grown to its 0.5 s cap, each of an instance's
      // two connections (its commands' and its subscription's) tries about twice a second,
      // and never more than once a pause: not at every command.
      const attempts = [];
      const dropping = createServer((socket) => {
        attempts.push(Date.now());
        socket.destroy();
      });
      dropping.listen(redisPort, "127.0.0.1");
      await eventWithin(dropping, "listening", "the dropping listener on Redis's port");
      // From when every back-off has reached its cap, and every attempt meets the listener.
      const windowFrom = Math.max(stoppedAt + 1500, Date.now());
      const windowTo = windowFrom + 3000;
      await sleep(windowTo - Date.now());
      dropping.close();
      await eventWithin(dropping, "close", "the dropping listener closed");
      const counted = attempts.filter((at) => at >= windowFrom && at < windowTo).length;
      const seconds = (windowTo - windowFrom) / 1000;
      t.diagnostic(`${counted} attempts to reach Redis in ${seconds} s, Redis down`);
      // Three quarters of an attempt every half second on each connection, at the least: a
      // cap of a second would give half that.
      assert.ok(
        counted >= instances.length * 2 * (seconds / 0.5) * 0.75,
        `${counted} attempts to reach Redis in ${seconds} s from ${instances.length} instances`,
      );
      assert.ok(
        counted <= instances.length * 2 * (seconds / 0.5 + 1),
        `${counted} attempts to reach Redis in ${seconds} s: no back-off`,
      );
      for (const instance of instances) {
        assert.ok(
          await healthy(instance.url),
          "an instance stopped answering its health check without Redis",
        );
      }
      // Integers paused the moment Redis stopped: at most one already on its way since.
      const during = clients.map((c) => c.seen.length);
      // New clients are admitted while Redis is down, and stream once it is back.
      late.push(rawClient(instances[0].wsUrl, "odd"), socketIoClient(instances[1].url, "even"));
      await waitUntil("new clients admitted with Redis down", () =>
        late.every((c) => c.connects === 1),
      );
      clients.forEach((client, i) =>
        assert.ok(
          during[i] <= atStop[i] + 1,
          `a ${client.kind} client got ${during[i] - atStop[i]} integers with Redis down`,
        ),
      );
      const lastBefore = (parity) =>
        Math.max(...clients.filter((c) => c.parity === parity).map((c) => c.seen.at(-1)));
      const before = { odd: lastBefore("odd"), even: lastBefore("even") };
      redis = await startRedis(redisPort);
      const restartedAt = Date.now();
      // The first counter value the new Redis holds continues its stream; counting from zero
      // again, the instances would sit silent until Redis caught up with them.
      const counter = (parity) =>
        execFileSync(
          "redis-cli",
          ["-p", String(redisPort), "GET", `integers:{${cluster}}:pos:${parity}`],
          { encoding: "utf8" },
        ).trim();
      const firstCounters = {};
      await waitUntil("both counters back in Redis", () => {
        for (const parity of ["odd", "even"])
          firstCounters[parity] ??= counter(parity) || undefined;
        return firstCounters.odd !== undefined && firstCounters.even !== undefined;
      });
      // Position p of odd is 2p - 1, of even 2p: the first new integer comes after the last one
      // seen.
      assert.ok(
        2 * Number(firstCounters.odd) - 1 > before.odd,
        `odd counter restarted at ${firstCounters.odd}, last odd seen ${before.odd}`,
      );
      assert.ok(
        2 * Number(firstCounters.even) > before.even,
        `even counter restarted at ${firstCounters.even}, last even seen ${before.even}`,
      );
      await waitUntil("every client receiving again", () =>
        clients.every((c, i) => c.seen.length >= during[i] + 3),
      );
      await waitUntil("the clients admitted during the outage receiving", () =>
        late.every((c) => c.seen.length >= 3),
      );
      for (const client of late) {
        assertGapless(client);
        assert.equal(client.connects, 1, "a client admitted during the outage was dropped");
      }
      t.diagnostic(
        `integers flowing again ${Date.now() - restartedAt} ms after Redis restarted (down for ` +
          `${restartedAt - stoppedAt} ms)`,
      );
      for (const client of clients) {
        assertGapless(client);
        assert.equal(client.connects, 1, "a client was disconnected by the Redis outage");
      }
      for (const instance of instances) {
        assert.equal((await instance.status()).cluster.redis_up, true);
        assert.equal(await metric(instance.url, "integers_redis_up"), 1);
        // The outage is logged once, however many exchanges failed through it.
        const since = instance
          .log()
          .split("\n")
          .filter((line) => line.includes('"redis unreachable;'));
        assert.equal(
          since.length,
          outageLogs.get(instance) + 1,
          `logged ${since.length - outageLogs.get(instance)} times`,
        );
      }
    } finally {
      for (const client of [...clients, ...late]) client.close();
    }
  });

  // Promise: cluster-nginx-websocket, cluster-nginx-sticky, cluster-leader-takeover
  // Promise: cluster-dead-instance-resume, cluster-no-repeat, cluster-counters-survive
  // Promise: cluster-after-any, cluster-one-ticker, http-status-cluster, metric-cluster-leader
  // Promise: cluster-leader-gap, cluster-takeover-bound
  it("survives a kill -9 of the leader: another ticks, its clients resume elsewhere", async (t) => {
    const clients = [];
    clients.push(...mixedClients(40, { transports: ["websocket"] }));
    try {
      await waitUntil("every client's first integers", () =>
        clients.every((c) => c.seen.length >= 3),
      );
      const statuses = await Promise.all(instances.map((instance) => instance.status()));
      const leaderIndex = statuses.findIndex((s) => s.cluster.leader);
      assert.ok(leaderIndex >= 0, "no leader");
      const onLeader = ["odd", "even"].reduce(
        (sum, parity) =>
          sum +
          statuses[leaderIndex][parity].subscribers.raw +
          statuses[leaderIndex][parity].subscribers.socketio,
        0,
      );
      assert.ok(onLeader > 0, "nginx put no client on the leader; nothing would test the move");
      const leader = instances[leaderIndex];
      const before = clients.map((c) => c.seen.length);
      const killedAt = Date.now();
      const lastBefore = Math.max(...clients.map((c) => c.times.at(-1)));
      await leader.stop("SIGKILL");
      instances = instances.filter((instance) => instance !== leader);
      killedPort = leader.port;
      await waitUntil("every client receiving again", () =>
        clients.every((c, i) => c.seen.length >= before[i] + 3),
      );
      const firstAfter = Math.min(
        ...clients.map((c, i) => c.times[before[i]]).filter((time) => time > killedAt),
      );
      t.diagnostic(
        `${onLeader} of ${clients.length} clients were on the leader; ticks paused ` +
          `${firstAfter - lastBefore} ms ` +
          `across the kill (interval ${INTERVAL_MS} ms); every client receiving again ` +
          `${Date.now() - killedAt} ms after it`,
      );
      // The stated bound: the lease lapses after the leader's last beat, a follower sees it
      // within one look and ticks at once; three quarters of an interval of slack are for the
      // tick's way to the clients through nginx on a loaded test machine.
      const bound = LEASE_MS + LEASE_POLL_MS + (3 * INTERVAL_MS) / 4;
      assert.ok(
        firstAfter - lastBefore <= bound,
        `ticks paused ${firstAfter - lastBefore} ms, past the ${bound} ms bound`,
      );
      const leaders = (await Promise.all(instances.map((instance) => instance.status()))).filter(
        (s) => s.cluster.leader,
      );
      assert.equal(leaders.length, 1, "not exactly one new leader");
      const leaderGauges = await Promise.all(
        instances.map((instance) => metric(instance.url, "integers_cluster_leader")),
      );
      assert.deepEqual(
        leaderGauges.toSorted(),
        [0, 1],
        "integers_cluster_leader after the failover",
      );
      for (const client of clients) assertGapless(client);
      assert.ok(
        clients.filter((c) => c.connects >= 2).length >= onLeader,
        "the leader's clients did not reconnect",
      );
    } finally {
      for (const client of clients) client.close();
    }
  });

  // Promise: cluster-nginx-websocket, cluster-nginx-sticky, cluster-no-repeat
  // Promise: cluster-counters-survive, cluster-after-any, storm-all-back, storm-rolling
  // Promise: proxy-sticky, restart-lease
  it("rides a rolling deploy: each instance stopped (SIGTERM) and started in turn", async (t) => {
    if (killedPort !== undefined) instances.push(await startInstance(killedPort));
    const clients = [];
    clients.push(...mixedClients(80));
    try {
      await waitUntil("every client's first integers", () =>
        clients.every((c) => c.seen.length >= 3),
      );
      const deployStarted = Date.now();
      let handedOver = 0;
      for (let i = 0; i < instances.length; i++) {
        const old = instances[i];
        const wasLeader = (await old.status()).cluster.leader;
        const others = instances.filter((instance) => instance !== old);
        const led = others.map((o) => logTimes(o, "leading: this instance ticks").length);
        assert.equal(await old.stop("SIGTERM"), 0, "an instance did not exit cleanly");
        if (wasLeader) {
          // The leader hands its lease over as it stops: another instance leads within the
          // lease poll (a quarter interval), well within half the lease, which a lapse takes.
          const [released] = logTimes(old, "lease released");
          assert.ok(released, "the leader stopped without releasing its lease");
          const leading = await waitFor(
            "another instance leading",
            () =>
              others.flatMap((o, j) =>
                logTimes(o, "leading: this instance ticks").slice(led[j]),
              )[0],
          );
          assert.ok(
            leading - released < LEASE_MS / 2,
            `the next leader took ${leading - released} ms; the lease is ${LEASE_MS} ms`,
          );
          handedOver += 1;
        }
        instances[i] = await startInstance(old.port);
        const counts = clients.map((c) => c.seen.length);
        await waitUntil("every client receiving after this step", () =>
          clients.every((c, j) => c.seen.length >= counts[j] + 2),
        );
      }
      t.diagnostic(
        `3 instances replaced one by one in ${Date.now() - deployStarted} ms; ` +
          `${clients.filter((c) => c.connects >= 2).length} of ${clients.length} clients ` +
          `reconnected at least once`,
      );
      for (const client of clients) assertGapless(client);
      assert.ok(
        clients.every((c) => c.connects >= 2),
        "some client was never moved, so the deploy did not touch it",
      );
      assert.ok(handedOver >= 1, "no leader was replaced");
    } finally {
      for (const client of clients) client.close();
    }
  });
});

describe("the nginx example for one instance (docs/deploying.md)", () => {
  // Promise: log-forwarded-for, proxy-nginx
  it("passes both protocols, the health check and the client's address through", async () => {
    const page = new URL("../../docs/deploying.md", import.meta.url);
    const snippet = readFileSync(fileURLToPath(page), "utf8").match(/```nginx\n([\s\S]*?)```/)?.[1];
    assert.ok(
      snippet?.includes("proxy_pass http://127.0.0.1:3000"),
      "no nginx example in docs/deploying.md",
    );
    const server = await startServer({ intervalMs: 50 });
    const port = await freePort();
    const nginx = await startNginxSite(
      port,
      `server {\n  listen 127.0.0.1:${port};\n${snippet.replaceAll(
        "127.0.0.1:3000",
        `127.0.0.1:${server.port}`,
      )}}\n`,
    );
    const clients = [];
    try {
      assert.ok(await healthy(`http://127.0.0.1:${port}`), "the health check through nginx");
      clients.push(rawClient(`ws://127.0.0.1:${port}`, "even"));
      clients.push(socketIoClient(`http://127.0.0.1:${port}`, "odd"));
      await waitUntil("integers through nginx", () => clients.every((c) => c.seen.length >= 3));
      for (const client of clients) assertGapless(client);
      const connected = server
        .log()
        .split("\n")
        .filter((line) => line.includes('"connected"'))
        .map((line) => JSON.parse(line));
      assert.ok(connected.length >= 2, server.log());
      for (const event of connected) {
        const peer = event.peer ?? event.span?.peer;
        assert.match(
          peer,
          /^127\.0\.0\.1 via 127\.0\.0\.1:\d+$/,
          "X-Forwarded-For reached the log",
        );
      }
    } finally {
      for (const client of clients) client.close();
      await nginx.stop();
      await server.stop();
    }
  });
});
