#!/usr/bin/env bash
# An evaluation on a Slurm cluster: an array of N shard jobs, then a merge
# job that depends on all of them. Run from the repository root.
#
#   scripts/slurm/submit-eval.sh N OUT atop-eval-arguments...
#   e.g. scripts/slurm/submit-eval.sh 8 runs/paper --config configs/fmnist.toml \
#          --protocol configs/protocols/fmnist-paper.toml --artifact A.safetensors --device cuda:0
#
# The eval arguments travel as one environment variable, split on spaces:
# paths with spaces are not supported. ATOP names the binary on the nodes.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 N OUT atop-eval-arguments..." >&2; exit 2; }
n=$1 out=$2
shift 2
mkdir -p "$out"
export ATOP_SHARDS=$n ATOP_OUT=$out ATOP_EVAL_ARGS="$*"
array=$(sbatch --parsable --array=0-$((n - 1)) --export=ALL scripts/slurm/eval-array.sbatch)
merge=$(sbatch --parsable --dependency="afterok:${array%%;*}" --export=ALL scripts/slurm/eval-merge.sbatch)
echo "shards: job $array (array 0-$((n - 1))); merge: job $merge -> $out/merged"
