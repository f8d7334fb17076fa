#!/usr/bin/env bash
# The attack-strength study (docs/results/attack-study.md): one `atop eval`
# per attack configuration on VALIDATION data (128 points carved from the
# training set, 4 final draws), so each configuration's wall time is its
# own; then scripts/attack-study-table.py tabulates accuracy against cost.
# Every configuration is L-inf 0.1 but StAdv's (flow bound 0.05) and l2-step's (L2 1.5).
#
#   scripts/attack-study.sh OUT_DIR ARTIFACT[,ARTIFACT...] GRID...
#
# ARTIFACT: a defense artifact, a classifier, or a classifier and a purifier
# separated by a comma (a pre-trained purifier in front of that classifier).
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

# name|attack table (without mode, which every row shares)
linf='norm = "linf", eps = 0.1'
configs() {
  case $1 in
    pgd-step) # PGD-50, EOT 5, CE, random start: the step size
      for s in 0.0025 0.005 0.01 0.025 0.05; do
        echo "pgd50-eot5-step$s|attack = \"pgd\", $linf, steps = 50, eot = 5, step_size = $s"
      done ;;
    pgd-step-core) # the step sizes the study must cover (eps/40, eps/10, eps/4), for costly defenses
      for s in 0.0025 0.01 0.025; do
        echo "pgd50-eot5-step$s|attack = \"pgd\", $linf, steps = 50, eot = 5, step_size = $s"
      done ;;
    pgd-loss-start) # the same at eps/10: margin loss, clean start
      echo "pgd50-eot5-step0.01-margin|attack = \"pgd\", $linf, steps = 50, eot = 5, step_size = 0.01, loss = \"margin\""
      echo "pgd50-eot5-step0.01-clean|attack = \"pgd\", $linf, steps = 50, eot = 5, step_size = 0.01, random_start = false" ;;
    pgd-eot) # EOT at eps/10
      for e in 1 20; do
        echo "pgd50-eot$e-step0.01|attack = \"pgd\", $linf, steps = 50, eot = $e, step_size = 0.01"
      done ;;
    pgd-steps) # more iterations, at the default and at eps/10 steps
      echo "pgd200-eot5-default|attack = \"pgd\", $linf, steps = 200, eot = 5"
      echo "pgd200-eot5-step0.01|attack = \"pgd\", $linf, steps = 200, eot = 5, step_size = 0.01" ;;
    eot50) # EOT 50 at eps/10 (the first half of `long`)
      echo "pgd50-eot50-step0.01|attack = \"pgd\", $linf, steps = 50, eot = 50, step_size = 0.01" ;;
    long) # the expensive corners: EOT 50, and 200 steps with EOT 20
      echo "pgd50-eot50-step0.01|attack = \"pgd\", $linf, steps = 50, eot = 50, step_size = 0.01"
      echo "pgd200-eot20-step0.01|attack = \"pgd\", $linf, steps = 200, eot = 20, step_size = 0.01" ;;
    longer) # past the floor: 500 steps with EOT 20
      echo "pgd500-eot20-step0.01|attack = \"pgd\", $linf, steps = 500, eot = 20, step_size = 0.01" ;;
    apgd) # APGD-CE / DLR with EOT, official and best-loss iterates
      for sel in first-fooled best-loss; do
        echo "apgd-ce100-eot5-$sel|attack = \"apgd-ce\", $linf, steps = 100, eot = 5, selection = \"$sel\""
        echo "apgd-dlr100-eot5-$sel|attack = \"apgd-dlr\", $linf, steps = 100, eot = 5, selection = \"$sel\""
      done ;;
    autoattack) # AutoAttack rand, official and best-loss
      for sel in first-fooled best-loss; do
        echo "aa-rand-eot5-$sel|attack = \"autoattack\", version = \"rand\", $linf, eot = 5, selection = \"$sel\""
      done ;;
    l2-step) # L2 eps 1.5: PGD-50, EOT 5, over the step (default 2.5 eps / 50 = 0.075)
      for s in 0.075 0.15 0.3 0.6; do
        echo "l2-pgd50-eot5-step$s|attack = \"pgd\", norm = \"l2\", eps = 1.5, steps = 50, eot = 5, step_size = $s"
      done ;;
    stadv-step) # StAdv (flow bound 0.05), 100 Adam steps, EOT 5: the step size (0.01 by default)
      for s in 0.0025 0.005 0.01 0.025 0.05; do
        echo "stadv100-eot5-step$s|attack = \"stadv\", norm = \"linf\", eps = 0.05, steps = 100, eot = 5, step_size = $s"
      done ;;
    stadv-more) # StAdv with more iterations and EOT, at the default step
      echo "stadv300-eot5-step0.01|attack = \"stadv\", norm = \"linf\", eps = 0.05, steps = 300, eot = 5, step_size = 0.01"
      echo "stadv100-eot20-step0.01|attack = \"stadv\", norm = \"linf\", eps = 0.05, steps = 100, eot = 20, step_size = 0.01" ;;
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
  { mode = "full", $table },
]
TOML
    log "$name"
    artifacts=()
    IFS=',' read -r -a parts <<<"$artifact"
    for a in "${parts[@]}"; do artifacts+=(--artifact "$a"); done
    "$atop" eval "${flags[@]}" --config configs/fmnist.toml --protocol "$dir/protocol.toml" \
      --out "$dir" "${artifacts[@]}" --resume
  done < <(configs "$grid")
done
log "finished: $*"
