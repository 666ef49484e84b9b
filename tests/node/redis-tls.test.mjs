// Cluster mode on a Redis that speaks only TLS (Debian's redis-server with its TLS port, using
// certificates this test makes with openssl): the streams shared over rediss://, mutual TLS,
// and the start-up errors for a certificate that does not verify, never a fall back to TCP.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./server.mjs";
import { rawClient, socketIoClient } from "./clients.mjs";
import {
  assertGapless,
  freePort,
  makeCertificates,
  metric,
  redisCli,
  redisTlsArgs,
  refusedStart,
  startRedis,
  waitUntil,
} from "./infra.mjs";

const INTERVAL_MS = 100;

describe("cluster mode on a Redis that speaks only TLS", () => {
  let certs;
  let redis;
  let redisPort;
  let mutual;
  let mutualPort;
  let plain;
  let plainPort;

  before(async () => {
    certs = makeCertificates();
    redisPort = await freePort();
    redis = await startRedis(redisPort, redisTlsArgs(redisPort, certs, "optional"));
    mutualPort = await freePort();
    mutual = await startRedis(mutualPort, redisTlsArgs(mutualPort, certs, "yes"));
    plainPort = await freePort();
    plain = await startRedis(plainPort);
  });

  after(async () => {
    for (const server of [redis, mutual, plain]) await server?.stop();
  });

  // Promise: cluster-state-in-redis, cluster-same-integers, cluster-alike-tls-sentinel, tls-rediss
  // Promise: tls-ca-file, flag-redis-ca-file, flag-cluster-name
  it("shares the streams over rediss://, verified with --redis-ca-file", async () => {
    const url = `rediss://127.0.0.1:${redisPort}`;
    const instances = [];
    for (let i = 0; i < 3; i++) {
      instances.push(
        await startServer({
          intervalMs: INTERVAL_MS,
          extraArgs: ["--redis", url, "--redis-ca-file", certs.ca],
        }),
      );
    }
    const clients = instances.flatMap((instance) => [
      rawClient(instance.wsUrl, "odd"),
      socketIoClient(instance.url, "odd"),
    ]);
    try {
      await waitUntil("every client's first integers", () =>
        clients.every((c) => c.seen.length >= 3),
      );
      const target = Math.max(...clients.map((c) => c.seen.at(-1))) + 4;
      await waitUntil(`every client to reach ${target}`, () =>
        clients.every((c) => c.seen.at(-1) >= target),
      );
      for (const client of clients) {
        assert.ok(client.seen.includes(target), `a client never received ${target}`);
        assertGapless(client);
      }
      for (const instance of instances) {
        const { cluster } = await instance.status();
        assert.equal(cluster.redis_up, true);
        assert.equal(cluster.redis_primary, `127.0.0.1:${redisPort}`);
        assert.equal(await metric(instance.url, "integers_redis_up"), 1);
      }
      // The counters are in that Redis, read over TLS.
      const counter = await redisCli(redisPort, ["GET", "integers:{integers}:pos:odd"], { certs });
      assert.ok(2 * Number(counter) - 1 >= target, `odd counter ${counter}, clients at ${target}`);
    } finally {
      for (const client of clients) client.close();
      for (const instance of instances) await instance.stop();
    }
  });

  // Promise: tls-ca-file, tls-untrusted, tls-password-hidden, tls-start-error, flag-redis-ca-file
  it("refuses to start when Redis's certificate does not verify, naming the URL", async () => {
    // Signed by another CA than the one given.
    const url = `rediss://:s3cret@127.0.0.1:${redisPort}/0`;
    const error = await refusedStart(["--redis", url, "--redis-ca-file", certs.wrongCa]);
    assert.ok(
      error.startsWith(
        `cannot use Redis at rediss://:***@127.0.0.1:${redisPort}/0: ` +
          "the server's TLS certificate does not verify (UnknownIssuer)",
      ),
      error,
    );
    assert.ok(!error.includes("s3cret"), `the password reached the log: ${error}`);
    // The system's roots do not know the test's CA either.
    const bySystem = await refusedStart(["--redis", `rediss://127.0.0.1:${redisPort}`]);
    assert.ok(
      bySystem.startsWith(
        `cannot use Redis at rediss://127.0.0.1:${redisPort}: ` +
          "the server's TLS certificate does not verify (UnknownIssuer)",
      ),
      bySystem,
    );
  });

  // Promise: tls-wrong-host
  it("refuses to start when Redis's certificate names another host", async () => {
    const port = await freePort();
    const elsewhere = { ...certs, serverCert: certs.elsewhereCert, serverKey: certs.elsewhereKey };
    const other = await startRedis(port, redisTlsArgs(port, elsewhere));
    try {
      const url = `rediss://127.0.0.1:${port}`;
      const error = await refusedStart(["--redis", url, "--redis-ca-file", certs.ca]);
      assert.ok(
        error.startsWith(
          `cannot use Redis at ${url}: the server's TLS certificate does not verify ` +
            "(NotValidForName",
        ),
        error,
      );
    } finally {
      await other.stop();
    }
  });

  // Promise: tls-system-roots
  it("verifies Redis's certificate with the system's roots when no CA file is given", async () => {
    // rustls-native-certs reads the system's roots from SSL_CERT_FILE when it is set.
    const instance = await startServer({
      intervalMs: INTERVAL_MS,
      extraArgs: ["--redis", `rediss://127.0.0.1:${redisPort}`, "--cluster-name", "roots"],
      env: { SSL_CERT_FILE: certs.ca },
    });
    const client = rawClient(instance.wsUrl, "odd");
    try {
      await waitUntil(
        "integers through Redis verified by the system's roots",
        () => client.seen.length >= 3,
      );
      assertGapless(client);
    } finally {
      client.close();
      await instance.stop();
    }
  });

  // Promise: tls-wrong-password
  it("refuses to start with a wrong password in a redis:// URL", async () => {
    const port = await freePort();
    const locked = await startRedis(port, ["--requirepass", "right"]);
    try {
      const error = await refusedStart(["--redis", `redis://:n0t-the-pa55word@127.0.0.1:${port}`]);
      assert.ok(
        error.startsWith(
          `cannot use Redis at redis://:***@127.0.0.1:${port}: authentication failed`,
        ),
        error,
      );
      assert.ok(!error.includes("n0t-the-pa55word"), `the password reached the log: ${error}`);
    } finally {
      await locked.stop();
    }
  });

  // Promise: cluster-redis-down-status, cluster-redis-down-metric, cluster-redis-down-pause
  // Promise: tls-files-need-rediss, tls-start-error, tls-no-fallback, tls-plain-server-nothing
  // Promise: metric-redis-up, http-status-cluster
  it("never falls back to plain TCP", async () => {
    // rediss:// at a server that speaks plain Redis: the handshake gets no answer, the
    // instance waits for a Redis it can verify, and sends that server no command.
    let cliConnections = 0;
    const connectionsReceived = async () => {
      cliConnections += 1; // redis-cli's own
      const stats = await redisCli(plainPort, ["INFO", "stats"]);
      return Number(stats.match(/total_connections_received:(\d+)/)[1]) - cliConnections;
    };
    const before = await connectionsReceived();
    const instance = await startServer({
      intervalMs: INTERVAL_MS,
      extraArgs: ["--redis", `rediss://127.0.0.1:${plainPort}`, "--redis-ca-file", certs.ca],
    });
    const client = rawClient(instance.wsUrl, "odd");
    try {
      await waitUntil(
        "three attempts of the instance to reach that server",
        async () => (await connectionsReceived()) >= before + 3,
      );
      const status = await instance.status();
      assert.equal(status.cluster.redis_up, false);
      assert.equal(status.cluster.redis_primary, null, "a primary named before any connection");
      assert.equal(status.odd.last, null, "integers without the Redis that was asked for");
      assert.deepEqual(client.seen, []);
      assert.equal(await metric(instance.url, "integers_redis_up"), 0);
      assert.equal(await redisCli(plainPort, ["DBSIZE"]), "0", "the plain Redis got commands");
    } finally {
      client.close();
      assert.equal(await instance.stop(), 0);
    }
    // TLS files with a redis:// URL are a mistake, not a reason to skip TLS.
    assert.equal(
      await refusedStart([
        ...["--redis", `redis://127.0.0.1:${plainPort}`, "--redis-ca-file", certs.ca],
      ]),
      `cannot use Redis at redis://127.0.0.1:${plainPort}: ` +
        "a CA file or client certificate needs a rediss:// URL",
    );
  });

  // Promise: tls-client-cert, tls-start-error, flag-redis-client-cert, flag-redis-client-key
  // Promise: tls-client-cert-refused
  it("presents a client certificate to a Redis that requires one (mutual TLS)", async () => {
    const url = `rediss://127.0.0.1:${mutualPort}`;
    const error = await refusedStart(["--redis", url, "--redis-ca-file", certs.ca]);
    assert.ok(
      error.startsWith(
        `cannot use Redis at ${url}: the server refused the TLS handshake (CertificateRequired)`,
      ),
      error,
    );
    // A client certificate from a CA the server does not trust is refused as well.
    const stranger = await refusedStart([
      ...["--redis", url, "--redis-ca-file", certs.ca],
      ...["--redis-client-cert", certs.strangerCert, "--redis-client-key", certs.strangerKey],
    ]);
    assert.ok(
      stranger.startsWith(`cannot use Redis at ${url}: the server refused the TLS handshake (`),
      stranger,
    );
    const instance = await startServer({
      intervalMs: INTERVAL_MS,
      extraArgs: [
        ...["--redis", url, "--redis-ca-file", certs.ca],
        ...["--redis-client-cert", certs.clientCert, "--redis-client-key", certs.clientKey],
      ],
    });
    const client = rawClient(instance.wsUrl, "even");
    try {
      await waitUntil("integers through the mutual-TLS Redis", () => client.seen.length >= 3);
      assertGapless(client);
      assert.equal((await instance.status()).cluster.redis_up, true);
    } finally {
      client.close();
      await instance.stop();
    }
  });
});
