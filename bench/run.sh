#!/usr/bin/env bash
# Runs the benchmark scenarios against this server and the two Node peers, on loopback, and
# writes bench/RESULTS.md and bench/chart.svg.
#   bash bench/run.sh           every scenario (about fifteen minutes; the cluster scenarios
#                               need redis-server, which tests/run.sh installs)
#   bash bench/run.sh --storm [SERVER...]
#                               the deploy storms alone, printing their results (no
#                               RESULTS.md); given server binaries, the SIGTERM storm alone on
#                               each, twice, alternated
#   bash bench/run.sh --activation
#                               the SIGTERM storm of this server binding its port, and under
#                               socket activation (bench/src/bin/activate.rs holding the
#                               port), twice each, alternated, printing their results
#   bash bench/run.sh --hand-over
#                               the same SIGTERM storm of this server binding its port, and
#                               the restart by hand-over (the new process started with the
#                               old one's --hand-over path), twice each, alternated
#   bash bench/run.sh --paced   the paced drain (--drain-pace-ms): the restart by hand-over
#                               and the rolling deploy of a cluster, each unpaced and paced,
#                               and the restart's steady hold with no deploy, twice each,
#                               alternated
#   bash bench/run.sh --pinned  the restart by hand-over paced over 5 s, as in --paced, and the
#                               same with the servers on one core and the load generators on
#                               the other (taskset), twice each, alternated
#   bash bench/run.sh --paced-on SERVER...
#                               the restart by hand-over, all at once and paced over 5 s, on
#                               each server binary given, twice, alternated
#   bash bench/run.sh --rolling the rolling deploy of a cluster by SIGTERM, with a paced
#                               drain, by hand-over, by SIGTERM with the kernel moving a
#                               leaving listener's queue (needs root), and its steady hold
#                               with no deploy, twice each, alternated
#   bash bench/run.sh --hot-path SERVER...
#                               the 19,000-client capacity and 5,000-client fan-out scenarios
#                               of this server alone, on each binary given, twice, alternated,
#                               printing the load generator's reports
#   bash bench/run.sh --attack  the engine.io session flood alone, printing its section of
#                               RESULTS.md
#   bash bench/run.sh --replay [SERVER...]
#                               full-backlog resumes beside 19,000 clients alone, printing
#                               their section of RESULTS.md; given server binaries (this
#                               tree's release build by default), twice each, alternated
#   bash bench/run.sh --connect [SERVER...]
#                               connect latency under overload alone, printing its section
#                               of RESULTS.md; server binaries as for --replay
#   bash bench/run.sh --smoke   200 clients per protocol for a few seconds, checking only that
#                               every client connects and sees a gapless sequence (for CI). It
#                               checks the kit, not speed, so it runs the debug build the tests
#                               already made rather than building a release of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
storm_only=0
attack_only=0
[ "${1:-}" = "--smoke" ] && smoke=1
[ "${1:-}" = "--storm" ] && storm_only=1
[ "${1:-}" = "--attack" ] && attack_only=1
replay_only=0
[ "${1:-}" = "--replay" ] && replay_only=1
hot_path_only=0
[ "${1:-}" = "--hot-path" ] && hot_path_only=1
connect_only=0
[ "${1:-}" = "--connect" ] && connect_only=1
activation_only=0
[ "${1:-}" = "--activation" ] && activation_only=1
hand_over_only=0
[ "${1:-}" = "--hand-over" ] && hand_over_only=1
paced_only=0
[ "${1:-}" = "--paced" ] && paced_only=1
pinned_only=0
[ "${1:-}" = "--pinned" ] && pinned_only=1
paced_on_only=0
[ "${1:-}" = "--paced-on" ] && paced_on_only=1
rolling_only=0
[ "${1:-}" = "--rolling" ] && rolling_only=1
out=$(mktemp -d)
runs="$out/runs.jsonl"
storms="$out/storms.jsonl"
: > "$runs"
: > "$storms"
attacks="$out/attacks.jsonl"
: > "$attacks"

if [ "$smoke" = 1 ]; then
  cargo build --locked -p integers -p integers-bench
  bin=target/debug
else
  cargo build --release --locked -p integers -p integers-bench
  bin=target/release
fi
# The binary the scenarios of this server ("ours") run; the comparing modes set it per run.
server_bin="$bin/integers"
npm ci --prefix bench/peers --no-audit --no-fund --loglevel=error

