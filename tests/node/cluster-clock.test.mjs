// A cluster's clock (docs/cluster.md): the leader's interval sets the pace on every instance,
// odd and even tick half an interval apart, a follower hands out each tick as the leader's
// channel message brings it, not only at its once-a-second read of the counters, that read
// fills in what the channel did not bring, and a leader cut off past its lease ticks nothing once
// it runs again.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./server.mjs";
import { rawClient } from "./clients.mjs";
import {
  assertAlternating,
  assertGapless,
  freePort,
  redisCli,
  startRedis,
  waitUntil,
  watchClaimsWithdrawn,
  watchLeaseAsks,
  watchTicks,
} from "./infra.mjs";

// The leader's interval, and the follower's own, four times as long.
const LEADER_MS = 100;
const FOLLOWER_MS = 400;
// How often a follower reads the counters whatever the channel brings (docs/cluster.md).
const RESYNC_MS = 1000;

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const gaps = (times) => times.slice(1).map((time, i) => time - times[i]);

// A cluster on a Redis of its own: an instance that leads, then a second one. `prepare` runs
// first, given Redis's port; `followerUser` is a Redis user's `name:password@` for the second.
// `stop` closes the clients given and stops the rest, whatever failed to start.
async function startPair(name, { leaderMs, followerMs, followerUser = "", prepare }) {
  const pair = { redisPort: await freePort() };
  const started = [];
  pair.stop = async (clients = []) => {
    for (const client of clients) client.close();
    for (const running of started.reverse()) await running.stop();
  };
  const instance = (intervalMs, user) =>
    startServer({
      intervalMs,
      extraArgs: [
        ...["--redis", `redis://${user}127.0.0.1:${pair.redisPort}`],
        ...["--cluster-name", name],
      ],
    });
  try {
    started.push(await startRedis(pair.redisPort));
    await prepare?.(pair.redisPort);
    pair.leader = await instance(leaderMs, "");
    started.push(pair.leader);
    await waitUntil(
      "the first instance to lead",
      async () => (await pair.leader.status()).cluster.leader,
    );
    pair.follower = await instance(followerMs, followerUser);
    started.push(pair.follower);
  } catch (error) {
    await pair.stop();
    throw error;
  }
  return pair;
}

describe("the clock of a cluster whose instances differ in --interval-ms", () => {
  let pair;
  let leader;
  let follower;
  const clients = [];

  before(async () => {
    pair = await startPair("clock", { leaderMs: LEADER_MS, followerMs: FOLLOWER_MS });
    ({ leader, follower } = pair);
  });

  after(() => pair?.stop(clients));

  // Promise: cluster-leader-clock, cluster-half-interval, cluster-tick-publish
  it("ticks at the leader's interval, half an interval apart, from the leader's channel", async () => {
    assert.equal((await follower.status()).cluster.leader, false, "the follower leads");
    const odd = rawClient(follower.wsUrl, "odd");
    const even = rawClient(follower.wsUrl, "even");
    clients.push(odd, even);
    await waitUntil("30 integers of each stream on the follower", () =>
      [odd, even].every((client) => client.seen.length >= 30),
    );
    for (const client of [odd, even]) {
      assertGapless(client);
      const between = gaps(client.times.slice(0, 30));
      // At the leader's pace, not the follower's own.
      const typical = median(between);
      assert.ok(
        typical > LEADER_MS / 2 && typical < (LEADER_MS + FOLLOWER_MS) / 2,
        `${client.parity}: a median of ${typical} ms between integers: ${between}`,
      );
      // From the channel: read from the counters alone, they would come in bursts a second
      // apart.
      const longest = Math.max(...between);
      assert.ok(
        longest < RESYNC_MS / 2,
        `${client.parity}: ${longest} ms without an integer: ${between}`,
      );
    }
    // Each even integer comes about half an interval after the odd one before it.
    const phases = even.times.slice(5, 30).map((time) => {
      const before = odd.times.filter((oddTime) => oddTime <= time).at(-1);
      return time - before;
    });
    const phase = median(phases);
    assert.ok(
      phase >= LEADER_MS / 4 && phase <= (3 * LEADER_MS) / 4,
      `even comes a median ${phase} ms after odd: ${phases}`,
    );

    // The leader goes; the follower takes over at its own interval.
    assert.equal(await leader.stop(), 0);
    await waitUntil("the follower to lead", async () => (await follower.status()).cluster.leader);
    const from = odd.seen.length;
    await waitUntil("8 more odd integers", () => odd.seen.length >= from + 8, 15000);
    assertGapless(odd);
    const after = median(gaps(odd.times.slice(from + 1, from + 8)));
    assert.ok(
      after > (LEADER_MS + FOLLOWER_MS) / 2 && after < 2 * FOLLOWER_MS,
      `a median of ${after} ms between integers once the follower leads`,
    );
  });
});

