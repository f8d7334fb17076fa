#!/usr/bin/env bash
# Per-op profile of each `atop bench` row group: perf samples each group's
# run with call graphs, and scripts/profile-buckets.py sorts the samples by
# the tensor op they were in (docs/results/performance-profile.md).
#
#   scripts/profile-rows.sh ATOP OUT [atop bench flags...]
#
# ATOP: the trainer binary (a flex or a LibTorch build; pass --device cpu
# for LibTorch). OUT/<group>.md gets each group's table, OUT/<group>.data
# the raw samples. Groups: classifier, pretrain, forward, finetune, pgd.
# Needs perf (linux-perf) and permission to record (root, or
# kernel.perf_event_paranoid <= 1). PERF_SCRIPT_FLAGS goes to `perf script`:
# `--no-inline` for a LibTorch build, whose libraries take perf's addr2line
# hours to resolve inline frames for (ATen's op frames are not inlined).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,16p' "$0"; exit 2; }
atop=$1
out=$2
shift 2
command -v perf >/dev/null || { echo "profile-rows: perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
[ -x "$atop" ] || { echo "profile-rows: no atop binary at $atop" >&2; exit 2; }
mkdir -p "$out"
for group in classifier pretrain forward finetune pgd; do
  perf record -q -F 199 --call-graph dwarf,16384 -o "$out/$group.data" \
    "$atop" bench --only "$group" --repeats 5 "$@" 2> "$out/$group.log"
  {
    echo "### $group"
    echo
    grep -E "median" "$out/$group.log" | sed 's/^/    /'
    echo
    # shellcheck disable=SC2086
    perf script ${PERF_SCRIPT_FLAGS:-} -i "$out/$group.data" 2>/dev/null | python3 scripts/profile-buckets.py
    echo
  } > "$out/$group.md"
  cat "$out/$group.md"
done