replays="$out/replays.jsonl"
: > "$replays"
binary_pid=""
binary_addr=""
# start_binary SERVER NAME FLAG...: the SERVER binary (this server, built from any commit) on a
# free loopback port with FLAGs; sets binary_pid and binary_addr once it listens.
start_binary() {
  local server=$1 name=$2 log="$out/$2-server.log"
  shift 2
  "$server" --host 127.0.0.1 --port 0 --log-format json "$@" 2>"$log" &
  binary_pid=$!
  wait_for_line "$log" '"addr"' "the $name scenario's server"
  binary_addr=$(grep -o '"addr":"[^"]*"' "$log" | head -1 | cut -d'"' -f4)
}

stop_binary() {
  [ -n "$binary_pid" ] || return 0
  kill "$binary_pid" 2>/dev/null || true
  wait "$binary_pid" 2>/dev/null || true
  binary_pid=""
}
# A run that fails midway leaves no server behind: neither a scenario's binary nor a storm's
# servers and socket-unit stand-in.
stop_all() {
  stop_binary
  [ -z "$activator_pid" ] || kill "$activator_pid" 2>/dev/null || true
  cat "$out"/storm-*.pids 2>/dev/null | xargs -r kill 2>/dev/null || true
  restore_migrate
}

# The kernel setting that moves connections queued on a listener leaving a shared port to the
# others (Linux 5.14+), as a `migrate` rolling deploy sets it; empty while untouched.
migrate_path=/proc/sys/net/ipv4/tcp_migrate_req
migrate_before=""
# set_migrate: sets it to 1, remembering what it was; fails if it cannot (it needs root).
set_migrate() {
  migrate_before=$(cat "$migrate_path" 2>/dev/null) && echo 1 2>/dev/null > "$migrate_path" \
    || { migrate_before=""; return 1; }
}
restore_migrate() {
  [ -z "$migrate_before" ] || echo "$migrate_before" > "$migrate_path"
  migrate_before=""
}
trap stop_all EXIT