describe("a leader cut off past its lease while it lives", () => {
  const INTERVAL_MS = 100;
  let pair;
  let first;
  let second;
  const clients = [];

  before(async () => {
    pair = await startPair("cut", { leaderMs: INTERVAL_MS, followerMs: INTERVAL_MS });
    ({ leader: first, follower: second } = pair);
  });

  after(async () => {
    // Let it run again if the test failed while it was stopped; it may have exited.
    try {
      if (first) process.kill(first.pid, "SIGCONT");
    } catch {}
    await pair?.stop(clients);
  });

  const leaders = async () =>
    (await Promise.all([first, second].map((instance) => instance.status()))).map(
      (status) => status.cluster.leader,
    );

  // Promise: cluster-leader-cut-off, cluster-tick-fenced, cluster-one-ticker
  it("is replaced, and once it runs again ticks nothing", async () => {
    const onFirst = rawClient(first.wsUrl, "odd");
    const onSecond = rawClient(second.wsUrl, "odd");
    clients.push(onFirst, onSecond);
    await waitUntil("integers on both instances", () =>
      clients.every((client) => client.seen.length >= 5),
    );
    // Stopped, the leader neither ticks nor renews its lease, and knows nothing of it.
    process.kill(first.pid, "SIGSTOP");
    await waitUntil(
      "the second instance to lead",
      async () => (await second.status()).cluster.leader,
    );
    const taken = onSecond.seen.length;
    await waitUntil("ticks from the new leader", () => onSecond.seen.length >= taken + 10);
    process.kill(first.pid, "SIGCONT");
    // Its next tick finds another's token on the lease: it publishes nothing, and steps down.
    await waitUntil("the old leader to find its lease taken", () =>
      first.log().includes('"message":"lost the lease; another instance ticks now"'),
    );
    const resumed = clients.map((client) => client.seen.length);
    await waitUntil("20 more integers on both instances", () =>
      clients.every((client, i) => client.seen.length >= resumed[i] + 20),
    );
    assert.deepEqual(await leaders(), [false, true], "leaders once the old one runs again");
    for (const client of clients) assertGapless(client);
    // One ticker: the stream keeps its pace, one integer an interval, not two.
    const typical = median(gaps(onSecond.times.slice(resumed[1], resumed[1] + 20)));
    assert.ok(
      typical > (INTERVAL_MS * 3) / 4,
      `a median of ${typical} ms between integers with both instances running`,
    );
  });
});

