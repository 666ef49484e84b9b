// Starts the real server binary on a random loopback port for one test file.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

const DEFAULT_BIN = fileURLToPath(new URL("../../target/debug/integers", import.meta.url));
const START_TIMEOUT_MS = 15000;

// The lowest port the kernel hands out by itself (`listen(0)`, the local end of an outgoing
// connection). A port in that range, once released, can be taken by any outgoing connection,
// such as a Sentinel's to its peers, before the process meant for it binds it. Below it, only
// an explicit bind can take a port.
const EPHEMERAL_LOW = Number(
  readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0],
);
const LOWEST_PICKED = 10000;

// A loopback port nobody listens on, for a process to bind later (or to bind again after a
// restart): picked at random below the ephemeral range, and checked by binding it once.
export async function freePort() {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port =
      EPHEMERAL_LOW > LOWEST_PICKED + 1000
        ? LOWEST_PICKED + Math.floor(Math.random() * (EPHEMERAL_LOW - LOWEST_PICKED))
        : 0;
    const probe = createServer();
    const bound = await new Promise((resolve) => {
      probe.once("error", () => resolve(null));
      probe.listen(port, "127.0.0.1", () => resolve(probe.address().port));
    });
    if (bound !== null) {
      probe.close();
      await once(probe, "close");
      return bound;
    }
  }
  throw new Error(`no free loopback port below ${EPHEMERAL_LOW} in 100 tries`);
}

// A state file path of its own, to pass to several starts of the server that should continue
// each other's streams.
export function freshStateFile() {
  return join(mkdtempSync(join(tmpdir(), "integers-test-")), "state.json");
}

// Starts `integers` with the given flags; resolves once it logs the address it listens on. The
// port is a free one below the ephemeral range unless given, so that a restart can bind it again.
export async function startServer({
  intervalMs = 50,
  port,
  stateFile = freshStateFile(),
  extraArgs = [],
  env = {},
} = {}) {
  const bin = process.env.INTEGERS_BIN ?? DEFAULT_BIN;
  const args = [
    "--host",
    "127.0.0.1",
    "--port",
    String(port ?? (await freePort())),
    "--interval-ms",
    String(intervalMs),
    "--state-file",
    stateFile,
    "--log-format",
    "json",
    ...extraArgs,
  ];
  const child = spawn(bin, args, {
    env: { ...process.env, RUST_LOG: "info", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`server did not start:\n${log}`)),
      START_TIMEOUT_MS,
    );
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const listening = log
        .split("\n")
        .map((line) => {
          try {
            return JSON.parse(line);
          } catch {
            return null;
          }
        })
        .find((event) => event?.message === "listening");
      if (listening) {
        clearTimeout(timer);
        resolve(listening.addr);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${log}`));
    });
  });
  const url = `http://${address}`;
  return {
    url,
    stateFile,
    pid: child.pid,
    wsUrl: `ws://${address}`,
    port: Number(address.split(":").pop()),
    log: () => log,
    // The first log event with `message`, parsed; undefined if there is none yet.
    event(message) {
      const line = log.split("\n").find((line) => line.includes(`"message":"${message}"`));
      return line && JSON.parse(line);
    },
    async status() {
      const response = await fetch(`${url}/status`);
      if (!response.ok) throw new Error(`/status answered ${response.status}`);
      return response.json();
    },
    // Polls /status until `done(status)` holds.
    async waitForStatus(what, done, timeoutMs = 10000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const status = await this.status();
        if (done(status)) return status;
        if (Date.now() > deadline)
          throw new Error(`timed out waiting for ${what}: ${JSON.stringify(status)}`);
        await sleep(10);
      }
    },
    // Resolves with the exit code once the process exits by itself (a hand-over's old one).
    async exited(timeoutMs = 30000) {
      if (child.exitCode !== null || child.signalCode !== null)
        return child.exitCode ?? child.signalCode;
      let timer;
      const deadline = new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`server did not exit by itself within ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      try {
        const [code, killedBy] = await Promise.race([once(child, "close"), deadline]);
        return code ?? killedBy;
      } finally {
        clearTimeout(timer);
      }
    },
    // Sends `signal` (SIGTERM by default) and resolves with the exit code, or the signal's
    // name when the signal killed it.
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null)
        return child.exitCode ?? child.signalCode;
      child.kill(signal);
      // "close", not "exit": by then the log has been read to its end.
      let timer;
      const deadline = new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`server did not exit within 30 s of ${signal}`)),
          30000,
        );
      });
      try {
        const [code, killedBy] = await Promise.race([once(child, "close"), deadline]);
        return code ?? killedBy;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

// Collects integers from an emitter-like source until `count` arrived.
export function collect(onValue, count, timeoutMs = 10000) {
  const values = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`only ${values.length} of ${count} integers: ${values}`)),
      timeoutMs,
    );
    onValue((value) => {
      values.push(value);
      if (values.length === count) {
        clearTimeout(timer);
        resolve(values);
      }
    });
  });
}

export function assertConsecutive(assert, values, parity) {
  for (let i = 1; i < values.length; i++) {
    assert.equal(values[i], values[i - 1] + 2, `not consecutive: ${values}`);
  }
  for (const value of values) {
    assert.equal(typeof value, "number", `not a number: ${JSON.stringify(value)}`);
    assert.equal(value % 2, parity === "even" ? 0 : 1, `${value} is not ${parity}`);
  }
}

// A TCP gate in front of a server: clients connect to the gate's port, which forwards to the
// target while it is open and is closed (connections refused, as by a stopped server) while it
// is shut. Lets a test keep reconnecting clients away from a restarted server until the stream
// has moved on without them, so that what they get afterwards depends on resuming, not on the
// saved position.
export async function startGate() {
  const { connect } = await import("node:net");
  let target = null;
  const open = new Set();
  const gate = createServer((client) => {
    const upstream = connect(target.port, "127.0.0.1");
    open.add(client);
    open.add(upstream);
    const drop = () => {
      open.delete(client);
      open.delete(upstream);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  gate.listen(await freePort(), "127.0.0.1");
  await eventWithin(gate, "listening", "the gate listening");
  const { port } = gate.address();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    // Forwards new connections to `server` (as returned by startServer), or, given null, shuts
    // the gate: connections already through it stay as they are.
    async setTarget(server) {
      target = server;
      if (server === null && gate.listening) {
        gate.close();
      } else if (server !== null && !gate.listening) {
        gate.listen(port, "127.0.0.1");
        await eventWithin(gate, "listening", "the gate listening again");
      }
    },
    close() {
      for (const socket of open) socket.destroy();
      gate.close();
    },
  };
}

// The first `name` event of `emitter` (its arguments, as `once` gives them), or an error
// naming `what` once `timeoutMs` has passed.
export function eventWithin(emitter, name, what, timeoutMs = 10000) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  return once(emitter, name, { signal: abort.signal }).then(
    (args) => {
      clearTimeout(timer);
      return args;
    },
    (error) => {
      clearTimeout(timer);
      throw error.name === "AbortError"
        ? new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
        : error;
    },
  );
}

// Polls until `done()` holds (awaited: it may be async), failing after `timeoutMs` with what
// it waited for.
export async function waitUntil(what, done, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await done()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