# alternate SCENARIO SERVER...: SCENARIO on each server binary given (this tree's release
# build if none), twice over, alternated, so that their figures come from one run side by side.
alternate() {
  local scenario=$1 servers round server
  shift
  servers=("$@")
  [ ${#servers[@]} -gt 0 ] || servers=("$bin/integers")
  for round in 1 2; do
    for server in "${servers[@]}"; do "$scenario" "$server"; done
  done
}

# replay_scenario SERVER: 19,000 raw clients at 1 s ticks on the SERVER binary, and
# bench/peers/replay.mjs's watcher and sixteen socket.io clients resuming /odd with the largest
# --max-backlog, 100,000 integers each (the state file starts the streams far enough along to
# owe them that many).
replay_scenario() {
  local state="$out/replay-state.json"
  printf '{"version":1,"odd":400001,"even":400002}\n' > "$state"
  start_binary "$1" replay --state-file "$state" --interval-ms 1000 --max-backlog 100000
  rm -f "$out/ready-replay"
  $bin/loadgen --addr "$binary_addr" --protocol raw --clients 19000 --hold-seconds 50 \
    --ramp-per-second 5000 --server-pid "$binary_pid" --ready-file "$out/ready-replay" \
    --label "replay-19000 ours interval=1000ms" > "$out/replay-load.json" &
  local load=$!
  wait_for_file "$out/ready-replay" 60 "the replay scenario's clients up"
  node bench/peers/replay.mjs "$binary_addr" 16 100000 1000 "$1" >> "$replays"
  wait "$load" || { echo "the replay scenario's load generator failed" >&2; exit 1; }
  stop_binary
}

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
    ours) "$server_bin" --no-state --host 127.0.0.1 --port 0 --interval-ms "$2" \
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

# free_port: a loopback port nobody listens on, picked at random below the kernel's ephemeral
# range. A released port inside it can be taken by any outgoing connection (the load
# generators open thousands) before the process meant for it binds it.
free_port() {
  local low port
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
  for _ in $(seq 100); do
    port=$((10000 + (RANDOM * 32768 + RANDOM) % (low - 10000)))
    if node -e '
      const s = require("net").createServer();
      s.on("error", () => process.exit(1));
      s.listen(Number(process.argv[1]), "127.0.0.1", () => s.close());' "$port"; then
      echo "$port"
      return
    fi
  done
  echo "no free port below $low" >&2
  return 1
}

# wait_for_line FILE PATTERN WHAT: waits up to 30 s for PATTERN in FILE.
wait_for_line() {
  for _ in $(seq 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out after 30 s waiting for $3" >&2
  cat "$1" >&2 || true
  exit 1
}

# wait_for_file FILE SECONDS WHAT
wait_for_file() {
  for _ in $(seq $(($2 * 10))); do
    [ -e "$1" ] && return 0
    sleep 0.1
  done
  echo "timed out after $2 s waiting for $3" >&2
  exit 1
}

redis_pid=""
redis_port=""
# start_redis: a redis-server without persistence on a free loopback port, for a cluster.
start_redis() {
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    >"$out/redis.log" 2>&1 &
  redis_pid=$!
  wait_for_line "$out/redis.log" "Ready to accept" "redis-server"
}

instance_pid=""
# start_instance NAME PORT LOG [FLAG...]: one cluster instance of this server on the shared
# PORT and the Redis of start_redis, with FLAGs added; sets instance_pid once it listens.
start_instance() {
  $bin/integers --host 127.0.0.1 --port "$2" --reuse-port --interval-ms 1000 \
    --redis "redis://127.0.0.1:$redis_port" --cluster-name "bench-$1" --log-format json \
    "${instance_extra[@]}" "${@:4}" 2>"$3" &
  instance_pid=$!
  wait_for_line "$3" '"listening"' "instance $3 listening"
}

# cluster_scenario NAME PROTOCOL CLIENTS: three instances with --reuse-port on one port and
# one Redis, the load spread over three load-generator processes.
cluster_scenario() {
  local port pids=() i
  start_redis
  port=$(free_port)
  for i in 1 2 3; do
    start_instance "$1" "$port" "$out/instance-$i.log"
    pids+=("$instance_pid")
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

# A paced drain: its window, and the drain it fits in (for the `paced` storm server and the
# paced rolling deploy): 3 s by default, and the longer window the restart by hand-over is
# also measured with.
PACED_3S=(--drain-pace-ms 3000 --drain-ms 10000)
PACED_5S=(--drain-pace-ms 5000 --drain-ms 12000)
PACED=("${PACED_3S[@]}")
# Flags every cluster instance gets.
instance_extra=()
# The storms' CPU affinity: empty, or `taskset -c N` for the servers and the load generators.
server_cpu=()
load_cpu=()

storm_pid=""
activator_pid=""
activator_log=""
activated_starts=0
# storm_server KIND PORT LOG PIDS: one server of a storm on a fixed port, this server with a
# state file (the streams survive its restarts), the Node peers as they are; sets storm_pid
# once it listens, and appends it to PIDS. KIND `activated` is this server under socket
# activation: `activate` holds the port, as a socket unit does, and starts this server on it
# twice (the second time when the first has exited), appending each one's pid itself, and
# its log is the first call's LOG; called for the second server, it waits for it. KIND
# `handover` is this server with a --hand-over path: the second one takes over from the first;
# KIND `paced` is the same with a paced drain (PACED).
storm_server() {
  local ours=("${server_cpu[@]}" "$server_bin" --host 127.0.0.1 --port "$2" --interval-ms 1000
    --state-file "$out/storm-state.json" --log-format json)
  case "$1" in
    ours) "${ours[@]}" 2>"$3" & ;;
    handover) "${ours[@]}" --hand-over "$out/storm-control.sock" 2>"$3" & ;;
    paced) "${ours[@]}" --hand-over "$out/storm-control.sock" "${PACED[@]}" 2>"$3" & ;;
    ws) PORT="$2" INTERVAL_MS=1000 node bench/peers/ws-peer.mjs 2>"$3" & ;;
    socketio) PORT="$2" INTERVAL_MS=1000 node bench/peers/socketio-peer.mjs 2>"$3" & ;;
    activated)
      if [ -z "$activator_pid" ]; then
        activator_log=$3
        $bin/activate --listen "127.0.0.1:$2" --pid-file "$4" --starts 2 -- "${ours[@]}" \
          2>"$activator_log" &
        activator_pid=$!
      fi
      activated_starts=$((activated_starts + 1))
      # Its pid (written after the start) and its listening line, in either order.
      local up=0
      for _ in $(seq 300); do
        [ "$(grep -c '"listening"' "$activator_log" 2>/dev/null || true)" -ge \
          "$activated_starts" ] && [ "$(wc -l < "$4" 2>/dev/null || echo 0)" -ge \
          "$activated_starts" ] && { up=1; break; }
        sleep 0.1
      done
      [ "$up" = 1 ] || {
        echo "timed out after 30 s waiting for activated server $activated_starts" >&2
        cat "$activator_log" >&2
        exit 1
      }
      storm_pid=$(sed -n "${activated_starts}p" "$4")
      return 0 ;;
  esac
  storm_pid=$!
  echo "$storm_pid" >> "$4"
  wait_for_line "$3" '"listening"' "$1 listening on port $2"
}

