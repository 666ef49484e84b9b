// Full-backlog resumes beside a stream's clients: how late they make that stream's ticks.
//   node bench/peers/replay.mjs ADDR RESUMES MAX_BACKLOG INTERVAL_MS LABEL
// A raw client of the odd stream (the watcher) records when each integer reaches it, for
// RESUMES intervals with no resume (quiet), then while RESUMES socket.io clients in turn, one
// an interval, resume `/odd` after 1: each is owed the newest MAX_BACKLOG odd integers. Each
// starts a little before the watcher's next integer is due (40, 25 or 10 ms, in turn), so
// that its replay goes out while that tick is handed out. Prints
// one JSON line: how far each phase's gaps between two integers stray from the interval, and
// how long the replays took to arrive, under LABEL. The watcher is a process of its own: the
// resumers' process is busy reading their replays, which would make its integers look late.
import { io } from "socket.io-client";
import WebSocket from "ws";
import { fork } from "node:child_process";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";

// A clock that reads the same in both processes.
const now = () => performance.timeOrigin + performance.now();

// The raw client of the odd stream at `addr`, calling `onArrival` with each integer's time.
async function oddClient(addr, onArrival) {
  const client = new WebSocket(`ws://${addr}/_ws`);
  client.on("message", () => onArrival(now()));
  await once(client, "open");
  return client;
}

if (process.argv[2] === "--watcher") {
  // The watcher: records, and hands its record over when asked.
  const arrivals = [];
  await oddClient(process.argv[3], (time) => arrivals.push(time));
  // It ends with its parent, whatever became of the run.
  process.once("disconnect", () => process.exit(0));
  process.send("ready");
  process.once("message", () => process.send(arrivals, () => process.exit(0)));
  await new Promise(() => {});
}

const [addr, resumesArg, backlogArg, intervalArg, label = ""] = process.argv.slice(2);
const resumes = Number(resumesArg);
const backlog = Number(backlogArg);
const intervalMs = Number(intervalArg);
if (!addr || !(resumes > 0) || !(backlog > 0) || !(intervalMs > 0)) {
  console.error("usage: node bench/peers/replay.mjs ADDR RESUMES MAX_BACKLOG INTERVAL_MS LABEL");
  process.exit(2);
}

// Gives up on the whole run past this, whatever is left.
const deadline = setTimeout(
  () => {
    console.error("replay run timed out");
    process.exit(1);
  },
  (4 * resumes + 60) * intervalMs,
);

const watcher = fork(new URL(import.meta.url), ["--watcher", addr]);
const [ready] = await once(watcher, "message");
if (ready !== "ready") throw new Error(`the watcher said ${ready}`);
// This process's own client of the stream times the resumes; it measures nothing.
let arrived = () => {};
const pacer = await oddClient(addr, () => arrived());
const nextArrival = () => new Promise((resolve) => (arrived = resolve));

// One resume: resolves with how long its whole replay took to arrive.
function resume() {
  return new Promise((resolve, reject) => {
    const started = now();
    let received = 0;
    const socket = io(`http://${addr}/odd`, {
      transports: ["websocket"],
      auth: { after: 1 },
      forceNew: true,
      reconnection: false,
    });
    socket.on("integer", () => {
      received += 1;
      if (received === backlog) {
        socket.close();
        resolve(now() - started);
      }
    });
    socket.on("connect_error", (error) => reject(error));
    socket.on("disconnect", (reason) => {
      if (received < backlog) reject(new Error(`resume ended after ${received}: ${reason}`));
    });
  });
}

// How far each gap between two of the watcher's integers in [from, to) strays from the
// interval, in ms.
function strays(arrivals, from, to) {
  const times = arrivals.filter((time) => time >= from && time < to);
  return times
    .slice(1)
    .map((time, i) => Math.abs(time - times[i] - intervalMs))
    .sort((a, b) => a - b);
}
// For each resume, how much later than one interval after the integer before it the watcher
// got the first integer after the resume began, in ms.
function nextTickLate(arrivals) {
  return starts
    .map((start) => arrivals.findIndex((time) => time > start))
    .filter((index) => index > 0)
    .map((index) => arrivals[index] - arrivals[index - 1] - intervalMs)
    .sort((a, b) => a - b);
}
const summary = (values) => ({
  gaps: values.length,
  p50_ms: values[Math.floor(values.length / 2)] ?? null,
  max_ms: values.at(-1) ?? null,
});

const quietFrom = now();
await sleep(resumes * intervalMs);
const replayFrom = now();
const replays = [];
const pending = [];
const leads = [40, 25, 10];
const starts = [];
for (let i = 0; i < resumes; i++) {
  await nextArrival();
  await sleep(intervalMs - leads[i % leads.length]);
  starts.push(now());
  pending.push(resume().then((ms) => replays.push(ms)));
}
await Promise.all(pending);
// One more interval, so the last resume's effect on the next tick is seen.
await sleep(intervalMs);
const replayTo = now();
pacer.close();
watcher.send("stop");
const [arrivals] = await once(watcher, "message");
clearTimeout(deadline);
console.log(
  JSON.stringify({
    label,
    resumes,
    backlog,
    interval_ms: intervalMs,
    quiet: summary(strays(arrivals, quietFrom, replayFrom)),
    replaying: summary(strays(arrivals, replayFrom, replayTo)),
    next_tick_late: summary(nextTickLate(arrivals)),
    replay_ms: summary(replays.sort((a, b) => a - b)),
  }),
);
