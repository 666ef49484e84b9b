// Cluster mode through Redis Sentinel: a primary, its replica and three Sentinels (Debian's
// redis-server and redis-sentinel on random loopback ports), three instances of the server
// finding the primary through the Sentinels, and real raw and socket.io clients. Each test
// starts its own set: a failover changes it for good.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { eventWithin, startServer } from "./server.mjs";
import { rawClient, socketIoClient } from "./clients.mjs";
import {
  assertGapless,
  makeCertificates,
  metric,
  refusedStart,
  startSentinelSet,
  waitUntil,
} from "./infra.mjs";

const INTERVAL_MS = 100;
const PASSWORD = "primary-secret";
// The start-up error for a name the Sentinels do not know, or for a server that is no primary.
const NOT_A_PRIMARY =
  "the Sentinels know no primary by that name, or the server they name does not answer as one";
// docs/cluster.md's bound on the pause after the Sentinels promote the replica (2 s: the instances'
// back-off, finding the primary and connecting, the lease poll), plus one interval for the
// first tick to reach the clients and a second of slack for a loaded test machine.
const AFTER_PROMOTION_MS = 2000 + INTERVAL_MS + 1000;

async function startInstances(set, extraArgs = []) {
  const instances = [];
  for (let i = 0; i < 3; i++) {
    instances.push(
      await startServer({
        intervalMs: INTERVAL_MS,
        extraArgs: [
          ...["--redis-sentinels", set.sentinelUrls.join(",")],
          ...["--redis-primary", set.name],
          ...(set.password ? ["--redis-primary-password", set.password] : []),
          ...extraArgs,
        ],
      }),
    );
  }
  await waitUntil("every instance on the primary, and one leader", async () => {
    const statuses = await Promise.all(instances.map((instance) => instance.status()));
    return (
      statuses.every((s) => s.cluster.redis_primary === `127.0.0.1:${set.primaryPort}`) &&
      statuses.filter((s) => s.cluster.leader).length === 1
    );
  });
  return instances;
}

// A raw and a socket.io client of each stream on each of `instances`.
function clientsOf(instances) {
  return instances.flatMap((instance) => [
    rawClient(instance.wsUrl, "odd"),
    rawClient(instance.wsUrl, "even"),
    socketIoClient(instance.url, "odd", { reconnectionDelay: 100 }),
    socketIoClient(instance.url, "even", { reconnectionDelay: 100 }),
  ]);
}

// Kills the primary with SIGKILL, then resolves with when the Sentinels named the replica.
function killPrimary(set) {
  const failover = (async () => {
    await set.primary.stop("SIGKILL");
    const killedAt = Date.now();
    await waitUntil(
      "the Sentinels to promote the replica",
      async () => (await set.primaryNow()) === set.replicaPort,
      30000,
    );
    return { killedAt, promotedAt: Date.now() };
  })();
  // A test that awaits other things first and fails stops the Sentinels in its `finally`; the
  // wait above then fails too, and that rejection must not hide the test's own failure. Whoever
  // awaits `failover` still sees it reject.
  failover.catch(() => {});
  return failover;
}

// Checks that ticking resumed within the bound after the promotion, that every client of a
// stream got the same integers since, with no gap and no repeat, and returns the pause.
async function assertResumed(t, clients, before, { killedAt, promotedAt }) {
  await waitUntil(
    "every client receiving again",
    () => clients.every((c, i) => c.seen.length >= before[i] + 3),
    20000,
  );
  const firstAfter = Math.min(
    ...clients.map((c, i) => c.times[before[i]]).filter((time) => time > killedAt),
  );
  t.diagnostic(
    `the Sentinels promoted the replica ${promotedAt - killedAt} ms after the kill; ` +
      `integers again ${firstAfter - promotedAt} ms after the promotion`,
  );
  assert.ok(
    firstAfter - promotedAt <= AFTER_PROMOTION_MS,
    `integers resumed ${firstAfter - promotedAt} ms after the promotion, past the ` +
      `${AFTER_PROMOTION_MS} ms bound`,
  );
  for (const parity of ["odd", "even"]) {
    const ofType = clients.filter((c) => c.parity === parity);
    const target = Math.max(...ofType.map((c) => c.seen.at(-1))) + 4;
    await waitUntil(`every ${parity} client to reach ${target}`, () =>
      ofType.every((c) => c.seen.at(-1) >= target),
    );
    assert.deepEqual(
      ofType.filter((c) => !c.seen.includes(target)).map((c) => c.seen),
      [],
      `${parity} clients that never received ${target}`,
    );
  }
  for (const client of clients) assertGapless(client);
}

