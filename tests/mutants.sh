#!/usr/bin/env bash
# Mutation run: each mutant of the modules in .cargo/mutants.toml (every module the Rust tests
# drive, and the reasons for those left out) is built and run against the unit tests and the
# integration tests. Not part of CI: each mutant builds the crate and runs every Rust test, so a
# whole run takes many hours; run it in shards.
#
# Usage:
#   bash tests/mutants.sh --list          the mutants, by file (no build)
#   bash tests/mutants.sh --shard 3/16    the third sixteenth of them
#   bash tests/mutants.sh                 all of them, one after the other
#   bash tests/mutants.sh --re 'src/raw/writer\.rs'   the mutants of one file (--file would
#                                     add to the configured scope rather than narrow it)
#   bash tests/mutants.sh --quick src/raw/leaving.rs hand_over shutdown
#                                     a first pass: one file's mutants against the unit tests
#                                     and the integration tests whose names hold one of the
#                                     words given. A few times faster; a mutant it misses is
#                                     missed only once the whole suite misses it too (--re).
# Other cargo-mutants options pass through. The outcome lands in mutants.out/ (caught.txt,
# missed.txt, timeout.txt, unviable.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-mutants >/dev/null 2>&1; then
  cargo install cargo-mutants --locked --version 27.1.0
fi
if [ "${1:-}" = "--list" ]; then
  shift
  cargo mutants --list "$@" | sed -E 's/:.*//' | sort | uniq -c
  exit 0
fi
if [ "${1:-}" = "--quick" ]; then
  file=$2
  shift 2
  # Without the configuration, whose test arguments would follow these; its one excluded
  # mutant is excluded here too.
  exec cargo mutants --no-config --profile mutants --jobs 1 --timeout 240 -f "$file" \
    --exclude-re 'Turn::served_one' -- --lib --test it -- "$@"
fi
# One mutant at a time: the integration tests hold timing bounds (a drain, a lapse) that a
# second build competing for two cores could stretch.
cargo mutants --jobs 1 "$@"
