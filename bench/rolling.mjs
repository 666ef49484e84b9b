// The "Rolling deploy by hand-over" section of bench/RESULTS.md: the rolling deploy of a
// cluster by SIGTERM, with a paced drain, by hand-over and with tcp_migrate_req, beside a steady
// hold (storms.jsonl, the load generator's reports; handovers.jsonl, each old instance's
// account of the raw connections it handed over). Used by report.mjs; run alone, it prints the
// section its input has:
//   node bench/rolling.mjs RESULTS_DIR/storms.jsonl RESULTS_DIR/handovers.jsonl
import { fileURLToPath } from "node:url";
import { readJsonLines } from "./jsonl.mjs";
import { restartTable } from "./restarts.mjs";

// How each run replaced the instances, from its scenario's name.
const DEPLOYS = {
  "rolling-50000": "SIGTERM",
  "rolling-50000-pace3s": "SIGTERM, paced over 3 s",
  "rolling-50000-handover": "hand-over",
  "rolling-50000-steady": "none (steady hold)",
  "rolling-50000-migrate": "SIGTERM, queue moved (tcp_migrate_req)",
};
const deployOf = (run) => DEPLOYS[run.label.split(" ")[0]] ?? null;

export function rollingSection(storms, handovers = []) {
  const runs = storms.filter((r) => deployOf(r) !== null);
  if (!runs.some((r) => deployOf(r) === "hand-over")) return [];
  const moved = handovers.filter((h) => h.label === "rolling-50000-handover");
  const notes = moved.length
    ? [
        "- Each old instance's account of its raw connections handed over, in deploy order: " +
          moved.map((h) => `${h.moved.connections} in ${h.moved.took_ms} ms`).join(", ") +
          " (from the successor's request to the last batch).",
        "",
      ]
    : [];
  // The table counts refused attempts; a connection that waited in the accept queue of an
  // instance leaving the port is reset instead, and is listed here.
  const resets = runs.filter((r) => r.storm?.failures?.reset);
  const resetNotes = resets.length
    ? [
        "- Reconnection attempts reset (queued on an old instance's listener as it left the " +
          "port; the table counts refusals only): " +
          resets.map((r) => `${deployOf(r)}: ${r.storm.failures.reset}`).join(", ") +
          "; none in the other runs.",
        "",
      ]
    : [];
  return [
    "## Rolling deploy by hand-over",
    "",
    "`rolling-50000` (three `--reuse-port` instances on one Redis, 50,000 raw clients " +
      "reconnecting with the official client's back-off, each instance replaced in turn) four " +
      "ways, twice each, alternated, in one run: SIGTERM once the new instance listens; the " +
      "same with a paced drain (`--drain-pace-ms 3000 --drain-ms 10000`); by hand-over, " +
      "each instance with a `--hand-over` path of its own, the new one started with it taking " +
      "the old one's socket on the port and its raw connections; and SIGTERM again with the " +
      "kernel's `net.ipv4.tcp_migrate_req` at 1, which moves the connections queued on a " +
      "leaving instance's listener to the others instead of resetting them (set for those " +
      "runs alone; they need root). Beside them, the same hold with no deploy, whose longest " +
      "wait is the ticks' own jitter under this load. Command: `bash bench/run.sh --rolling`.",
    "",
    ...restartTable(runs, "deploy", deployOf),
    "",
    ...notes,
    ...resetNotes,
  ];
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const handovers = process.argv[3] ? readJsonLines(process.argv[3]) : [];
  console.log(rollingSection(readJsonLines(process.argv[2]), handovers).join("\n"));
}
