#!/usr/bin/env bash
# Runs each coverage-guided fuzz target (fuzz/, cargo-fuzz + libFuzzer) for
# a bounded time and prints, per target, the executions run and the crashes
# found. Needs a nightly toolchain; installs cargo-fuzz when missing.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#
# The seed corpus is fuzz/seeds/<target>/ (committed); what a run finds new
# goes to fuzz/corpus/<target>/ (ignored). A crash fails the script and
# leaves its input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain here; the property tests carry the invariants" >&2
  exit 2
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz >&2 || cargo install cargo-fuzz >&2
fi
# Sanitizer builds go to their own target directory (outside the clone, so
# repeated runs on one machine build incrementally).
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/atop-rs/target}-fuzz"
unset CARGO_TARGET_DIR
cargo +nightly fuzz build --fuzz-dir fuzz --target-dir "$target_dir" >&2
status=0
for target in artifact permalink idx cifar; do
  mkdir -p "fuzz/corpus/$target"
  log=$(mktemp)
  if cargo +nightly fuzz run --fuzz-dir fuzz --target-dir "$target_dir" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    crashes=0
  else
    crashes=1
    status=1
    tail -40 "$log" >&2
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz $target: ${seconds}s, $runs executions, $crashes crashes"
  rm -f "$log"
done
exit $status
