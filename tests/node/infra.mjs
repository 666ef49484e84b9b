// The processes the end-to-end tests start besides the server (Debian's redis-server,
// redis-sentinel and nginx, on random loopback ports), and checks the cluster tests share.
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { eventWithin, freePort, startServer, waitUntil } from "./server.mjs";

export { freePort, waitUntil };

const NGINX_EXAMPLE = fileURLToPath(new URL("../../deploy/nginx-cluster.conf", import.meta.url));

// Runs `command` until stopped; `ready` is a line its output must show first.
export async function startProcess(command, args, ready) {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const onData = (chunk) => {
    output += chunk;
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  await waitUntil(
    `${command} to start: ${output}`,
    () => {
      if (child.exitCode !== null) throw new Error(`${command} exited: ${output}`);
      return ready(output);
    },
    10000,
  );
  return {
    child,
    output: () => output,
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      try {
        await eventWithin(child, "exit", `${command} to exit after ${signal}`, 15000);
      } catch (error) {
        child.kill("SIGKILL");
        throw error;
      }
    },
  };
}

// Debian's redis-server on a loopback port, with `extraArgs` (TLS, replication) after the
// defaults. No persistence: a restart loses every counter, the hardest case for "never repeat".
export async function startRedis(port, extraArgs = []) {
  return startProcess(
    "redis-server",
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      ...extraArgs,
    ],
    (out) => out.includes("Ready to accept connections"),
  );
}

// nginx running the example config, pointed at the given instance ports.
export async function startNginx(listenPort, instancePorts) {
  let site = readFileSync(NGINX_EXAMPLE, "utf8").replace(
    "listen 127.0.0.1:8080;",
    `listen 127.0.0.1:${listenPort};`,
  );
  const servers = site.match(/server 127\.0\.0\.1:300\d/g);
  assert.equal(servers.length, instancePorts.length, "the example lists one server per instance");
  instancePorts.forEach((port, i) => {
    site = site.replace(`127.0.0.1:300${i + 1}`, `127.0.0.1:${port}`);
  });
  return startNginxSite(listenPort, site);
}

// nginx serving `site` (a server block) on `listenPort`.
export async function startNginxSite(listenPort, site) {
  const dir = mkdtempSync(join(tmpdir(), "integers-nginx-"));
  writeFileSync(join(dir, "site.conf"), site);
  writeFileSync(
    join(dir, "nginx.conf"),
    `
${process.getuid?.() === 0 ? "user root;" : ""}
daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log notice;
events { worker_connections 2048; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  include ${dir}/site.conf;
}
`,
  );
  const nginx = await startProcess("nginx", ["-p", dir, "-c", join(dir, "nginx.conf")], () => {
    try {
      return readFileSync(join(dir, "error.log"), "utf8").includes("start worker process");
    } catch {
      return false;
    }
  });
  return {
    ...nginx,
    url: `http://127.0.0.1:${listenPort}`,
    wsUrl: `ws://127.0.0.1:${listenPort}`,
    // What nginx logged of its errors so far.
    errorLog: () => readFileSync(join(dir, "error.log"), "utf8"),
  };
}

export function assertGapless(client) {
  const { seen, parity, kind } = client;
  for (let i = 1; i < seen.length; i++) {
    assert.ok(
      seen[i] > seen[i - 1],
      `${kind} ${parity} client saw ${seen[i]} after ${seen[i - 1]} (a repeat): ${seen}`,
    );
    assert.equal(seen[i], seen[i - 1] + 2, `${kind} ${parity} client has a gap: ${seen}`);
  }
  for (const value of seen)
    assert.equal(value % 2, parity === "even" ? 0 : 1, `${value} is not ${parity}`);
}

// The value of one sample of an instance's /metrics.
export async function metric(url, name) {
  const page = await (await fetch(`${url}/metrics`)).text();
  const line = page.split("\n").find((l) => l.startsWith(`${name} `));
  assert.ok(line, `no ${name} in ${page}`);
  return Number(line.split(" ")[1]);
}

