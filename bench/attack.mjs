// The "Under attack" section of bench/RESULTS.md, from the attack scenarios of bench/run.sh
// (attacks.jsonl). Used by report.mjs; run alone, it prints the section:
//   node bench/attack.mjs RESULTS_DIR/attacks.jsonl
import { readJsonLines } from "./jsonl.mjs";
import { fileURLToPath } from "node:url";

const mib = (kib) => (kib / 1024).toFixed(1);
const fmt = (value, digits = 1) =>
  value == null || Number.isNaN(value) ? "–" : value.toFixed(digits);

const SERVERS = { ours: "this server", socketio: "Node socket.io" };

function describe(attack) {
  const v2 = attack.flood_args.includes("EIO=3") ? "socket.io v2 sessions" : "v4 sessions";
  const from =
    attack.name === "session-flood-many-addresses"
      ? "as from many addresses (`--max-pending-per-peer 1000000`)"
      : "from one address";
  return `${SERVERS[attack.server] ?? attack.server}: ${v2} ${from}`;
}

export function attackSection(attacks) {
  if (!attacks.length) return [];
  const lines = [
    "## Under attack: the engine.io session flood",
    "",
    "One client asks for a new long-polling session in a loop from 20 keep-alive connections " +
      "for 10 s and never uses one (`bench/src/bin/flood.rs`), while 100 honest socket.io " +
      "clients stream at 100 ms ticks. RSS is read every 0.2 s from just before the flood " +
      'until 30 s after it; "end" is that last reading. Sessions are read from `/status` ' +
      "(Node socket.io does not report them). Command: `bash bench/run.sh --attack` (this " +
      "section alone) or `bash bench/run.sh`.",
    "",
    "| flood | answers | sessions at peak / end | RSS before / peak / end (MiB) " +
      "| honest clients: up, gaps, skew p99 / max (ms) |",
    "|---|---|---|---|---|",
  ];
  for (const attack of attacks) {
    const answers = Object.entries(attack.flood.statuses)
      .map(([status, count]) => `${count.toLocaleString("en-US")} × ${status}`)
      .join(", ");
    const honest = attack.honest;
    const broken = attack.flood.broken ? `, ${attack.flood.broken} broken` : "";
    const rss = [attack.rss_kib_before, attack.rss_kib_peak, attack.rss_kib_end].map(mib);
    lines.push(
      `| ${describe(attack)} | ${answers}${broken} ` +
        `| ${attack.sessions_peak ?? "–"} / ${attack.sessions_end ?? "–"} ` +
        `| ${rss.join(" / ")} ` +
        `| ${honest.established} of ${honest.clients}, ${honest.sequence_gaps} gaps, ` +
        `${fmt(honest.skew_ms_p99)} / ${fmt(honest.skew_ms_max)} |`,
    );
  }
  lines.push("");
  return lines;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(attackSection(readJsonLines(process.argv[2])).join("\n"));
}
