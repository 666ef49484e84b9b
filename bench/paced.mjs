// The "Paced drain" section of bench/RESULTS.md: the restart by hand-over and the rolling
// deploy of a cluster, each once with every client let go at once and once with a paced drain
// (storms.jsonl, the load generator's reports). Used by report.mjs; run alone, it prints the
// section its input has:
//   node bench/paced.mjs RESULTS_DIR/storms.jsonl
import { fileURLToPath } from "node:url";
import { readJsonLines } from "./jsonl.mjs";
import { restartTable } from "./restarts.mjs";

// What each run was: its scenario names the deploy, and the window when paced
// (`storm-18900-pace3s`).
function deployOf(run) {
  // `--paced-on` puts the server binary second: `storm-18900 BINARY handover none`.
  const parts = run.label.split(" ");
  const [scenario, server, signal] = parts.length === 4 ? [parts[0], ...parts.slice(2)] : parts;
  const binary = parts.length === 4 ? ` (${parts[1]})` : "";
  const [, base, window, pinned] =
    scenario.match(/^(storm-18900|rolling-50000)(?:-pace(\d+)s)?(-pinned)?$/) ?? [];
  const paced = window ? `paced over ${window} s` : "all at once";
  const how = pinned ? `${paced}, servers and clients a core each` : paced;
  if (base === "storm-18900" && signal === "hold") return "none (steady hold)";
  if (base === "storm-18900" && (server === "handover" || server === "paced")) {
    return `hand-over, ${how}${binary}`;
  }
  return base === "rolling-50000" ? `rolling, ${how}` : null;
}

export function pacedSection(storms) {
  const runs = storms.filter((r) => deployOf(r) !== null);
  if (!runs.some((r) => deployOf(r).includes("paced"))) return [];
  return [
    "## Paced drain",
    "",
    "Each deploy twice with its clients let go at once and twice with a paced drain " +
      "(`--drain-pace-ms 3000 --drain-ms 10000`; the hand-over also over 5 s, with " +
      "`--drain-ms 12000`), alternated, in one run. The hand-over is the deploy storm's (18,900 " +
      "clients, half raw and half socket.io, a tenth of those on long-polling): raw clients " +
      "move live either way, and the paced drain spreads the socket.io clients' transport " +
      "closes over the window. The rolling deploy is `rolling-50000`'s (three `--reuse-port` " +
      "instances on one Redis, 50,000 raw clients, each instance replaced in turn by SIGTERM " +
      "once its successor listens): paced, each old instance closes its raw clients with 1001 " +
      "over the window while its stream runs on. Every client reconnects with the official " +
      "client's back-off. Beside them, the storm's clients on one process held as long with " +
      "no deploy: its longest wait is the ticks' own jitter under this load. Command: " +
      "`bash bench/run.sh --paced`.",
    "",
    ...restartTable(runs, "deploy", deployOf),
    "",
  ];
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(pacedSection(readJsonLines(process.argv[2])).join("\n"));
}
