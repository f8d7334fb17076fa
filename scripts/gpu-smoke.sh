#!/usr/bin/env bash
# GPU smoke run of the LibTorch (`tch`) trainer on one CUDA GPU: the whole
# quickstart pipeline (classifier, purifier pre-training, AToP fine-tuning,
# robust evaluation) with --device cuda:N, and `atop bench` next to the same
# networks in PyTorch eager (scripts/bench-vs-pytorch.py) at batch 32 and 256,
# and its CIFAR-scale rows (`--scale cifar`) at batch 8 and 32.
#
#   scripts/gpu-smoke.sh OUT                a CUDA machine with Rust: build, then run
#   scripts/gpu-smoke.sh build BUNDLE       build a bundle (trainer, config, Fashion-MNIST,
#                                           this script) for a GPU machine without Rust
#   BUNDLE/gpu-smoke.sh run BUNDLE OUT      on the GPU machine: run the bundle
#
# Build environment:
#   ATOP_TORCH_VERSION  PyPI torch to build against (default 2.9.0, what tch 0.22 expects;
#                       use the GPU machine's version when it brings its own torch)
#   ATOP_TORCH_RPATH    the GPU machine's torch/lib directory, baked into the binary's rpath
#                       (default: the build venv's, i.e. the same machine)
# Run environment:
#   ATOP_PYTHON         a python with CUDA torch for the PyTorch side (default: python3)
#   ATOP_GPU            CUDA device index (default 0)
#
# Everything the run writes lands in OUT: gpu.txt (device), bench-b32.md,
# bench-b256.md, bench-cifar-b8.md and bench-cifar-b32.md (atop vs PyTorch
# tables), quickstart/ (report, artifacts, metrics), timings.txt (wall time
# of each step).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

build() {
  local bundle=$1 repo
  repo=$(cd "$here/.." && pwd)
  mkdir -p "$bundle"
  eval "$("$repo/scripts/setup-libtorch.sh")"
  local lib
  lib=$(python -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
  local rpath=${ATOP_TORCH_RPATH:-$lib}
  # Its own target directory: torch-sys built against another torch would
  # otherwise replace the everyday one.
  export CARGO_TARGET_DIR=${ATOP_GPU_TARGET_DIR:-$HOME/.cache/atop-rs/target-gpu}
  # burn-tch calls nothing in libtorch_cuda directly, so the linker's
  # --as-needed would drop it and LibTorch would report no CUDA device.
  # `cargo rustc` gives these flags to the final link only (RUSTFLAGS would
  # also reach build scripts, which must not need LibTorch).
  (cd "$repo" && cargo rustc --profile gpu -p atop-trainer --bin atop --features tch -- \
    -C link-arg=-Wl,--no-as-needed -C link-arg=-ltorch_cuda -C link-arg=-Wl,--as-needed \
    -C "link-arg=-Wl,-rpath,$rpath")
  local bin=$CARGO_TARGET_DIR/gpu/atop
  if ! readelf -d "$bin" | grep -q 'libtorch_cuda'; then
    echo "error: $bin does not link libtorch_cuda (see RUSTFLAGS in $0)" >&2
    exit 1
  fi
  install -m 755 "$bin" "$bundle/atop"
  mkdir -p "$bundle/configs" "$bundle/data/fashion-mnist"
  cp "$repo/configs/fmnist.toml" "$bundle/configs/"
  cp "$repo/scripts/bench-vs-pytorch.py" "$0" "$bundle/"
  local src=""
  for d in "$repo/data/fashion-mnist" /usr/share/datasets/fashion-mnist; do
    [ -f "$d/train-images-idx3-ubyte.gz" ] && { src=$d; break; }
  done
  [ -n "$src" ] || { echo "error: Fashion-MNIST not found (apt-get install dataset-fashion-mnist or scripts/fetch-data.sh)" >&2; exit 1; }
  cp "$src"/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz "$bundle/data/fashion-mnist/"
  du -sh "$bundle" >&2
  echo "bundle ready: $bundle (rpath $rpath)" >&2
}

# Runs a step, appending its wall time to OUT/timings.txt.
timed() {
  local name=$1 start end
  shift
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  printf '%-28s %8.1f s\n' "$name" "$(awk "BEGIN { print $end - $start }")" | tee -a "$out/timings.txt" >&2
}

run() {
  local bundle out_arg=$2
  bundle=$(cd "$1" && pwd)
  mkdir -p "$out_arg"
  out=$(cd "$out_arg" && pwd)
  local py=${ATOP_PYTHON:-python3} gpu=${ATOP_GPU:-0}
  : > "$out/timings.txt"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1 || true
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name($gpu))" >> "$out/gpu.txt"
  cat "$out/gpu.txt" >&2
  cd "$bundle"
  for batch in 32 256; do
    # The recipe bench-vs-pytorch.py twins: the GAN and the paper's FGSM fine-tuning.
    timed "atop bench b$batch" ./atop bench --device "cuda:$gpu" --batch "$batch" --json "$out/bench-atop-b$batch.json" \
      --set 'purifier={kind="gan",image_channels=1,cnum=16}' \
      --set finetune.attack=fgsm --set finetune.attack_through=classifier
    timed "pytorch bench b$batch" "$py" bench-vs-pytorch.py --device "cuda:$gpu" --batch "$batch" \
      --atop "$out/bench-atop-b$batch.json" > "$out/bench-b$batch.md"
    cat "$out/bench-b$batch.md"
  done
  for batch in 8 32; do
    timed "atop bench cifar b$batch" ./atop bench --scale cifar --device "cuda:$gpu" --batch "$batch" \
      --json "$out/bench-cifar-atop-b$batch.json"
    timed "pytorch bench cifar b$batch" "$py" bench-vs-pytorch.py --scale cifar --device "cuda:$gpu" \
      --batch "$batch" --atop "$out/bench-cifar-atop-b$batch.json" > "$out/bench-cifar-b$batch.md"
    cat "$out/bench-cifar-b$batch.md"
  done
  timed "quickstart (all stages)" ./atop quickstart --pretrain --device "cuda:$gpu" --out "$out/quickstart"
  cat "$out/timings.txt"
}

case "${1:-}" in
  build) [ $# -eq 2 ] || { echo "usage: $0 build BUNDLE" >&2; exit 2; }; build "$2" ;;
  run) [ $# -eq 3 ] || { echo "usage: $0 run BUNDLE OUT" >&2; exit 2; }; run "$2" "$3" ;;
  "" | -h | --help) sed -n 2,25p "$0"; exit 2 ;;
  *)
    [ $# -eq 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
    mkdir -p "$1"
    build "$1/bundle"
    run "$1/bundle" "$1"
    ;;
esac
