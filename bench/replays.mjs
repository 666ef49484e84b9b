// The "Full-backlog resumes" section of bench/RESULTS.md, from the replay runs of bench/run.sh
// (replays.jsonl, written by bench/peers/replay.mjs). Used by report.mjs; run alone, it prints
// the section:
//   node bench/replays.mjs RESULTS_DIR/replays.jsonl
import { readJsonLines } from "./jsonl.mjs";
import { fileURLToPath } from "node:url";

const fmt = (value) => (value == null || Number.isNaN(value) ? "–" : value.toFixed(1));

export function replaySection(replays) {
  if (!replays.length) return [];
  const { resumes, backlog, interval_ms: interval } = replays[0];
  const lines = [
    "## Full-backlog resumes",
    "",
    `19,000 raw clients at ${interval} ms ticks, and a raw watcher of the odd stream. For ` +
      `${resumes} intervals nothing else happens (quiet); then ${resumes} socket.io clients in ` +
      "turn, one an interval and each 10 to 40 ms before the watcher's next integer is due, " +
      `resume \`/odd\` after 1 with \`--max-backlog ${backlog}\`, so each is owed ` +
      `${backlog.toLocaleString("en-US")} integers. A gap's stray is how far the ` +
      "time between two integers at the watcher differs from the interval; the next tick's " +
      "lateness, how much more than an interval after the integer before it the watcher got " +
      "the first integer after a resume began (the replay goes out meanwhile). Command: " +
      "`bash bench/run.sh --replay [SERVER...]` (this section alone, each server binary run " +
      "twice, alternated) or `bash bench/run.sh`.",
    "",
    "| server | stray p50 / max, quiet (ms) | stray p50 / max, replaying (ms) " +
      "| next tick late p50 / max (ms) | replay arrived in p50 / max (ms) |",
    "|---|---|---|---|---|",
  ];
  for (const run of replays) {
    lines.push(
      `| ${run.label} | ${fmt(run.quiet.p50_ms)} / ${fmt(run.quiet.max_ms)} ` +
        `| ${fmt(run.replaying.p50_ms)} / ${fmt(run.replaying.max_ms)} ` +
        `| ${fmt(run.next_tick_late.p50_ms)} / ${fmt(run.next_tick_late.max_ms)} ` +
        `| ${fmt(run.replay_ms.p50_ms)} / ${fmt(run.replay_ms.max_ms)} |`,
    );
  }
  lines.push("");
  return lines;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(replaySection(readJsonLines(process.argv[2])).join("\n"));
}
