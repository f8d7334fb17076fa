#!/usr/bin/env bash
# The README's main job: every AToP stage on Fashion-MNIST with small models
# on the pure-Rust CPU backend, then the robustness report.
#
#   scripts/quickstart.sh [OUT_DIR [atop quickstart options...]]
#   (default runs/quickstart; e.g. `scripts/quickstart.sh runs/quickstart --resume`)
#
# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (installed
# here if missing) or from data/fashion-mnist (scripts/fetch-data.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/quickstart}

have_data() {
  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] ||
    [ -f data/fashion-mnist/train-images-idx3-ubyte.gz ] ||
    [ -f data/fashion-mnist/train-images-idx3-ubyte ]
}
if ! have_data; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y dataset-fashion-mnist || { apt-get update && apt-get install -y dataset-fashion-mnist; }
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get install -y dataset-fashion-mnist
  else
    scripts/fetch-data.sh fashion-mnist
  fi
fi

# The dev profile optimises all dependencies (burn's kernels) at -O3, so it
# trains as fast as --release without a second full build of burn.
exec cargo run -p atop-trainer -- quickstart --out "$out" "${@:2}"