# storm_scenario NAME SIGNAL CLIENTS HOLD_SECONDS KIND...: a restart under load. CLIENTS
# clients, half raw and half socket.io (a tenth of those on long-polling), reconnecting as the
# official client does (`loadgen --reconnect`). Three seconds into the hold every server gets
# SIGNAL, and once it has exited a new one starts on the same port. KIND `handover` gets no
# signal (SIGNAL is then `none`): the new process starts at once and takes over, and the old
# one exits by itself. SIGNAL `hold` deploys nothing: the steady hold the others are compared
# with. With one KIND it serves both halves; with two (the Node peers), the
# first serves raw and the second socket.io.
storm_scenario() {
  local name=$1 signal=$2 clients=$3 hold=$4
  shift 4
  local kinds=("$@") ports=() pids=() loads=() i step=0
  rm -f "$out/storm-state.json" "$out/storm-control.sock" "$out"/storm-*.pids "$out"/ready-*
  activator_pid=""
  activated_starts=0
  for i in "${!kinds[@]}"; do
    ports[i]=$(free_port)
    storm_server "${kinds[i]}" "${ports[i]}" "$out/storm-$i-$step.log" "$out/storm-$i.pids"
    pids[i]=$storm_pid
  done
  local last=$((${#kinds[@]} - 1)) protocol
  for protocol in raw socketio; do
    i=0
    [ "$protocol" = socketio ] && i=$last
    "${load_cpu[@]}" $bin/loadgen --addr "127.0.0.1:${ports[i]}" --protocol "$protocol" \
      --clients $((clients / 2)) --polling-share 0.1 --reconnect --hold-seconds "$hold" \
      --ramp-per-second 2500 --server-pid-file "$out/storm-$i.pids" \
      --ready-file "$out/ready-$protocol" --label "$name ${kinds[i]} $signal" \
      > "$out/storm-$protocol.json" &
    loads+=("$!")
  done
  wait_for_file "$out/ready-raw" 60 "the raw clients up"
  wait_for_file "$out/ready-socketio" 60 "the socket.io clients up"
  # Steady ticks first, so every client has a place to resume from.
  sleep 3
  step=1
  if [ "$signal" = hold ]; then
    :
  elif [ "${kinds[0]}" = handover ] || [ "${kinds[0]}" = paced ]; then
    local old=${pids[0]}
    storm_server "${kinds[0]}" "${ports[0]}" "$out/storm-0-$step.log" "$out/storm-0.pids"
    pids[0]=$storm_pid
    wait "$old" 2>/dev/null || true
    # The old process's own account of the raw connections it handed over, and how long that
    # took, for RESULTS.md.
    grep -h '"handed the raw connections over"' "$out/storm-0-0.log" \
      | sed "s|^|{\"label\":\"$name\",\"moved\":|; s|\$|}|" >> "$out/handovers.jsonl" \
      || true
  else
    for i in "${!kinds[@]}"; do kill -"$signal" "${pids[i]}"; done
    for i in "${!kinds[@]}"; do
      # The activator's server is not this shell's child: its successor's start is the wait.
      [ "${kinds[i]}" = activated ] || wait "${pids[i]}" 2>/dev/null || true
    done
    for i in "${!kinds[@]}"; do
      storm_server "${kinds[i]}" "${ports[i]}" "$out/storm-$i-$step.log" "$out/storm-$i.pids"
      pids[i]=$storm_pid
    done
  fi
  # Each load generator is waited for on its own: a plain `wait` on several reports only the
  # last one's status.
  for i in "${!loads[@]}"; do
    wait "${loads[i]}" || { echo "load generator $i of $name $signal failed" >&2; exit 1; }
  done
  cat "$out/storm-raw.json" "$out/storm-socketio.json" >> "$storms"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" $activator_pid 2>/dev/null || true
  rm -f "$out"/storm-*.pids
  activator_pid=""
}

# rolling_scenario NAME CLIENTS HOLD_SECONDS [handover|steady|migrate]: three instances with --reuse-port on
# one port and one Redis, holding CLIENTS raw clients that reconnect as the official client
# does. Three seconds into the hold each instance in turn is replaced: a new one starts, then
# the old one gets SIGTERM and is waited for. With `handover`, each instance has a --hand-over
# path of its own, and the new one, started with it, takes the old one's socket and raw
# connections over; the old one drains and exits by itself. With `steady`, nothing is replaced:
# the steady hold the deploys are compared with. With `migrate`, SIGTERM as without, but with
# net.ipv4.tcp_migrate_req at 1 for the run: the connections queued on an old instance's
# listener as it leaves move to the others instead of being reset. Setting it needs root; a
# run that cannot is skipped, saying so.
rolling_scenario() {
  local port pids=() i load handing=()
  if [ "${4:-}" = migrate ] && ! set_migrate; then
    echo "skipped $1: cannot set $migrate_path (it needs root, and Linux 5.14+)" >&2
    return 0
  fi
  start_redis
  port=$(free_port)
  rm -f "$out/rolling.pids" "$out/ready-rolling" "$out"/rolling-*.sock
  for i in 0 1 2; do
    [ "${4:-}" = handover ] && handing=(--hand-over "$out/rolling-$i.sock")
    start_instance "$1" "$port" "$out/rolling-old-$i.log" "${handing[@]}"
    pids[i]=$instance_pid
    echo "$instance_pid" >> "$out/rolling.pids"
  done
  $bin/loadgen --addr "127.0.0.1:$port" --protocol raw --clients "$2" --workers 3 \
    --source-addresses 8 --reconnect --hold-seconds "$3" --ramp-per-second 5000 \
    --server-pid-file "$out/rolling.pids" --ready-file "$out/ready-rolling" \
    --label "$1 cluster rolling" >> "$storms" &
  load=$!
  wait_for_file "$out/ready-rolling" 120 "the clients up"
  sleep 3
  for i in 0 1 2; do
    [ "${4:-}" = steady ] && break
    [ "${4:-}" = handover ] && handing=(--hand-over "$out/rolling-$i.sock")
    start_instance "$1" "$port" "$out/rolling-new-$i.log" "${handing[@]}"
    echo "$instance_pid" >> "$out/rolling.pids"
    [ "${4:-}" = handover ] || kill -TERM "${pids[i]}"
    wait "${pids[i]}" || true
    pids[i]=$instance_pid
    # The old instance's own account of the raw connections it handed over, for RESULTS.md.
    grep -h '"handed the raw connections over"' "$out/rolling-old-$i.log" \
      | sed "s/^/{\"label\":\"$1\",\"moved\":/; s/\$/}/" >> "$out/handovers.jsonl" || true
  done
  wait "$load"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
  restore_migrate
}

rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

# attack_scenario NAME SERVER FLOOD_ARGS...: 100 honest socket.io clients streaming at 100 ms
# ticks while one client floods new long-polling sessions for 10 s from 20 keep-alive
# connections (bench/src/bin/flood.rs, FLOOD_ARGS added). The server's RSS is read every 0.2 s
# from before the flood until 30 s after it; sessions open come from /status where the server
# has it. One line in attacks.jsonl: the flood's answers, RSS before, at its peak and at the
# end, sessions at the peak and at the end, and the honest clients' run.
attack_scenario() {
  local name=$1 kind=$2 load flood_pid peak before sessions_peak=null sessions_end=null
  shift 2
  start_server "$kind" 100
  rm -f "$out/ready-attack"
  $bin/loadgen --addr "$server_addr" --protocol socketio --clients 100 --hold-seconds 45 \
    --ramp-per-second 1000 --server-pid "$server_pid" --ready-file "$out/ready-attack" \
    --label "$name $kind interval=100ms" > "$out/attack-honest.json" &
  load=$!
  wait_for_file "$out/ready-attack" 60 "the honest clients up"
  sleep 2
  before=$(rss_kib "$server_pid")
  peak=$before
  $bin/flood --addr "$server_addr" --connections 20 --seconds 10 --max-requests 2000000 "$@" \
    > "$out/attack-flood.json" &
  flood_pid=$!
  local open
  for _ in $(seq 200); do
    peak=$(( $(rss_kib "$server_pid") > peak ? $(rss_kib "$server_pid") : peak ))
    if [ "$kind" = ours ]; then
      open=$(curl -s "http://$server_addr/status" | node -e '
        let t = ""; process.stdin.on("data", (c) => (t += c)).on("end", () => {
          const s = JSON.parse(t).sessions; console.log(s.joined + s.pending); });')
      [ "$sessions_peak" = null ] || [ "$open" -gt "$sessions_peak" ] && sessions_peak=$open
    fi
    sleep 0.2
  done
  wait "$flood_pid"
  [ "$kind" = ours ] && sessions_end=$open
  wait "$load"
  node -e '
    const fs = require("fs");
    const [flood, honest] = process.argv.slice(1, 3).map((p) => JSON.parse(fs.readFileSync(p)));
    const [name, server, before, peak, end, sessionsPeak, sessionsEnd, args] =
      process.argv.slice(3);
    console.log(JSON.stringify({ name, server, flood_args: args, flood, honest,
      rss_kib_before: +before, rss_kib_peak: +peak, rss_kib_end: +end,
      sessions_peak: JSON.parse(sessionsPeak), sessions_end: JSON.parse(sessionsEnd) }));' \
    "$out/attack-flood.json" "$out/attack-honest.json" "$name" "$kind" "$before" "$peak" \
    "$(rss_kib "$server_pid")" "$sessions_peak" "$sessions_end" "$*" >> "$attacks"
  stop_server
}

# The session flood: v4 and v2 sessions from one address; then from as many addresses as it
# likes (the per-address limit lifted), which only the session limit stops; and Node socket.io.
run_attacks() {
  attack_scenario session-flood ours
  attack_scenario session-flood ours --path "/socket.io/?EIO=3&transport=polling"
  server_extra=(--max-pending-per-peer 1000000)
  attack_scenario session-flood-many-addresses ours
  server_extra=()
  attack_scenario session-flood socketio
}
if [ "$attack_only" = 1 ]; then
  run_attacks
  node bench/attack.mjs "$attacks"
  echo "attack results in $attacks"
  exit 0
fi

if [ "$smoke" = 1 ]; then
  # Promise: stream-exactly-once
  scenario smoke ours raw 200 50 3
  # A fifth of the socket.io clients on long-polling, so that path of the kit runs too.
  loadgen_extra=(--polling-share 0.2)
  scenario smoke ours socketio 200 50 3
  loadgen_extra=()
  scenario smoke ours socketio-v2 200 50 3
  node -e '
    const text = require("fs").readFileSync(process.argv[1], "utf8");
    const runs = text.trim().split("\n").filter(Boolean).map(JSON.parse);
    if (runs.length !== 3) {
      console.log(`${runs.length} runs reported, of 3 (raw, socket.io, socket.io v2)`);
      process.exit(1);
    }
    for (const run of runs) {
      const clean = run.established === run.clients && run.sequence_gaps === 0 &&
        run.sequence_repeats === 0 && run.messages_in_hold > 0;
      console.log(`${run.label} ${run.protocol}: ${run.established}/${run.clients} connected, ` +
        `${run.messages_in_hold} messages, ${run.sequence_gaps} gaps, ` +
        `${run.sequence_repeats} repeats`);
      if (!clean) process.exit(1);
    }' "$runs"
  # The deploy storm, small: every client back through a SIGTERM, a kill -9, a SIGTERM under
  # socket activation and a hand-over, nothing missed. (At this size the new process is up
  # before the first client's back-off is over, so whether a reconnection would be refused
  # shows only in the full storm, and in tests/it/shutdown.rs.)
  # Promise: storm-all-back, durable-crash-no-repeat
  storm_scenario storm-smoke SIGTERM 200 12 ours
  storm_scenario storm-smoke SIGKILL 200 12 ours
  storm_scenario storm-smoke SIGTERM 200 12 activated
  storm_scenario storm-smoke none 200 12 handover
  node -e '
    const text = require("fs").readFileSync(process.argv[1], "utf8");
    const runs = text.trim().split("\n").filter(Boolean).map(JSON.parse);
    if (runs.length !== 8) {
      console.log(`${runs.length} storm runs reported, of 8 (raw and socket.io, four restarts)`);
      process.exit(1);
    }
    for (const run of runs) {
      const { storm } = run;
      // Health checks fail while no process holds the port; some must be answered, and the
      // listen queue never overflows. Every client is dropped once, except raw clients at a
      // hand-over, which move live: none of those is dropped or refused (and, dropped never,
      // their load generator makes no health checks).
      const moved = run.label.split(" ")[1] === "handover" && run.protocol === "raw";
      const dropped = moved ? 0 : run.clients;
      const refusedOk = run.label.split(" ")[1] !== "handover" || !storm.failures.refused;
      const clean = run.established === run.clients && storm.dropped_clients === dropped &&
        refusedOk &&
        storm.never_back === 0 && run.sequence_gaps === 0 && run.sequence_repeats === 0 &&
        storm.restarts === 0 && storm.listen_overflows === 0 &&
        (moved || storm.healthcheck_answers > 0);
      console.log(`${run.label} ${run.protocol}: ${storm.dropped_clients}/${run.clients} ` +
        `dropped, ${storm.never_back} never back, last back ${storm.back_ms_p100} ms, ` +
        `${run.sequence_gaps} gaps, ${run.sequence_repeats} repeats, ` +
        `${storm.listen_overflows} listen overflows, ${storm.healthcheck_answers} health ` +
        `checks answered, ${storm.failures.refused ?? 0} attempts refused`);
      if (!clean) process.exit(1);
    }' "$storms"
  exit 0
fi

# The deploy storms at the single-process limit, this server beside the Node peers, and the
# rolling deploy of a cluster.
run_storms() {
  storm_scenario storm-18900 SIGTERM 18900 25 ours
  storm_scenario storm-18900 SIGTERM 18900 25 activated
  storm_scenario storm-18900 none 18900 25 handover
  storm_scenario storm-18900-pace3s none 18900 25 paced
  storm_scenario storm-18900 SIGKILL 18900 25 ours
  storm_scenario storm-18900 SIGTERM 18900 25 ws socketio
  rolling_scenario rolling-50000 50000 40
  instance_extra=("${PACED[@]}")
  rolling_scenario rolling-50000-pace3s 50000 40
  instance_extra=()
  rolling_scenario rolling-50000-handover 50000 40 handover
}
connects="$out/connects.jsonl"
: > "$connects"
# connect_scenario SERVER: the SERVER binary at 10 ms ticks, and 5,000 raw clients ramped at
# 1,000 a second and held 10 s: how long a new client waits for its handshake while delivery
# keeps the cores busy.
connect_scenario() {
  start_binary "$1" connect --no-state --interval-ms 10
  $bin/loadgen --addr "$binary_addr" --protocol raw --clients 5000 --hold-seconds 10 \
    --ramp-per-second 1000 --server-pid "$binary_pid" --label "$1" >> "$connects"
  stop_binary
}
if [ "$connect_only" = 1 ]; then
  shift
  alternate connect_scenario "$@"
  node bench/connects.mjs "$connects"
  exit 0
fi
if [ "$replay_only" = 1 ]; then
  shift
  alternate replay_scenario "$@"
  node bench/replays.mjs "$replays"
  exit 0
fi
# hot_path_scenario SERVER: the capacity and fan-out scenarios of this server, on SERVER.
hot_path_scenario() {
  server_bin=$1
  scenario "capacity-19000 $1" ours raw 19000 1000 10
  scenario "capacity-19000 $1" ours socketio 19000 1000 10
  scenario "fanout-5000 $1" ours raw 5000 50 10
  scenario "fanout-5000 $1" ours socketio 5000 50 10
  server_bin="$bin/integers"
}
# sigterm_storm SERVER: the SIGTERM storm of this server, on SERVER.
sigterm_storm() {
  server_bin=$1
  storm_scenario "storm-18900 $1" SIGTERM 18900 25 ours
  server_bin="$bin/integers"
}
if [ "$hot_path_only" = 1 ]; then
  shift
  [ $# -gt 0 ] || { echo "--hot-path needs server binaries to compare" >&2; exit 2; }
  alternate hot_path_scenario "$@"
  cat "$runs"
  exit 0
fi
# compare_restarts SIGNAL KIND: the SIGTERM storm of this server binding its port beside the
# same restart as KIND does it (SIGNAL its signal), twice each, alternated; prints the section.
compare_restarts() {
  for _ in 1 2; do
    storm_scenario storm-18900 SIGTERM 18900 25 ours
    storm_scenario storm-18900 "$1" 18900 25 "$2"
  done
  node bench/restarts.mjs "$storms" "$out/handovers.jsonl"
  exit 0
}
[ "$activation_only" = 0 ] || compare_restarts SIGTERM activated
[ "$hand_over_only" = 0 ] || compare_restarts none handover
# The paced drain: the restart by hand-over and the rolling deploy, each unpaced and paced,
# and the restart's steady hold, twice each, alternated; prints the section.
if [ "$paced_only" = 1 ]; then
  for _ in 1 2; do
    storm_scenario storm-18900 none 18900 25 handover
    storm_scenario storm-18900-pace3s none 18900 25 paced
    PACED=("${PACED_5S[@]}")
    storm_scenario storm-18900-pace5s none 18900 25 paced
    PACED=("${PACED_3S[@]}")
    storm_scenario storm-18900 hold 18900 25 ours
  done
  for _ in 1 2; do
    rolling_scenario rolling-50000 50000 40
    instance_extra=("${PACED[@]}")
    rolling_scenario rolling-50000-pace3s 50000 40
    instance_extra=()
  done
  node bench/paced.mjs "$storms"
  exit 0
fi
# The paced hand-over with the servers and the load generators on a core each: how much of
# the socket.io reconnect's connect tail is the two sharing both cores. Prints the rows.
if [ "$pinned_only" = 1 ]; then
  PACED=("${PACED_5S[@]}")
  for _ in 1 2; do
    storm_scenario storm-18900-pace5s none 18900 25 paced
    server_cpu=(taskset -c 0)
    load_cpu=(taskset -c 1)
    storm_scenario storm-18900-pace5s-pinned none 18900 25 paced
    server_cpu=()
    load_cpu=()
  done
  node bench/paced.mjs "$storms"
  exit 0
fi
# paced_hand_over SERVER: the restart by hand-over on SERVER, all at once and paced over 5 s.
paced_hand_over() {
  server_bin=$1
  storm_scenario "storm-18900 $1" none 18900 25 handover
  PACED=("${PACED_5S[@]}")
  storm_scenario "storm-18900-pace5s $1" none 18900 25 paced
  PACED=("${PACED_3S[@]}")
  server_bin="$bin/integers"
}
if [ "$paced_on_only" = 1 ]; then
  shift
  [ $# -gt 0 ] || { echo "--paced-on needs server binaries to compare" >&2; exit 2; }
  alternate paced_hand_over "$@"
  node bench/paced.mjs "$storms"
  exit 0
fi
# The rolling deploy of a cluster four ways: SIGTERM, SIGTERM with a paced drain, by hand-over,
# and SIGTERM with tcp_migrate_req, beside its steady hold, twice each, alternated; prints the
# section.
if [ "$rolling_only" = 1 ]; then
  for _ in 1 2; do
    rolling_scenario rolling-50000 50000 40
    instance_extra=("${PACED[@]}")
    rolling_scenario rolling-50000-pace3s 50000 40
    instance_extra=()
    rolling_scenario rolling-50000-handover 50000 40 handover
    rolling_scenario rolling-50000-steady 50000 40 steady
    rolling_scenario rolling-50000-migrate 50000 40 migrate
  done
  node bench/rolling.mjs "$storms" "$out/handovers.jsonl"
  exit 0
fi
if [ "$storm_only" = 1 ] && [ $# -gt 1 ]; then
  shift
  alternate sigterm_storm "$@"
  cat "$storms"
  exit 0
fi
if [ "$storm_only" = 1 ]; then
  run_storms
  echo "storm results in $storms"
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
run_storms
run_attacks
replay_scenario "$bin/integers"
connect_scenario "$bin/integers"
node bench/report.mjs "$out" bench/RESULTS.md bench/chart.svg
echo "wrote bench/RESULTS.md and bench/chart.svg (raw results in $out)"
