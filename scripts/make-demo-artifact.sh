#!/usr/bin/env bash
# Makes the browser demo's bundled artifact: the shipped reference defense
# (models/fmnist-atop-defense.safetensors: the quickstart's classifier and
# the conv AE AToP-fine-tuned 5000 steps; made by
# scripts/make-reference-defense.sh if missing) plus 40 test images, 4 per
# class, with the weights stored as f16 (half the download; the images stay
# exact f32).
#
#   scripts/make-demo-artifact.sh [DEFENSE]    # another defense artifact to bundle
#
# Writes web-demo/assets/fmnist-demo.safetensors (committed) and prints its
# defense SHA-256, the identity permalinks name.
set -euo pipefail
cd "$(dirname "$0")/.."
defense=${1:-models/fmnist-atop-defense.safetensors}
if [ ! -f "$defense" ]; then
  [ "$defense" = models/fmnist-atop-defense.safetensors ] || { echo "no such artifact: $defense" >&2; exit 1; }
  scripts/make-reference-defense.sh
fi
cargo run -p atop-trainer --quiet -- export-web --config configs/fmnist.toml --half \
  --artifact "$defense" --samples 40 \
  --out web-demo/assets/fmnist-demo.safetensors
