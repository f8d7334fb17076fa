#!/usr/bin/env bash
# One shard of an evaluation: `atop eval --shard I/N` into OUT/shard-I,
# resumable (a preempted array task that is requeued continues).
#
#   scripts/slurm/eval-shard.sh I N OUT [atop eval arguments...]
#
# ATOP names the binary (default: atop on PATH). Run by eval-array.sbatch on
# a cluster, or by hand (or a test) as a local process: the same command.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 I N OUT [atop eval arguments...]" >&2; exit 2; }
i=$1 n=$2 out=$3
shift 3
exec "${ATOP:-atop}" eval --shard "$i/$n" --out "$out/shard-$i" --resume "$@"