// Like metric(), for a counter that may not have been counted yet.
export async function metricOr0(url, name) {
  const page = await (await fetch(`${url}/metrics`)).text();
  const line = page.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

export async function healthy(url) {
  const response = await fetch(`${url}/cache-healthcheck`);
  return response.status === 200 && (await response.text()) === "ok";
}

// A CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by it, and
// a second CA that signed neither, made with openssl in a fresh directory; returns their paths.
export function makeCertificates() {
  const dir = mkdtempSync(join(tmpdir(), "integers-tls-"));
  const path = (name) => join(dir, name);
  const openssl = (...args) => execFileSync("openssl", args, { stdio: "pipe" });
  for (const ca of ["ca", "wrong-ca"]) {
    openssl(
      ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"],
      ...["-keyout", path(`${ca}.key`), "-out", path(`${ca}.pem`), "-subj", `/CN=${ca}`],
    );
  }
  // Version 3 certificates, with the extensions each side checks. Redis servers present theirs
  // as clients too, to the primary they replicate.
  const server = "extendedKeyUsage=serverAuth,clientAuth\n";
  const client = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
  // Each leaf with its extensions and the CA that signs it: a server certificate for this host
  // and one for another, a client certificate and one from a CA the servers do not trust.
  const leaves = {
    server: [`subjectAltName=IP:127.0.0.1,DNS:localhost\n${server}`, "ca"],
    elsewhere: [`subjectAltName=DNS:elsewhere.example\n${server}`, "ca"],
    client: [client, "ca"],
    stranger: [client, "wrong-ca"],
  };
  for (const [leaf, [extensions, ca]] of Object.entries(leaves)) {
    writeFileSync(path(`${leaf}.ext`), extensions);
    openssl(
      ...["req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=integers-${leaf}`],
      ...["-keyout", path(`${leaf}.key`), "-out", path(`${leaf}.csr`)],
    );
    openssl(
      ...["x509", "-req", "-in", path(`${leaf}.csr`), "-days", "2", "-CA", path(`${ca}.pem`)],
      ...["-CAkey", path(`${ca}.key`), "-CAcreateserial", "-out", path(`${leaf}.pem`)],
      ...["-extfile", path(`${leaf}.ext`)],
    );
  }
  return {
    ca: path("ca.pem"),
    wrongCa: path("wrong-ca.pem"),
    serverCert: path("server.pem"),
    serverKey: path("server.key"),
    clientCert: path("client.pem"),
    clientKey: path("client.key"),
    elsewhereCert: path("elsewhere.pem"),
    elsewhereKey: path("elsewhere.key"),
    strangerCert: path("stranger.pem"),
    strangerKey: path("stranger.key"),
  };
}

// redis-server's arguments for TLS only on `port` with `certs` (from makeCertificates);
// `clients` is its tls-auth-clients: "optional" or "yes" (mutual TLS).
export function redisTlsArgs(port, certs, clients = "optional") {
  return [
    ...["--port", "0", "--tls-port", String(port), "--tls-replication", "yes"],
    ...["--tls-cert-file", certs.serverCert, "--tls-key-file", certs.serverKey],
    ...["--tls-ca-cert-file", certs.ca, "--tls-auth-clients", clients],
  ];
}

const execFileAsync = promisify(execFile);

// redis-cli against the server on `port`, with the password and certificates given; resolves
// with its output, trimmed. Asynchronous, so clients go on receiving while it runs.
export async function redisCli(port, args, { password, certs } = {}) {
  const options = [
    ...["-h", "127.0.0.1", "-p", String(port), "--no-auth-warning"],
    ...(password ? ["-a", password] : []),
    ...(certs ? ["--tls", "--cacert", certs.ca] : []),
    ...(certs ? ["--cert", certs.clientCert, "--key", certs.clientKey] : []),
  ];
  const { stdout } = await execFileAsync("redis-cli", [...options, ...args], { timeout: 5000 });
  return stdout.trim();
}

// A primary and its replica (Debian's redis-server), watched by three Debian redis-sentinel
// processes tuned to fail over fast: the primary is deemed down after 500 ms without an answer,
// and two Sentinels must agree. With `password`, both servers require it; with `certs`, every
// process speaks only TLS, and with `mutual` each asks its clients for a certificate; with
// `sentinelPassword`, the Sentinels require a password of their own.
export async function startSentinelSet({
  name = "integers-primary",
  password,
  certs,
  mutual = false,
  sentinelPassword,
} = {}) {
  const clients = mutual ? "yes" : "optional";
  const dir = mkdtempSync(join(tmpdir(), "integers-sentinels-"));
  const primaryPort = await freePort();
  const replicaPort = await freePort();
  // The replica's first sync starts at once, not after the default 5 s wait for others.
  const serverArgs = (port) => [
    ...["--dir", dir, "--dbfilename", `dump-${port}.rdb`, "--repl-diskless-sync-delay", "0"],
    ...(certs ? redisTlsArgs(port, certs, clients) : []),
    ...(password ? ["--requirepass", password, "--masterauth", password] : []),
  ];
  const primary = await startRedis(primaryPort, serverArgs(primaryPort));
  const replica = await startRedis(replicaPort, [
    ...serverArgs(replicaPort),
    ...["--replicaof", "127.0.0.1", String(primaryPort)],
  ]);
  await waitUntil("the replica in sync with the primary", async () =>
    (await redisCli(replicaPort, ["INFO", "replication"], { password, certs })).includes(
      "master_link_status:up",
    ),
  );
  const sentinelPorts = [await freePort(), await freePort(), await freePort()];
  const sentinels = [];
  for (const port of sentinelPorts) {
    const config = join(dir, `sentinel-${port}.conf`);
    writeFileSync(
      config,
      [
        "bind 127.0.0.1",
        ...(certs
          ? [
              "port 0",
              `tls-port ${port}`,
              "tls-replication yes",
              `tls-cert-file ${certs.serverCert}`,
              `tls-key-file ${certs.serverKey}`,
              `tls-ca-cert-file ${certs.ca}`,
              `tls-auth-clients ${clients}`,
            ]
          : [`port ${port}`]),
        `sentinel monitor ${name} 127.0.0.1 ${primaryPort} 2`,
        `sentinel down-after-milliseconds ${name} 500`,
        `sentinel failover-timeout ${name} 5000`,
        ...(password ? [`sentinel auth-pass ${name} ${password}`] : []),
        ...(sentinelPassword
          ? [`requirepass ${sentinelPassword}`, `sentinel sentinel-pass ${sentinelPassword}`]
          : []),
        "",
      ].join("\n"),
    );
    sentinels.push(
      await startProcess("redis-sentinel", [config], (out) => out.includes("+monitor master")),
    );
  }
  const sentinelCli = (port, args) => redisCli(port, args, { certs, password: sentinelPassword });
  const sentinel = (args) => sentinelCli(sentinelPorts[0], args);
  // Each Sentinel must know the replica and the two others before a failover can promote it.
  for (const port of sentinelPorts) {
    await waitUntil(
      `the Sentinel on ${port} to know the replica and the other Sentinels`,
      async () => {
        const known = await sentinelCli(port, ["SENTINEL", "replicas", name]);
        const peers = await sentinelCli(port, ["SENTINEL", "sentinels", name]);
        return (
          known.includes(String(replicaPort)) &&
          peers.split("\n").filter((l) => l === "ip").length === 2
        );
      },
    );
  }
  const scheme = certs ? "rediss" : "redis";
  const credentials = sentinelPassword ? `:${sentinelPassword}@` : "";
  return {
    name,
    password,
    primary,
    replica,
    primaryPort,
    replicaPort,
    sentinelPorts,
    sentinelUrls: sentinelPorts.map((port) => `${scheme}://${credentials}127.0.0.1:${port}`),
    // redis-cli on the Sentinel at `port`.
    sentinelCli,
    // The port of the server the Sentinels name as primary now.
    async primaryNow() {
      const answer = await sentinel(["SENTINEL", "get-master-addr-by-name", name]);
      return Number(answer.split("\n")[1]);
    },
    // redis-cli on the server at `port`, with the set's password and certificates.
    cli: (port, args) => redisCli(port, args, { password, certs }),
    async stop() {
      for (const process of [...sentinels, replica, primary]) await process.stop();
    },
  };
}

// Starts an instance with `extraArgs` that must refuse to start: it exits with status 1 before
// it listens, logging one `server failed` line. Resolves with that line's error text.
export async function refusedStart(extraArgs) {
  const error = await startServer({ extraArgs }).then(
    (server) => {
      server.stop();
      assert.fail(`the instance started (${server.url}) with ${extraArgs.join(" ")}`);
    },
    (error) => error,
  );
  assert.match(error.message, /^server exited with 1:/, "not a clean exit with status 1");
  const failed = error.message
    .split("\n")
    .filter((line) => line.includes('"message":"server failed"'))
    .map((line) => JSON.parse(line));
  assert.equal(failed.length, 1, error.message);
  assert.equal(failed[0].level, "ERROR");
  return failed[0].error;
}

// Debian's redis-cli subscribed with `command` (SUBSCRIBE or PSUBSCRIBE) to `target`:
// `messages()` gives what it received so far, in order, each a `{ channel, payload }`.
async function subscribed(port, command, target) {
  const subscriber = await startProcess(
    "redis-cli",
    ["-h", "127.0.0.1", "-p", String(port), command, target],
    // Unframed, each reply's parts come one a line, the first naming its kind.
    (output) => output.split("\n").includes(command.toLowerCase()),
  );
  return {
    messages() {
      const lines = subscriber.output().split("\n");
      const messages = [];
      for (let i = 0; i < lines.length; i++) {
        if (lines[i] === "message" && i + 2 < lines.length) {
          messages.push({ channel: lines[i + 1], payload: lines[i + 2] });
        } else if (lines[i] === "pmessage" && i + 3 < lines.length) {
          messages.push({ channel: lines[i + 2], payload: lines[i + 3] });
        }
      }
      return messages;
    },
    stop: () => subscriber.stop(),
  };
}

// A subscriber to a cluster's tick channel (`integers:{NAME}:ticks`, docs/cluster.md):
// `ticks()` gives the messages so far, `odd 17` or `even 9`, in the order Redis published them.
export async function watchTicks(port, clusterName) {
  const channel = await subscribed(port, "SUBSCRIBE", `integers:{${clusterName}}:ticks`);
  return {
    ticks: () => channel.messages().map((message) => message.payload),
    stop: () => channel.stop(),
  };
}

// The asks for a cluster's lease, through Redis's MONITOR: the script that asks for the lease
// (docs/cluster.md) is the only one that checks it with EXISTS. `count()` gives the asks so far.
export async function watchLeaseAsks(port, clusterName) {
  const monitor = await startProcess(
    "redis-cli",
    ["-h", "127.0.0.1", "-p", String(port), "MONITOR"],
    (output) => output.split("\n").includes("OK"),
  );
  const ask = `[0 lua] "EXISTS" "integers:{${clusterName}}:lease"`;
  return {
    count: () =>
      monitor
        .output()
        .split("\n")
        .filter((line) => line.endsWith(ask)).length,
    stop: () => monitor.stop(),
  };
}

// The claims withdrawn from a cluster's demand sets (docs/cluster.md), through Redis's keyspace
// notifications of sorted-set commands: `withdrawn()` counts the members removed so far.
export async function watchClaimsWithdrawn(port, clusterName) {
  await redisCli(port, ["CONFIG", "SET", "notify-keyspace-events", "Kz"]);
  const keys = await subscribed(
    port,
    "PSUBSCRIBE",
    `__keyspace@0__:integers:{${clusterName}}:demand:*`,
  );
  return {
    withdrawn: () => keys.messages().filter((message) => message.payload === "zrem").length,
    stop: () => keys.stop(),
  };
}

// Asserts that `ticks` alternate between the streams: no stream ticks twice in a row while
// both are in demand.
export function assertAlternating(ticks) {
  const parities = ticks.map((tick) => tick.split(" ")[0]);
  for (let i = 1; i < parities.length; i++) {
    assert.notEqual(
      parities[i],
      parities[i - 1],
      `${parities[i]} ticked twice in a row: ${ticks.join(", ")}`,
    );
  }
}
