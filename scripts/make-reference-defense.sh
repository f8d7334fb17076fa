#!/usr/bin/env bash
# Makes the shipped reference defense, models/fmnist-atop-defense.safetensors:
# the quickstart's classifier (configs/fmnist.toml, 3 epochs), then the
# shipped conv AE AToP-fine-tuned in front of it for 5000 steps
# (configs/fmnist-atop-defense.toml). Every stage resumes where it stopped,
# so the same command continues an interrupted run.
#
#   scripts/make-reference-defense.sh [OUT_DIR]    # default runs/reference-defense
#
# ATOP (default: the dev build) and ATOP_FLAGS choose the binary and backend;
# the LibTorch CPU build is the fastest on CPUs (about 40 minutes on 2 cores):
#   eval "$(scripts/setup-libtorch.sh)"
#   cargo build -p atop-trainer --features tch
#   ATOP=$CARGO_TARGET_DIR/debug/atop ATOP_FLAGS="--device cpu" scripts/make-reference-defense.sh
# (on a CUDA machine: ATOP_FLAGS="--device cuda").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/reference-defense}
atop=${ATOP:-${CARGO_TARGET_DIR:-target}/debug/atop}
read -r -a flags <<<"${ATOP_FLAGS:-}"
log() { echo "[reference-defense $(date +%H:%M:%S)] $*"; }

if [ ! -f "$out/classifier/classifier.safetensors" ]; then
  log "classifier"
  "$atop" train-classifier "${flags[@]}" --config configs/fmnist.toml --out "$out/classifier" --resume
fi
if [ ! -f "$out/defense/atop.safetensors" ]; then
  log "AToP fine-tuning, 5000 steps"
  "$atop" finetune "${flags[@]}" --config configs/fmnist-atop-defense.toml --out "$out/defense" --resume \
    --classifier "$out/classifier/classifier.safetensors" --purifier models/fmnist-ae-purifier.safetensors
fi
# A copy then a rename, so that models/ never holds half a file.
cp "$out/defense/atop.safetensors" models/.fmnist-atop-defense.safetensors.tmp
mv models/.fmnist-atop-defense.safetensors.tmp models/fmnist-atop-defense.safetensors
log "wrote models/fmnist-atop-defense.safetensors ($(sha256sum models/fmnist-atop-defense.safetensors | cut -c1-16))"
