#!/usr/bin/env bash
# Runs the benchmark scenarios against this server and the two Node peers, on loopback, and
# writes bench/RESULTS.md and bench/chart.svg.
#   bash bench/run.sh           every scenario (about fifteen minutes; the cluster scenarios
#                               need redis-server, which tests/run.sh installs)
#   bash bench/run.sh --smoke   200 clients per protocol for a few seconds, checking only that
#                               every client connects and sees a gapless sequence (for CI). It
#                               checks the kit, not speed, so it runs the debug build the tests
#                               already made rather than building a release of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
out=$(mktemp -d)
runs="$out/runs.jsonl"
: > "$runs"

if [ "$smoke" = 1 ]; then
  cargo build --locked -p integers -p integers-bench
  bin=target/debug
else
  cargo build --release --locked -p integers -p integers-bench
  bin=target/release
fi
npm ci --prefix bench/peers --no-audit --no-fund --loglevel=error

server_pid=""
server_addr=""
server_extra=()  # more flags for this server, for one scenario
loadgen_extra=()  # more flags for the load generator, for one scenario
# start_server KIND INTERVAL_MS: ours, ws (Node ws peer), socketio (Node socket.io peer) or bare
# (socketioxide alone, bench/src/bin/bare_socketio.rs).
start_server() {
  local log="$out/server.log"
  : > "$log"
  case "$1" in
    ours) $bin/integers --no-state --host 127.0.0.1 --port 0 --interval-ms "$2" \
            --log-format json "${server_extra[@]}" 2>"$log" & ;;
    ws) PORT=0 INTERVAL_MS="$2" node bench/peers/ws-peer.mjs 2>"$log" & ;;
    socketio) PORT=0 INTERVAL_MS="$2" node bench/peers/socketio-peer.mjs 2>"$log" & ;;
    bare) $bin/bare_socketio --interval-ms "$2" 2>"$log" & ;;
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

