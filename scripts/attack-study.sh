#!/usr/bin/env bash
# The attack-strength study (docs/results/attack-study.md): one `atop eval`
# per attack configuration on VALIDATION data (128 points carved from the
# training set, 4 final draws), so each configuration's wall time is its
# own; then scripts/attack-study-table.py tabulates accuracy against cost.
#
#   scripts/attack-study.sh OUT_DIR ARTIFACT GRID...
#
# GRID names a set of configurations (below); a configuration whose report
# exists is skipped, so the same command resumes an interrupted study.
# ATOP and ATOP_FLAGS choose the binary and backend, as in budget-study.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/attack-study.sh OUT_DIR ARTIFACT GRID...}
artifact=${2:?usage: scripts/attack-study.sh OUT_DIR ARTIFACT GRID...}
shift 2
atop=${ATOP:-${CARGO_TARGET_DIR:-target}/debug/atop}
read -r -a flags <<<"${ATOP_FLAGS:-}"
eps=0.1

# name|attack table (without eps/norm/mode, which every row shares)
configs() {
  case $1 in
    pgd-step) # PGD-50, EOT 5, CE, random start: the step size
      for s in 0.0025 0.005 0.01 0.025 0.05; do
        echo "pgd50-eot5-step$s|attack = \"pgd\", steps = 50, eot = 5, step_size = $s"
      done ;;
    pgd-loss-start) # the same at eps/10: margin loss, clean start
      echo "pgd50-eot5-step0.01-margin|attack = \"pgd\", steps = 50, eot = 5, step_size = 0.01, loss = \"margin\""
      echo "pgd50-eot5-step0.01-clean|attack = \"pgd\", steps = 50, eot = 5, step_size = 0.01, random_start = false" ;;
    pgd-eot) # EOT at eps/10
      for e in 1 20; do
        echo "pgd50-eot$e-step0.01|attack = \"pgd\", steps = 50, eot = $e, step_size = 0.01"
      done ;;
    pgd-steps) # more iterations, at the default and at eps/10 steps
      echo "pgd200-eot5-default|attack = \"pgd\", steps = 200, eot = 5"
      echo "pgd200-eot5-step0.01|attack = \"pgd\", steps = 200, eot = 5, step_size = 0.01" ;;
    long) # the expensive corners: EOT 50, and 200 steps with EOT 20
      echo "pgd50-eot50-step0.01|attack = \"pgd\", steps = 50, eot = 50, step_size = 0.01"
      echo "pgd200-eot20-step0.01|attack = \"pgd\", steps = 200, eot = 20, step_size = 0.01" ;;
    apgd) # APGD-CE / DLR with EOT, official and best-loss iterates
      for sel in first-fooled best-loss; do
        echo "apgd-ce100-eot5-$sel|attack = \"apgd-ce\", steps = 100, eot = 5, selection = \"$sel\""
        echo "apgd-dlr100-eot5-$sel|attack = \"apgd-dlr\", steps = 100, eot = 5, selection = \"$sel\""
      done ;;
    autoattack) # AutoAttack rand, official and best-loss
      for sel in first-fooled best-loss; do
        echo "aa-rand-eot5-$sel|attack = \"autoattack\", version = \"rand\", eot = 5, selection = \"$sel\""
      done ;;
    *) echo "unknown grid $1" >&2; return 1 ;;
  esac
}

log() { echo "[attack-study $(date +%H:%M:%S)] $*"; }
mkdir -p "$out"
for grid in "$@"; do
  configs "$grid" >/dev/null
  while IFS='|' read -r name table; do
    dir=$out/$name
    [ -f "$dir/report.json" ] && { log "$name: done"; continue; }
    mkdir -p "$dir"
    cat >"$dir/protocol.toml" <<TOML
protocol = "attack study: $name (validation, 128 points, 4 draws)"
split = "validation"
subset = 128
subset_seed = 4242
batch_size = 64
score_draws = 4
tuning_probe = { points = 0 }
attacks = [
  { norm = "linf", eps = $eps, mode = "full", $table },
]
TOML
    log "$name"
    "$atop" eval "${flags[@]}" --config configs/fmnist.toml --protocol "$dir/protocol.toml" \
      --out "$dir" --artifact "$artifact" --resume
  done < <(configs "$grid")
done
log "finished: $*"
