#!/usr/bin/env bash
# Mutation run of the core modules: each mutant of stream/ (parity, feed, resume), fanout,
# source/ (the clock, the local ticker, the state file), and the edge's request reading,
# admission and session counts is built and run against the unit tests and the integration tests that drive those
# modules (scope and exclusions: .cargo/mutants.toml).
# Not part of CI. The outcome lands in mutants.out/ (caught.txt, missed.txt, timeout.txt,
# unviable.txt).
# Usage: bash tests/mutants.sh [more cargo-mutants options, e.g. --file src/stream/feed.rs]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-mutants >/dev/null 2>&1; then
  cargo install cargo-mutants --locked --version 27.1.0
fi
# One mutant at a time: the integration tests hold timing bounds (a drain, a lapse) that a
# second build competing for two cores could stretch.
cargo mutants --jobs 1 "$@"