free_port() {
  node -e '
    const s = require("net").createServer();
    s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# cluster_scenario NAME PROTOCOL CLIENTS: three instances with --reuse-port on one port and
# one Redis, the load spread over three load-generator processes.
cluster_scenario() {
  local redis_port port pids=() redis_pid
  redis_port=$(free_port)
  port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    >"$out/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 50); do grep -q "Ready to accept" "$out/redis.log" && break; sleep 0.1; done
  for i in 1 2 3; do
    $bin/integers --host 127.0.0.1 --port "$port" --reuse-port --interval-ms 1000 \
      --redis "redis://127.0.0.1:$redis_port" --cluster-name "bench-$1" --log-format json \
      2>"$out/instance-$i.log" &
    pids+=("$!")
  done
  for i in 1 2 3; do
    for _ in $(seq 100); do grep -q '"listening"' "$out/instance-$i.log" && break; sleep 0.1; done
  done
  $bin/loadgen --addr "127.0.0.1:$port" --protocol "$2" --clients "$3" --workers 3 \
    --source-addresses 8 --hold-seconds 10 --ramp-per-second 5000 \
    --server-pid "${pids[0]}" --server-pid "${pids[1]}" --server-pid "${pids[2]}" \
    --label "$1 cluster interval=1000ms" >> "$runs"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
}

# scenario NAME SERVER PROTOCOL CLIENTS INTERVAL_MS HOLD_SECONDS
scenario() {
  start_server "$2" "$5"
  $bin/loadgen --addr "$server_addr" --protocol "$3" --clients "$4" \
    --hold-seconds "$6" --ramp-per-second 5000 --server-pid "$server_pid" \
    --label "$1 $2 interval=$5ms" "${loadgen_extra[@]}" >> "$runs"
  stop_server
}

# overload_scenario SERVER PROTOCOL: 5,000 clients at 10 ms ticks, and 3 s in, 100 more joining
# from a second, lightly loaded load-generator process (20 a second). Their connect times are
# the server's admission latency, without the backlog of the main generator's 5,000 readers.
overload_scenario() {
  start_server "$1" 10
  $bin/loadgen --addr "$server_addr" --protocol "$2" --clients 5000 \
    --hold-seconds 10 --ramp-per-second 5000 --server-pid "$server_pid" \
    --label "overload-5000 $1 interval=10ms" >> "$runs" &
  local main=$!
  sleep 3
  $bin/loadgen --addr "$server_addr" --protocol "$2" --clients 100 \
    --hold-seconds 2 --ramp-per-second 20 --source-addresses 1 \
    --label "overload-late-joiners $1 interval=10ms" > "$out/late.jsonl"
  wait "$main"
  cat "$out/late.jsonl" >> "$runs"
  stop_server
}

if [ "$smoke" = 1 ]; then
  scenario smoke ours raw 200 50 3
  # A fifth of the socket.io clients on long-polling, so that path of the kit runs too.
  loadgen_extra=(--polling-share 0.2)
  scenario smoke ours socketio 200 50 3
  loadgen_extra=()
  scenario smoke ours socketio-v2 200 50 3
  node -e '
    const text = require("fs").readFileSync(process.argv[1], "utf8");
    const runs = text.trim().split("\n").map(JSON.parse);
    for (const run of runs) {
      const clean = run.established === run.clients && run.sequence_gaps === 0 &&
        run.sequence_repeats === 0 && run.messages_in_hold > 0;
      console.log(`${run.label} ${run.protocol}: ${run.established}/${run.clients} connected, ` +
        `${run.messages_in_hold} messages, ${run.sequence_gaps} gaps, ` +
        `${run.sequence_repeats} repeats`);
      if (!clean) process.exit(1);
    }' "$runs"
  exit 0
fi

# The floor, measured three times through the run (here, before the fan-out, before the cluster):
# this machine's speed drifts by a fifth from minute to minute, and the report takes the median.
$bin/probe --sockets 1000 --frames 3000000 > "$out/probe.json"
# The same with as many sockets as one process can hold both ends of under the open-files limit:
# how the floor grows as writes spread over more sockets.
$bin/probe --sockets 9000 --frames 3000000 > "$out/probe-wide.json"
# The same with a reader asleep in epoll_wait, as every real client reads: each write also pays
# for waking it.
$bin/probe --sockets 9000 --frames 3000000 --reader epoll > "$out/probe-epoll.json"
for clients in 1000 10000 19000; do
  scenario "capacity-$clients" ours raw "$clients" 1000 10
  scenario "capacity-$clients" ws raw "$clients" 1000 10
  scenario "capacity-$clients" ours socketio "$clients" 1000 10
  scenario "capacity-$clients" socketio socketio "$clients" 1000 10
done
# socketioxide alone, with the same wire protocol and heartbeat: what the library itself costs.
scenario capacity-19000 bare socketio 19000 1000 10
# socket.io v2 clients (engine.io v3 over WebSocket), beside the v4 row above.
scenario capacity-19000 ours socketio-v2 19000 1000 10
# The same 19k raw clients with this server's heartbeats (a ping every 10 s) practically off, as
# the Node ws peer has none: what dead-peer detection costs.
server_extra=(--ping-interval-ms 600000)
scenario heartbeat-off-19000 ours raw 19000 1000 10
server_extra=()
$bin/probe --sockets 1000 --frames 3000000 > "$out/probe-2.json"
for shape in "1000 10" "5000 50"; do
  set -- $shape
  for pair in "ours raw" "ws raw" "ours socketio" "socketio socketio" "bare socketio"; do
    scenario "fanout-$1" $pair "$1" "$2" 10
  done
done
# The fan-out again with a tenth of the socket.io clients on long-polling (each integer is then
# one HTTP answer and one new request), as clients behind proxies that refuse upgrades are.
loadgen_extra=(--polling-share 0.1)
for server in ours socketio; do
  scenario "fanout-5000-polling10" "$server" socketio 5000 50 10
done
loadgen_extra=()
overload_scenario ours raw
scenario "overload-5000" ws raw 5000 10 10
overload_scenario ours socketio
scenario "overload-5000" socketio socketio 5000 10 10
overload_scenario bare socketio
$bin/probe --sockets 1000 --frames 3000000 > "$out/probe-3.json"
for protocol in raw socketio; do
  cluster_scenario cluster-19000 "$protocol" 19000
  cluster_scenario cluster-50000 "$protocol" 50000
done
node bench/report.mjs "$out" bench/RESULTS.md bench/chart.svg
echo "wrote bench/RESULTS.md and bench/chart.svg (raw results in $out)"
