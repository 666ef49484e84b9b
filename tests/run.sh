#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need first: Debian's chromium (for
# the demo-page test), redis-server, redis-sentinel and nginx (the cluster tests start their own,
# on random loopback ports), openssl (the TLS tests make their certificates), strace (a test
# reads the state file's system calls), systemd (for systemd-socket-activate, which starts the
# server as a socket unit does), the npm packages in tests/node, and cargo-fuzz.
# Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v systemd-socket-activate >/dev/null 2>&1 || missing+=(systemd)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # The tests start their own Redis, Sentinels and nginx: keep the packages from starting
  # theirs (which would fail where port 80 is taken) with Debian's policy-rc.d, unless one is
  # in place.
  policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ "$policy_added" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
export PATH="$PATH:/usr/sbin"

step "installing the Node test peers (socket.io-client 4 and 2, ws, playwright-core, prettier)"
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

step "cargo fmt --check, and prettier --check over the JavaScript, CSS and HTML"
cargo fmt --all -- --check
tests/node/node_modules/.bin/prettier --check "tests/node/*.mjs" "bench/*.mjs" \
  "bench/peers/*.mjs" "client-demo/*.js" "client-demo/*.css" "client-demo/*.html"

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the server without the demo page (no default features) builds without npm"
no_npm=$(mktemp -d)
printf '#!/bin/sh\necho "npm was called" >&2\nexit 1\n' > "$no_npm/npm"
chmod +x "$no_npm/npm"
# Every target, as above, so that the dependencies' features match and only this crate is checked.
PATH="$no_npm:$PATH" cargo clippy --workspace --all-targets --locked --no-default-features \
  -- -D warnings
rm -r "$no_npm"

step "cargo test (unit and in-process integration tests, and the benchmark kit's own)"
cargo test --workspace --locked

# Promise: bad-input-answers, raw-paths, raw-even
step "fuzzing the request parsing for 20 s (cargo fuzz)"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# libFuzzer's instrumentation flags are unstable options; the one stable toolchain here allows
# them so. No AddressSanitizer (`-s none`): the parsing fuzzed is safe Rust, where a fault shows
# as the panic libFuzzer reports, and the sanitized build would cost CI more than the run. An
# unoptimised build (`--dev`), because CI's budget goes further on its shorter build than on
# the optimised build's faster inputs; it runs under the same assertions and overflow checks.
RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --dev request_parsing -- -max_total_time=20

step "benchmark kit smoke: 200 clients per protocol, checking only that every sequence is whole"
bash bench/run.sh --smoke

step "end-to-end tests with real peers" \
  "(official socket.io-client, ws, headless Chromium, redis-server, redis-sentinel, nginx)"
# The attack tests flood the server with the benchmark kit's `flood`. A test that hangs fails
# after 3 minutes (Node's runner would otherwise wait for ever); the longest takes under half
# a minute.
cargo build --locked -p integers -p integers-bench
(cd tests/node && INTEGERS_BIN="$OLDPWD/target/debug/integers" \
  FLOOD_BIN="$OLDPWD/target/debug/flood" node --test --test-concurrency=1 --test-timeout=180000)