// The lines of an instance's log with `message`.
function logged(instance, message) {
  return instance
    .log()
    .split("\n")
    .filter((line) => line.includes(`"message":"${message}`));
}

describe("three instances finding Redis through three Sentinels", () => {
  // Promise: tls-password-hidden, sentinel-ask, flag-redis-primary, flag-redis-primary-password
  // Promise: sentinel-role-check
  it("refuse to start with a primary the Sentinels do not know, or a wrong password", async () => {
    const set = await startSentinelSet({ password: PASSWORD });
    try {
      const sentinels = ["--redis-sentinels", set.sentinelUrls.join(",")];
      const target = (name) =>
        `cannot use Redis at primary "${name}" of the Sentinels ${set.sentinelUrls.join(", ")}: `;
      const unknown = await refusedStart([
        ...sentinels,
        ...["--redis-primary", "no-such-primary", "--redis-primary-password", PASSWORD],
      ]);
      assert.ok(unknown.startsWith(`${target("no-such-primary")}${NOT_A_PRIMARY}`), unknown);
      for (const password of [["--redis-primary-password", "wrong"], []]) {
        const refused = await refusedStart([
          ...sentinels,
          ...["--redis-primary", set.name, ...password],
        ]);
        assert.ok(refused.startsWith(`${target(set.name)}authentication failed`), refused);
        assert.ok(!refused.includes(PASSWORD), `the password reached the log: ${refused}`);
      }
      // Sentinels that name a replica as a primary: the replica answers that it is none.
      for (const port of set.sentinelPorts) {
        await set.sentinelCli(port, [
          ...["SENTINEL", "MONITOR", "replica-named", "127.0.0.1", String(set.replicaPort), "2"],
        ]);
        await set.sentinelCli(port, ["SENTINEL", "SET", "replica-named", "auth-pass", PASSWORD]);
        const named = await set.sentinelCli(port, [
          ...["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "replica-named"],
        ]);
        assert.equal(named, `127.0.0.1\n${set.replicaPort}`, "what the Sentinel names");
      }
      const replica = await refusedStart([
        ...sentinels,
        ...["--redis-primary", "replica-named", "--redis-primary-password", PASSWORD],
      ]);
      assert.ok(replica.startsWith(`${target("replica-named")}${NOT_A_PRIMARY}`), replica);
    } finally {
      await set.stop();
    }
  });

  // Promise: cluster-alike-tls-sentinel, sentinel-failover-exact, sentinel-ask, sentinel-follow
  // Promise: sentinel-clients-stay, sentinel-log-unreachable, sentinel-log-changed
  // Promise: sentinel-status-primary, sentinel-metric-changes, http-status-cluster
  // Promise: flag-redis-sentinels, flag-redis-primary, flag-redis-primary-password
  // Promise: metric-primary-changes, sentinel-failover-pause, sentinel-resume-2s
  // Promise: sentinel-log-reachable
  it("follow a kill -9 of the primary to a promoted replica: none lost or repeated", async (t) => {
    const set = await startSentinelSet({ password: PASSWORD });
    const instances = await startInstances(set);
    const clients = clientsOf(instances);
    try {
      await waitUntil("every client's first integers", () =>
        clients.every((c) => c.seen.length >= 3),
      );
      const before = clients.map((c) => c.seen.length);
      const reachable = instances.map((instance) => logged(instance, "redis reachable").length);
      const failover = await killPrimary(set);
      await assertResumed(t, clients, before, failover);
      // Every instance moved, said so once in its log, once in its metrics, and in /status.
      for (const [i, instance] of instances.entries()) {
        assert.equal(
          logged(instance, "redis reachable").length - reachable[i],
          1,
          "Redis reachable again, once",
        );
        const status = await instance.status();
        assert.equal(status.cluster.redis_primary, `127.0.0.1:${set.replicaPort}`);
        assert.equal(status.cluster.redis_up, true);
        assert.equal(await metric(instance.url, "integers_redis_up"), 1);
        assert.equal(await metric(instance.url, "integers_redis_primary_changes_total"), 1);
        const moved = logged(instance, "redis primary changed");
        assert.equal(moved.length, 1, `logged the move ${moved.length} times`);
        const event = JSON.parse(moved[0]);
        assert.equal(event.from, `127.0.0.1:${set.primaryPort}`);
        assert.equal(event.to, `127.0.0.1:${set.replicaPort}`);
        assert.equal(logged(instance, "redis unreachable").length, 1, "the outage, once");
      }
      for (const client of clients) assert.equal(client.connects, 1, "a client was cut");
    } finally {
      for (const client of clients) client.close();
      for (const instance of instances) await instance.stop();
      await set.stop();
    }
  });

  // Promise: sentinel-failover-exact, sentinel-floor
  it("never repeat an integer when the promoted replica lacks the last ticks", async (t) => {
    const set = await startSentinelSet({ password: PASSWORD });
    const instances = await startInstances(set);
    const cluster = "integers";
    const clients = clientsOf(instances);
    try {
      await waitUntil("every client's first integers", () =>
        clients.every((c) => c.seen.length >= 3),
      );
      // Cut the replica off: it can no longer log in to the primary, so it misses every tick
      // from now on while the instances go on receiving them.
      await set.cli(set.replicaPort, ["CONFIG", "SET", "masterauth", "not-the-password"]);
      await set.cli(set.primaryPort, ["CLIENT", "KILL", "TYPE", "replica"]);
      const cutAt = clients.map((c) => c.seen.length);
      await waitUntil("three integers the replica never got", () =>
        clients.every((c, i) => c.seen.length >= cutAt[i] + 3),
      );
      // The scenario holds: the replica's counter is behind what the clients already have
      // (odd position p is the integer 2p - 1), and it cannot catch up before the kill.
      const replicaCounter = Number(
        await set.cli(set.replicaPort, ["GET", `integers:{${cluster}}:pos:odd`]),
      );
      const before = clients.map((c) => c.seen.length);
      const lastOdd = Math.max(
        ...clients.filter((c) => c.parity === "odd").map((c) => c.seen.at(-1)),
      );
      assert.ok(replicaCounter > 0, "the replica never had the counter");
      assert.ok(
        2 * replicaCounter - 1 < lastOdd,
        `the replica had odd position ${replicaCounter}, clients had seen ${lastOdd}`,
      );
      const failover = killPrimary(set);
      await set.cli(set.replicaPort, ["CONFIG", "SET", "masterauth", PASSWORD]);
      // The first tick on the promoted replica goes on from the highest position seen, not
      // from its own counter: read its counter until it moves.
      let firstMoved;
      // Sentinel drops the replica's clients as it promotes it (CLIENT KILL TYPE normal): a
      // read cut off that way is read again.
      await waitUntil("the promoted replica's odd counter to move", async () => {
        const read = await set
          .cli(set.replicaPort, ["GET", `integers:{${cluster}}:pos:odd`])
          .catch(() => null);
        if (read === null) return false;
        firstMoved = Number(read);
        return firstMoved !== replicaCounter;
      });
      assert.ok(
        2 * firstMoved - 1 > lastOdd,
        `the counter went on from ${replicaCounter} to ${firstMoved}, below the ${lastOdd} seen`,
      );
      await assertResumed(t, clients, before, await failover);
      t.diagnostic(
        `the replica was promoted at odd position ${replicaCounter}; clients had seen ${lastOdd}`,
      );
    } finally {
      for (const client of clients) client.close();
      for (const instance of instances) await instance.stop();
      await set.stop();
    }
  });

  // Promise: cluster-leader-takeover, cluster-no-repeat, cluster-one-ticker
  // Promise: sentinel-failover-exact
  it("repeat nothing when the leader instance dies during the failover", async (t) => {
    const set = await startSentinelSet({ password: PASSWORD });
    const instances = await startInstances(set);
    const statuses = await Promise.all(instances.map((instance) => instance.status()));
    const leader = instances[statuses.findIndex((s) => s.cluster.leader)];
    const survivors = instances.filter((instance) => instance !== leader);
    const clients = clientsOf(survivors);
    try {
      await waitUntil("every client's first integers", () =>
        clients.every((c) => c.seen.length >= 3),
      );
      const before = clients.map((c) => c.seen.length);
      const failover = killPrimary(set);
      await leader.stop("SIGKILL");
      await assertResumed(t, clients, before, await failover);
      const leaders = (await Promise.all(survivors.map((s) => s.status()))).filter(
        (s) => s.cluster.leader,
      );
      assert.equal(leaders.length, 1, "not exactly one new leader");
    } finally {
      for (const client of clients) client.close();
      for (const instance of survivors) await instance.stop();
      await set.stop();
    }
  });

  // Promise: sentinel-connect-1s
  it("pass over a Sentinel that accepts and never answers within a second", async () => {
    const set = await startSentinelSet();
    // A listener that takes connections and never says a word, first in the list.
    const hung = createServer(() => {});
    await eventWithin(hung.listen(0, "127.0.0.1"), "listening", "the silent Sentinel listening");
    const urls = [`redis://127.0.0.1:${hung.address().port}`, ...set.sentinelUrls];
    let instance;
    try {
      const started = Date.now();
      instance = await startServer({
        intervalMs: INTERVAL_MS,
        extraArgs: ["--redis-sentinels", urls.join(","), "--redis-primary", set.name],
      });
      await waitUntil(
        "the instance on the primary",
        async () =>
          (await instance.status()).cluster.redis_primary === `127.0.0.1:${set.primaryPort}`,
      );
      // One second for the silent Sentinel, and a second and a half for starting the binary
      // and connecting on a loaded machine.
      const took = Date.now() - started;
      assert.ok(took < 2500, `on the primary ${took} ms after the start`);
    } finally {
      await instance?.stop();
      hung.close();
      await set.stop();
    }
  });

  // Promise: flag-sentinel-password, sentinel-tls-client-cert, tls-password-hidden
  it("reach Sentinels that ask for a password of their own and a client certificate", async () => {
    const certs = makeCertificates();
    const sentinelPassword = "sentinel-secret";
    const set = await startSentinelSet({ certs, mutual: true, sentinelPassword });
    assert.match(set.sentinelUrls[0], /^rediss:\/\/:sentinel-secret@/);
    const certificate = [
      "--redis-client-cert",
      certs.clientCert,
      "--redis-client-key",
      certs.clientKey,
    ];
    const sentinels = (urls) => [
      ...["--redis-sentinels", urls.join(","), "--redis-primary", set.name],
      ...["--redis-ca-file", certs.ca],
    ];
    const hidden = set.sentinelUrls.map((url) => url.replace(sentinelPassword, "***"));
    let instance;
    let client;
    try {
      // With both, the instance finds the primary and streams.
      instance = await startServer({
        intervalMs: INTERVAL_MS,
        extraArgs: [...sentinels(set.sentinelUrls), ...certificate],
      });
      client = rawClient(instance.wsUrl, "odd");
      await waitUntil("integers through the Sentinels", () => client.seen.length >= 3);
      assertGapless(client);
      assert.equal((await instance.status()).cluster.redis_primary, `127.0.0.1:${set.primaryPort}`);
      // Without the Sentinels' password, or without the certificate, it refuses to start.
      const withoutPassword = set.sentinelUrls.map((url) =>
        url.replace(`:${sentinelPassword}@`, ""),
      );
      const target = `cannot use Redis at primary "${set.name}" of the Sentinels `;
      const unauthenticated = await refusedStart([...sentinels(withoutPassword), ...certificate]);
      assert.ok(
        unauthenticated.startsWith(`${target}${withoutPassword.join(", ")}: `),
        unauthenticated,
      );
      assert.match(unauthenticated, /auth/i);
      const anonymous = await refusedStart(sentinels(set.sentinelUrls));
      assert.ok(anonymous.startsWith(`${target}${hidden.join(", ")}: `), anonymous);
      assert.ok(
        !anonymous.includes(sentinelPassword),
        `the password reached the log: ${anonymous}`,
      );
      assert.ok(!instance.log().includes(sentinelPassword), "the password reached the log");
    } finally {
      client?.close();
      await instance?.stop();
      await set.stop();
    }
  });

  // Promise: cluster-alike-tls-sentinel, sentinel-follow, sentinel-tls, sentinel-status-primary
  // Promise: flag-redis-sentinels-tls
  it("find and follow the primary over TLS, verified with --redis-ca-file", async (t) => {
    const certs = makeCertificates();
    const set = await startSentinelSet({ certs });
    assert.match(set.sentinelUrls[0], /^rediss:\/\//);
    const instances = await startInstances(set, ["--redis-ca-file", certs.ca]);
    const clients = clientsOf(instances.slice(0, 2));
    try {
      await waitUntil("every client's first integers", () =>
        clients.every((c) => c.seen.length >= 3),
      );
      const before = clients.map((c) => c.seen.length);
      await assertResumed(t, clients, before, await killPrimary(set));
      for (const instance of instances) {
        const status = await instance.status();
        assert.equal(status.cluster.redis_primary, `127.0.0.1:${set.replicaPort}`);
      }
    } finally {
      for (const client of clients) client.close();
      for (const instance of instances) await instance.stop();
      await set.stop();
    }
  });
});
