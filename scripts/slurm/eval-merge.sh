#!/usr/bin/env bash
# Merges the N shards of scripts/slurm/eval-shard.sh into OUT/merged: the
# report one unsharded `atop eval` would have written.
#
#   scripts/slurm/eval-merge.sh N OUT
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 N OUT" >&2; exit 2; }
n=$1 out=$2
shards=()
for ((i = 0; i < n; i++)); do shards+=("$out/shard-$i"); done
exec "${ATOP:-atop}" eval merge --out "$out/merged" "${shards[@]}"
