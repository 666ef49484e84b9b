// The "Restart under socket activation" and "Restart by hand-over" sections of
// bench/RESULTS.md, from the storms of this server binding its own port beside the same
// restart under socket activation or by hand-over (storms.jsonl, the load generator's
// reports). Used by report.mjs; run alone, it prints the sections its input has:
//   node bench/restarts.mjs RESULTS_DIR/storms.jsonl [RESULTS_DIR/handovers.jsonl]
import { fileURLToPath } from "node:url";
import { readJsonLines } from "./jsonl.mjs";

const fmt = (value, digits = 1) =>
  value == null || Number.isNaN(value) ? "–" : value.toFixed(digits);
const seconds = (ms) => fmt(ms == null ? null : ms / 1000);
const mib = (kib) => (kib == null ? "–" : fmt(kib / 1024, 0));
const HOW = { ours: "binds its port", activated: "socket-activated", handover: "hand-over" };

// The rows of `restarts`, each named in the first column (headed `what`) by `nameOf`. CPU and
// RSS are the servers' through the storm's window, from the first drop to the last client
// back, every process the restart ran summed (at a hand-over, the old one and the new); a run
// that dropped nobody has no window.
export function restartTable(restarts, what, nameOf) {
  const lines = [
    `| ${what} | protocol | clients dropped | attempts refused | back p50 / 100% s ` +
      "| reconnect connect p50 / p99 ms | stall max ms | health p99 ms (failed) | gaps / repeats " +
      "| CPU-s / window s | RSS MiB before / peak |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of restarts) {
    const s = r.storm;
    lines.push(
      `| ${nameOf(r)} | ${r.protocol} | ${s.dropped_clients} ` +
        `| ${s.failures.refused ?? 0} ` +
        `| ${seconds(s.back_ms_p50)} / ${seconds(s.back_ms_p100)} ` +
        `| ${fmt(s.reconnect_ms_p50)} / ${fmt(s.reconnect_ms_p99)} ` +
        `| ${fmt(s.stall_ms_max, 0)} | ${fmt(s.healthcheck_ms_p99)} (${s.healthcheck_failures}) ` +
        `| ${r.sequence_gaps} / ${r.sequence_repeats} ` +
        (s.dropped_clients
          ? `| ${fmt(s.server_cpu_seconds_in_window)} / ${fmt(s.window_seconds)} ` +
            `| ${mib(s.server_rss_kib_before)} / ${mib(s.server_rss_kib_peak)} |`
          : "| – | – |"),
    );
  }
  return lines;
}

// The section comparing the SIGTERM restart of this server binding its port with KIND's,
// once KIND's storms are in `storms`.
function restartSection(storms, kind, title, intro, notes = []) {
  const restarts = storms.filter((r) => {
    const [scenario, server, signal] = r.label.split(" ");
    const binding = server === "ours" && signal === "SIGTERM";
    return scenario === "storm-18900" && (binding || server === kind);
  });
  if (!restarts.some((r) => r.label.split(" ")[1] === kind)) return [];
  return [
    `## ${title}`,
    "",
    intro,
    "",
    ...restartTable(restarts, "server", (r) => HOW[r.label.split(" ")[1]]),
    "",
    ...notes,
  ];
}

const STORM =
  "The SIGTERM restart of the deploy storm (18,900 clients, half raw and half socket.io, " +
  "reconnecting with the official client's back-off)";

export function activationSection(storms) {
  return restartSection(
    storms,
    "activated",
    "Restart under socket activation",
    `${STORM}, once with the server binding its port and once with the port held by ` +
      "`target/release/activate`, as the systemd socket unit in docs/deploying.md holds it. " +
      "Either way the new process starts once the old one has exited. Command: " +
      "`bash bench/run.sh --activation` (this section alone, both kinds twice, alternated) " +
      "or `bash bench/run.sh`.",
  );
}

// `handovers`: the old process's log line for each hand-over's raw connections.
export function handOverSection(storms, handovers = []) {
  const notes = handovers
    .filter((h) => h.label === "storm-18900")
    .map(
      (h) =>
        `- The old process handed ${h.moved.connections} raw connections over in ` +
        `${h.moved.took_ms} ms, from the successor's request to the last batch.`,
    );
  if (notes.length) notes.push("");
  return restartSection(
    storms,
    "handover",
    "Restart by hand-over",
    `${STORM}, once with the server binding its port (SIGTERM, then the new process once the ` +
      "old one has exited) and once by hand-over: the new process is started beside the old " +
      "one with the same `--hand-over` path, takes its listening socket and, once the old " +
      "one's source has stopped, its positions; the old one drains and exits by itself. " +
      "Command: `bash bench/run.sh --hand-over` (this section alone, both kinds twice, " +
      "alternated) or `bash bench/run.sh`.",
    notes,
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const storms = readJsonLines(process.argv[2]);
  const handovers = process.argv[3] ? readJsonLines(process.argv[3]) : [];
  console.log([...activationSection(storms), ...handOverSection(storms, handovers)].join("\n"));
}
