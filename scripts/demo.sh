#!/usr/bin/env bash
# Builds the browser demo offline and serves it on 127.0.0.1.
#
#   scripts/demo.sh               build, then serve http://127.0.0.1:8080
#   scripts/demo.sh --build-only  build into dist/ and print the sizes
#   ATOP_DEMO_PORT=9000 scripts/demo.sh
#
# Installs once (idempotent, see docs/design.md): the wasm32 target,
# trunk 0.21.14 (trunk 0.22 needs a newer rustc) and wasm-bindgen-cli at the
# version in Cargo.lock. Trunk.toml keeps trunk offline, so nothing is
# downloaded at build time. The bundled artifact is web-demo/assets/ (made by
# scripts/make-demo-artifact.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
port=${ATOP_DEMO_PORT:-8080}

wasm_bindgen_version=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if ! grep -q "wasm_bindgen = \"$wasm_bindgen_version\"" Trunk.toml; then
  echo "Trunk.toml's [tools] wasm_bindgen must equal Cargo.lock's wasm-bindgen ($wasm_bindgen_version)" >&2
  exit 1
fi
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
if ! trunk --version 2>/dev/null | grep -q '0\.21\.14'; then
  cargo install --locked trunk --version 0.21.14
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q "$wasm_bindgen_version"; then
  # Without --locked: its lock file pins a crate version this registry lacks.
  cargo install wasm-bindgen-cli --version "$wasm_bindgen_version"
fi

trunk build
wasm=$(ls dist/*_bg.wasm)
artifact=dist/assets/fmnist-demo.safetensors
size() { stat -c %s "$1"; }
gz() { gzip -9 -c "$1" | wc -c; }
total_raw=0
total_gz=0
for f in dist/*; do
  [ -f "$f" ] || continue
  total_raw=$((total_raw + $(size "$f")))
  total_gz=$((total_gz + $(gz "$f")))
done
total_raw=$((total_raw + $(size "$artifact")))
total_gz=$((total_gz + $(gz "$artifact")))
awk -v w="$(size "$wasm")" -v wg="$(gz "$wasm")" -v a="$(size "$artifact")" -v ag="$(gz "$artifact")" \
  -v t="$total_raw" -v tg="$total_gz" 'BEGIN {
    printf "demo size: wasm %.2f MB (%.2f MB gzip), artifact %.2f MB (%.2f MB gzip), whole page %.2f MB (%.2f MB gzip)\n",
      w / 1e6, wg / 1e6, a / 1e6, ag / 1e6, t / 1e6, tg / 1e6 }'

if [ "${1:-}" = "--build-only" ]; then
  exit 0
fi
echo "serving the demo on http://127.0.0.1:$port (Ctrl-C stops)"
exec trunk serve --offline --address 127.0.0.1 --port "$port" --disable-address-lookup
