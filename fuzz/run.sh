#!/usr/bin/env bash
# Runs the coverage-guided targets on the stable toolchain (no sanitizer),
# each for RUNS executions (default 10^6), seeded from ../tests/corpus and
# ../tests/fixtures. New inputs go to corpus/<target>/, crashes to
# artifacts/<target>/ (both ignored by git).
#
#   fuzz/run.sh                      # every target, 10^6 runs each
#   RUNS=10000 fuzz/run.sh http      # one target, fewer runs
#
# Needs: cargo install cargo-fuzz (from crates.io) and a C++ compiler
# (libfuzzer-sys builds libFuzzer with it).
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-1000000}
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=(message_decoder file_data_decoder http sanitizer metadata)
fi
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cargo +stable fuzz run -s none "$t" "corpus/$t" ../tests/corpus ../tests/fixtures -- \
    -runs="$RUNS" -print_final_stats=1
done
