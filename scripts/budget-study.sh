#!/usr/bin/env bash
# The AToP fine-tuning budget study (docs/results/atop-budget-study.md): long
# AToP runs from the shipped conv AE against a frozen classifier, each
# writing its defense after every epoch, then every kept epoch scored on
# VALIDATION data with configs/protocols/fmnist-budget-validation.toml.
#
#   scripts/budget-study.sh OUT_DIR STEP...
#
# Steps run in the order given; each resumes where it stopped and is skipped
# once its result exists, so the same command continues an interrupted study:
#   classifier       the quickstart's classifier (configs/fmnist.toml)
#   at-classifier    the PGD-AT baseline (configs/fmnist-at.toml)
#   trades-classifier  the TRADES baseline (the same, adversarial = "trades")
#   RUN              an AToP run named below (OUT_DIR/RUN/)
#   eval-pretrained:C  score the shipped pre-trained AE, not fine-tuned, in front
#                    of classifier C (classifier, at-classifier or trades-classifier): the budget's zero
#   eval:RUN         score RUN's epoch defenses (the first, every EVAL_EVERY-th
#                    and, once RUN has finished, the last), while RUN runs too
#
# ATOP (default: the dev build) and ATOP_FLAGS (e.g. "--device cpu" with
# the LibTorch build) choose the binary and backend.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/budget-study.sh OUT_DIR STEP...}
shift
atop=${ATOP:-${CARGO_TARGET_DIR:-target}/debug/atop}
read -r -a flags <<<"${ATOP_FLAGS:-}"
every=${EVAL_EVERY:-4}
purifier=models/fmnist-ae-purifier.safetensors
# 250 steps of 32 images per epoch; the epoch count sets the budget.
base=(--set finetune.max_steps_per_epoch=250 --set finetune.keep_epoch_artifacts=true)

# The AToP runs: classifier artifact, then --set overrides of configs/fmnist.toml.
run_settings() {
  case $1 in
    const-10k) echo "classifier --set finetune.epochs=40" ;;
    cosine-2500) echo "classifier --set finetune.epochs=10 --set finetune.lr_schedule=cosine --set finetune.warmup_steps=250" ;;
    cosine-10k) echo "classifier --set finetune.epochs=40 --set finetune.lr_schedule=cosine --set finetune.warmup_steps=250" ;;
    pgd10-2500) echo "classifier --set finetune.epochs=10 --set finetune.attack_steps=10" ;;
    lambda1-2500) echo "classifier --set finetune.epochs=10 --set finetune.lambda=1.0" ;;
    lr1e-4-2500) echo "classifier --set finetune.epochs=10 --set finetune.lr=1e-4" ;;
    hybrid-at-2500) echo "at-classifier --set finetune.epochs=10" ;;
    hybrid-at-10k) echo "at-classifier --set finetune.epochs=40" ;;
    hybrid-trades-2500) echo "trades-classifier --set finetune.epochs=10" ;;
    *) echo "unknown run $1" >&2; return 1 ;;
  esac
}

log() { echo "[budget-study $(date +%H:%M:%S)] $*"; }

for step in "$@"; do
  case $step in
    classifier)
      [ -f "$out/classifier/classifier.safetensors" ] && { log "classifier: done"; continue; }
      log "classifier"
      "$atop" train-classifier "${flags[@]}" --config configs/fmnist.toml --out "$out/classifier" --resume ;;
    at-classifier)
      [ -f "$out/at-classifier/classifier.safetensors" ] && { log "at-classifier: done"; continue; }
      log "at-classifier"
      "$atop" train-classifier "${flags[@]}" --config configs/fmnist-at.toml --out "$out/at-classifier" --resume ;;
    trades-classifier)
      [ -f "$out/trades-classifier/classifier.safetensors" ] && { log "trades-classifier: done"; continue; }
      log "trades-classifier"
      "$atop" train-classifier "${flags[@]}" --config configs/fmnist-at.toml \
        --set train_classifier.adversarial=trades --out "$out/trades-classifier" --resume ;;
    eval-pretrained:*)
      c=${step#eval-pretrained:}
      dir=$out/pretrained-$c
      [ -f "$dir/report.json" ] && { log "$step: done"; continue; }
      log "$step"
      "$atop" eval "${flags[@]}" --config configs/fmnist.toml \
        --protocol configs/protocols/fmnist-budget-validation.toml --out "$dir" \
        --artifact "$out/$c/classifier.safetensors" --artifact "$purifier" --resume ;;
    eval:*)
      # Every EVAL_EVERY-th epoch, the first, and the last once the run has
      # finished; epochs already written are scored while the run goes on.
      run=${step#eval:}
      dir=$out/$run
      [ -d "$dir/epochs" ] || { log "eval:$run: no epochs yet, skipped"; continue; }
      mapfile -t epochs < <(ls "$dir/epochs" | sort)
      last=-1
      [ -f "$dir/atop.safetensors" ] && last=$((${#epochs[@]} - 1))
      for i in "${!epochs[@]}"; do
        if (( (i + 1) % every != 0 && i != 0 && i != last )); then continue; fi
        name=${epochs[$i]%.safetensors}
        [ -f "$dir/eval/$name/report.json" ] && continue
        log "eval:$run $name"
        "$atop" eval "${flags[@]}" --config configs/fmnist.toml \
          --protocol configs/protocols/fmnist-budget-validation.toml \
          --out "$dir/eval/$name" --artifact "$dir/epochs/$name.safetensors" --resume
      done ;;
    *)
      read -r -a settings <<<"$(run_settings "$step")"
      classifier=$out/${settings[0]}/classifier.safetensors
      [ -f "$out/$step/atop.safetensors" ] && { log "$step: done"; continue; }
      [ -f "$classifier" ] || { log "$step: $classifier is missing (run ${settings[0]} first)"; exit 1; }
      log "$step"
      "$atop" finetune "${flags[@]}" --config configs/fmnist.toml --out "$out/$step" --resume \
        --classifier "$classifier" --purifier "$purifier" "${base[@]}" "${settings[@]:1}" ;;
  esac
done
log "finished: $*"
