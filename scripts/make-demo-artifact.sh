#!/usr/bin/env bash
# Makes the browser demo's bundled artifact: the quickstart's Fashion-MNIST
# classifier + AToP purifier (trained here if runs/quickstart has none, about
# 15 minutes on 2 cores) plus 40 test images, 4 per class, with the weights
# stored as f16 (half the download; the images stay exact f32).
#
#   scripts/make-demo-artifact.sh [QUICKSTART_DIR]
#
# Writes web-demo/assets/fmnist-demo.safetensors (committed) and prints its
# defense SHA-256, the identity permalinks name.
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/quickstart}
if [ ! -f "$run/fmnist-atop.safetensors" ]; then
  scripts/quickstart.sh "$run"
fi
cargo run -p atop-trainer --quiet -- export-web --config configs/fmnist.toml --half \
  --artifact "$run/fmnist-atop.safetensors" --samples 40 \
  --out web-demo/assets/fmnist-demo.safetensors
