#!/usr/bin/env bash
# The recipe study on Fashion-MNIST: for each named variant
# of the study's base recipe, pre-train a purifier, AToP-fine-tune it against
# one frozen classifier, and evaluate both on the VALIDATION split
# (configs/protocols/fmnist-recipe-validation.toml), never the test set.
#
#   scripts/recipe-study.sh CLASSIFIER OUT [VARIANT...]
#
# CLASSIFIER: a classifier artifact (e.g. runs/quickstart/classifier.safetensors).
# OUT/VARIANT/ holds each variant's artifacts and eval/report.json; a variant
# whose report exists is skipped, and a killed one resumes (--resume), so the
# study can be stopped and restarted. Extra `atop` flags (e.g. --device cpu
# for a LibTorch build) go in ATOP_FLAGS; ATOP picks the binary; STUDY_SET
# adds `key=value` overrides to every variant and STUDY_PROTOCOL replaces the
# protocol (both for smoke runs: a study's figures use neither). With no
# VARIANT, all are run. At the end the table of every variant, including the
# ones that lost, is printed (scripts/comparison-table.py).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,19p' "$0"; exit 2; }
classifier=$1
out=$2
shift 2
atop=${ATOP:-target/debug/atop}
flags=${ATOP_FLAGS:-}
protocol=${STUDY_PROTOCOL:-configs/protocols/fmnist-recipe-validation.toml}
[ -f "$classifier" ] || { echo "recipe-study: no classifier artifact $classifier" >&2; exit 2; }
[ -x "$atop" ] || { echo "recipe-study: no atop binary at $atop (cargo build -p atop-trainer, or set ATOP)" >&2; exit 2; }

# Every variant changes one thing from the study's base: the quickstart's
# classifier and transform with the GAN inpainter and the paper's AToP (FGSM
# on the classifier alone, λ 0.1), pinned here so that the quickstart's own
# recipe (since chosen by this study: the conv AE, PGD-5 through the
# defense) does not move the base.
base=('purifier={kind="gan",image_channels=1,cnum=16}'
  finetune.attack=fgsm finetune.attack_through=classifier finetune.attack_steps=1 finetune.lambda=0.1)

# name|--set overrides (space-separated key=value), shared by pretrain and
# finetune, applied after the base's (the later value wins).
variants=(
  "base|"
  "noise0.1|transform.noise_sigma=0.1"
  "missing0.1|transform.missing_rate=0.1"
  "mild|transform.noise_sigma=0.1 transform.missing_rate=0.1"
  "cell2|transform.grid=14"
  "ae|purifier={kind=\"ae\",image_channels=1,width=16}"
  "ae-budget5x|purifier={kind=\"ae\",image_channels=1,width=16} pretrain.max_steps_per_epoch=600"
  "cnum32|purifier.cnum=32 discriminator.cnum=32"
  "budget4x|pretrain.max_steps_per_epoch=480"
  "lambda0.5|finetune.lambda=0.5"
  "defense-fgsm|finetune.attack_through=defense"
  "defense-pgd|finetune.attack_through=defense finetune.attack=pgd finetune.attack_steps=5"
)

selected=("$@")
wanted() {
  [ ${#selected[@]} -eq 0 ] && return 0
  local v
  for v in "${selected[@]}"; do [ "$v" = "$1" ] && return 0; done
  return 1
}

for entry in "${variants[@]}"; do
  name=${entry%%|*}
  overrides=${entry#*|}
  wanted "$name" || continue
  dir=$out/$name
  if [ -f "$dir/eval/report.json" ]; then
    echo "== $name: done ($dir/eval/report.json)"
    continue
  fi
  mkdir -p "$dir"
  sets=()
  for o in "${base[@]}" $overrides ${STUDY_SET:-}; do sets+=(--set "$o"); done
  echo "== $name: ${overrides:-the base recipe}"
  # shellcheck disable=SC2086
  "$atop" pretrain $flags --config configs/fmnist.toml --out "$dir" --resume "${sets[@]}"
  # shellcheck disable=SC2086
  "$atop" finetune $flags --config configs/fmnist.toml --out "$dir" --resume "${sets[@]}" \
    --classifier "$classifier" --purifier "$dir/purifier-pretrained.safetensors"
  cp "$dir/purifier-pretrained.safetensors" "$dir/$name-pretrained.safetensors"
  cp "$dir/atop.safetensors" "$dir/$name-atop.safetensors"
  # shellcheck disable=SC2086
  "$atop" eval $flags --config configs/fmnist.toml --protocol "$protocol" --out "$dir/eval" --resume \
    --artifact "$classifier" --artifact "$dir/$name-pretrained.safetensors" \
    --artifact "$dir/$name-atop.safetensors"
done

reports=()
for entry in "${variants[@]}"; do
  r=$out/${entry%%|*}/eval/report.json
  [ -f "$r" ] && reports+=("$r")
done
[ ${#reports[@]} -gt 0 ] && scripts/comparison-table.py "${reports[@]}"
