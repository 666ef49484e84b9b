#!/usr/bin/env bash
# Runs the benchmark scenarios against this server and the two Node peers, on loopback, and
# writes bench/RESULTS.md and bench/chart.svg.
#   bash bench/run.sh           every scenario (about ten minutes)
#   bash bench/run.sh --smoke   200 clients per protocol for a few seconds, checking only that
#                               every client connects and sees a gapless sequence (for CI)
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
out=$(mktemp -d)
runs="$out/runs.jsonl"
: > "$runs"

cargo build --release --locked -p integers -p integers-bench
npm ci --prefix bench/peers --no-audit --no-fund --loglevel=error

server_pid=""
server_addr=""
# start_server KIND INTERVAL_MS: ours, ws (Node ws peer) or socketio (Node socket.io peer).
start_server() {
  local log="$out/server.log"
  : > "$log"
  case "$1" in
    ours) target/release/integers --no-state --host 127.0.0.1 --port 0 --interval-ms "$2" --log-format json 2>"$log" & ;;
    ws) PORT=0 INTERVAL_MS="$2" node bench/peers/ws-peer.mjs 2>"$log" & ;;
    socketio) PORT=0 INTERVAL_MS="$2" node bench/peers/socketio-peer.mjs 2>"$log" & ;;
  esac
  server_pid=$!
  for _ in $(seq 100); do
    server_addr=$(grep -o '"addr":"[^"]*"' "$log" | head -1 | cut -d'"' -f4 || true)
    [ -n "$server_addr" ] && return 0
    sleep 0.1
  done
  echo "server $1 did not start:" >&2
  cat "$log" >&2
  exit 1
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}

# scenario NAME SERVER PROTOCOL CLIENTS INTERVAL_MS HOLD_SECONDS
scenario() {
  start_server "$2" "$5"
  target/release/loadgen --addr "$server_addr" --protocol "$3" --clients "$4" \
    --hold-seconds "$6" --ramp-per-second 5000 --server-pid "$server_pid" \
    --label "$1 $2 interval=$5ms" >> "$runs"
  stop_server
}

if [ "$smoke" = 1 ]; then
  scenario smoke ours raw 200 50 3
  scenario smoke ours socketio 200 50 3
  node -e '
    const runs = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
    for (const run of runs) {
      const clean = run.established === run.clients && run.sequence_gaps === 0 && run.sequence_repeats === 0 && run.messages_in_hold > 0;
      console.log(`${run.label} ${run.protocol}: ${run.established}/${run.clients} connected, ${run.messages_in_hold} messages, ${run.sequence_gaps} gaps, ${run.sequence_repeats} repeats`);
      if (!clean) process.exit(1);
    }' "$runs"
  exit 0
fi

target/release/probe --sockets 1000 --frames 3000000 > "$out/probe.json"
for clients in 1000 10000 19000; do
  scenario "capacity-$clients" ours raw "$clients" 1000 10
  scenario "capacity-$clients" ws raw "$clients" 1000 10
  scenario "capacity-$clients" ours socketio "$clients" 1000 10
  scenario "capacity-$clients" socketio socketio "$clients" 1000 10
done
for shape in "1000 10" "5000 50"; do
  set -- $shape
  for pair in "ours raw" "ws raw" "ours socketio" "socketio socketio"; do
    scenario "fanout-$1" $pair "$1" "$2" 10
  done
done
for pair in "ours raw" "ws raw" "ours socketio" "socketio socketio"; do
  scenario "overload-5000" $pair 5000 10 10
done
node bench/report.mjs "$out" bench/RESULTS.md bench/chart.svg
echo "wrote bench/RESULTS.md and bench/chart.svg (raw results in $out)"
