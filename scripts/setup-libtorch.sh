#!/usr/bin/env bash
# Installs the PyPI torch that burn 0.22's LibTorch backend (tch 0.22)
# expects, torch 2.9.0, into a virtual environment (idempotent: nothing is
# downloaded when it is already there), then prints the environment to build
# and run the `tch` trainer with:
#
#   eval "$(scripts/setup-libtorch.sh)"
#   cargo build -p atop-trainer --features tch
#   target/debug/atop train-classifier --device cpu ...     (or --device cuda:0)
#
# PyPI's x86_64 torch wheels carry the CUDA libraries (~6.7 GB installed).
#
# ATOP_TORCH_VERSION picks another torch (to build for a machine that already
# has one, e.g. scripts/gpu-smoke.sh); tch's version check is then bypassed,
# which tch 0.22 has been seen to survive with torch 2.11 (README).
set -euo pipefail
version=${ATOP_TORCH_VERSION:-2.9.0}
default_venv=$HOME/.cache/atop-rs/torch-venv
[ "$version" = 2.9.0 ] || default_venv=$HOME/.cache/atop-rs/torch-$version-venv
venv=${ATOP_TORCH_VENV:-$default_venv}

have_torch() {
  "$venv/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$version')" 2>/dev/null
}
if ! have_torch; then
  if ! python3 -c "import venv, ensurepip" 2>/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; }
  fi
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "torch==$version" >&2
  have_torch || { echo "error: torch $version did not install into $venv" >&2; exit 1; }
fi
lib=$("$venv/bin/python" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
cat <<ENV
export PATH="$venv/bin:\$PATH"
export LIBTORCH_USE_PYTORCH=1
export LD_LIBRARY_PATH="$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
if [ "$version" != 2.9.0 ]; then
  echo "export LIBTORCH_BYPASS_VERSION_CHECK=1"
fi
