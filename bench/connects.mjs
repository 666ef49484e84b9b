// The "Connect latency under overload" section of bench/RESULTS.md, from the connect runs of
// bench/run.sh (connects.jsonl, the load generator's reports). Used by report.mjs; run alone,
// it prints the section:
//   node bench/connects.mjs RESULTS_DIR/connects.jsonl
import { fileURLToPath } from "node:url";
import { readJsonLines } from "./jsonl.mjs";

const fmt = (value) => (value == null || Number.isNaN(value) ? "–" : value.toFixed(1));

export function connectSection(runs) {
  if (!runs.length) return [];
  const lines = [
    "## Connect latency under overload",
    "",
    "The server at 10 ms ticks, and 5,000 raw clients ramped at 1,000 a second and held 10 s: " +
      "delivery keeps both cores busy while clients keep arriving, and each one's connect time " +
      "runs from its TCP connect to the end of its WebSocket handshake. Command: " +
      "`bash bench/run.sh --connect [SERVER...]` (this section alone, each server binary run " +
      "twice, alternated) or `bash bench/run.sh`.",
    "",
    "| server | clients up | connect p50 / p99 (ms) | CPU-s per million frames |",
    "|---|---|---|---|",
  ];
  for (const run of runs) {
    lines.push(
      `| ${run.label} | ${run.established} of ${run.clients} ` +
        `| ${fmt(run.connect_ms_p50)} / ${fmt(run.connect_ms_p99)} ` +
        `| ${fmt(run.server_cpu_seconds_per_million)} |`,
    );
  }
  lines.push("");
  return lines;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(connectSection(readJsonLines(process.argv[2])).join("\n"));
}
