// The "Restart under socket activation" section of bench/RESULTS.md, from the SIGTERM storms
// of this server binding its own port and under socket activation (storms.jsonl, the load
// generator's reports). Used by report.mjs; run alone, it prints the section:
//   node bench/activations.mjs RESULTS_DIR/storms.jsonl
import { fileURLToPath } from "node:url";
import { readJsonLines } from "./jsonl.mjs";

const fmt = (value, digits = 1) =>
  value == null || Number.isNaN(value) ? "–" : value.toFixed(digits);
const seconds = (ms) => fmt(ms == null ? null : ms / 1000);
const HOW = { ours: "binds its port", activated: "socket-activated" };

export function activationSection(storms) {
  const restarts = storms.filter((r) => {
    const [scenario, server, signal] = r.label.split(" ");
    return scenario === "storm-18900" && signal === "SIGTERM" && server in HOW;
  });
  if (!restarts.some((r) => r.label.split(" ")[1] === "activated")) return [];
  const lines = [
    "## Restart under socket activation",
    "",
    "The SIGTERM restart of the deploy storm (18,900 clients, half raw and half socket.io, " +
      "reconnecting with the official client's back-off), once with the server binding its " +
      "port and once with the port held by `target/release/activate`, as the systemd socket " +
      "unit in docs/deploying.md holds it. Either way the new process starts once the old one " +
      "has exited. Command: `bash bench/run.sh --activation` (this section alone, both kinds " +
      "twice, alternated) or `bash bench/run.sh`.",
    "",
    "| server | protocol | attempts refused | back p50 / 100% s | reconnect connect p50 / p99 ms " +
      "| stall max ms | health p99 ms (failed) | gaps / repeats |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const r of restarts) {
    const s = r.storm;
    lines.push(
      `| ${HOW[r.label.split(" ")[1]]} | ${r.protocol} | ${s.failures.refused ?? 0} ` +
        `| ${seconds(s.back_ms_p50)} / ${seconds(s.back_ms_p100)} ` +
        `| ${fmt(s.reconnect_ms_p50)} / ${fmt(s.reconnect_ms_p99)} ` +
        `| ${fmt(s.stall_ms_max, 0)} | ${fmt(s.healthcheck_ms_p99)} (${s.healthcheck_failures}) ` +
        `| ${r.sequence_gaps} / ${r.sequence_repeats} |`,
    );
  }
  lines.push("");
  return lines;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(activationSection(readJsonLines(process.argv[2])).join("\n"));
}