describe("a follower refused the cluster's channel", () => {
  const NAME = "catch-up";
  let pair;
  let redisPort;
  let follower;
  const clients = [];

  before(async () => {
    pair = await startPair(NAME, {
      leaderMs: LEADER_MS,
      followerMs: LEADER_MS,
      // The follower is a Redis user of its own, whose channels the test takes away.
      followerUser: "follower:follower-secret@",
      prepare: (port) =>
        redisCli(port, [
          ...["ACL", "SETUSER", "follower", "on", ">follower-secret"],
          ...["~*", "&*", "+@all"],
        ]),
    });
    ({ redisPort, follower } = pair);
  });

  after(() => pair?.stop(clients));

  // Promise: cluster-catch-up
  it("gets every integer from its once-a-second read of the counters", async () => {
    const client = rawClient(follower.wsUrl, "odd");
    clients.push(client);
    await waitUntil("integers on the follower", () => client.seen.length >= 5);
    // Redis drops a subscription whose channel its user loses, and refuses a new one.
    await redisCli(redisPort, ["ACL", "SETUSER", "follower", "resetchannels"]);
    const channel = `integers:{${NAME}}:ticks`;
    await waitUntil("the follower's subscription gone", async () =>
      (await redisCli(redisPort, ["PUBSUB", "NUMSUB", channel])).endsWith("1"),
    );
    const refused = client.seen.length;
    await waitUntil(
      "two reads' worth of integers from the counters",
      () => client.seen.length >= refused + 2 * (RESYNC_MS / LEADER_MS),
      4 * RESYNC_MS,
    );
    assertGapless(client);
    // Through the channel the integers came one a tick; from the counters, about ten a read.
    const arrivals = new Set(client.times.slice(refused)).size;
    const integers = client.seen.length - refused;
    assert.ok(
      arrivals * 3 <= integers,
      `${integers} integers in ${arrivals} arrivals: not from the once-a-second read`,
    );
  });
});

describe("a new leader of a cluster", () => {
  // Long enough that the old leader stops between one stream's tick and the other's, with
  // the follower's poll for the lease (a quarter of it) between.
  const INTERVAL_MS = 2000;
  let pair;
  let channel;
  let claims;
  let asks;
  const clients = [];

  before(async () => {
    pair = await startPair("due", { leaderMs: INTERVAL_MS, followerMs: INTERVAL_MS });
    channel = await watchTicks(pair.redisPort, "due");
    claims = await watchClaimsWithdrawn(pair.redisPort, "due");
    asks = await watchLeaseAsks(pair.redisPort, "due");
  });

  after(async () => {
    await channel?.stop();
    await claims?.stop();
    await asks?.stop();
    await pair?.stop(clients);
  });

  // Promise: cluster-takeover-due-first, cluster-release-at-once
  it("ticks first the stream that did not tick last", async () => {
    const { leader, follower } = pair;
    clients.push(rawClient(follower.wsUrl, "odd"), rawClient(follower.wsUrl, "even"));
    // Stopped just after an odd tick, the leader leaves even due.
    let seen = 0;
    await waitUntil(
      "an odd tick just published",
      () => {
        const ticks = channel.ticks();
        const fresh = ticks.length > seen && ticks.length >= 2;
        seen = ticks.length;
        return fresh && ticks.at(-1).startsWith("odd ");
      },
      5 * INTERVAL_MS,
    );
    // Stopped just after the follower's poll, the leader releases its lease a whole poll before
    // the next: only the release's notice can bring the follower to ask within it.
    const asked = asks.count();
    await waitUntil("the follower's next poll for the lease", () => asks.count() > asked, 1000);
    assert.equal(await leader.stop(), 0, "the leader did not exit cleanly");
    const before = channel.ticks().length;
    await waitUntil(
      "two ticks of the new leader",
      () => channel.ticks().length >= before + 2,
      5 * INTERVAL_MS,
    );
    // It asked for the lease when the leader said it gave it up, not at its next poll.
    const leading = follower.event("leading: this instance ticks");
    assert.ok(leading, "the follower did not take the lease");
    assert.equal(leading.on_release, true, JSON.stringify(leading));
    assertAlternating(channel.ticks());
    for (const client of clients) assertGapless(client);
  });

  // Promise: cluster-stop-withdraws
  it("is stopped: its claims on both streams are withdrawn", async () => {
    assert.equal(claims.withdrawn(), 0, "claims withdrawn while the clients were connected");
    assert.equal(await pair.follower.stop(), 0, "the instance did not exit cleanly");
    await waitUntil("both claims withdrawn", () => claims.withdrawn() === 2);
  });
});
