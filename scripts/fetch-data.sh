#!/usr/bin/env bash
# Downloads datasets from their official sources into data/ and verifies
# their published MD5 checksums. For users with internet access; the build
# machines here cannot reach these hosts (Fashion-MNIST comes from Debian's
# dataset-fashion-mnist package instead).
#
#   scripts/fetch-data.sh [fashion-mnist|cifar10|cifar100|imagenette|all]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data

fetch() { # url file md5
  local url=$1 file=$2 md5=$3
  if [ -f "$file" ] && [ "$(md5sum "$file" | cut -d' ' -f1)" = "$md5" ]; then
    echo "ok   $file (already present)"
    return
  fi
  echo "get  $url"
  curl -fL --retry 3 -o "$file.part" "$url"
  local got
  got=$(md5sum "$file.part" | cut -d' ' -f1)
  if [ "$got" != "$md5" ]; then
    rm -f "$file.part"
    echo "error: $file has MD5 $got, expected $md5 (corrupted or changed download)" >&2
    exit 1
  fi
  mv "$file.part" "$file"
  echo "ok   $file"
}

fashion_mnist() {
  mkdir -p data/fashion-mnist
  local base=http://fashion-mnist.s3-website.eu-central-1.amazonaws.com
  fetch $base/train-images-idx3-ubyte.gz data/fashion-mnist/train-images-idx3-ubyte.gz 8d4fb7e6c68d591d4c3dfef9ec88bf0d
  fetch $base/train-labels-idx1-ubyte.gz data/fashion-mnist/train-labels-idx1-ubyte.gz 25c81989df183df01b3e8a0aad5dffbe
  fetch $base/t10k-images-idx3-ubyte.gz data/fashion-mnist/t10k-images-idx3-ubyte.gz bef4ecab320f06d8554ea6380940ec79
  fetch $base/t10k-labels-idx1-ubyte.gz data/fashion-mnist/t10k-labels-idx1-ubyte.gz bb300cfdad3c16e7a12a480ee83cd310
}

cifar10() {
  fetch https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz data/cifar-10-binary.tar.gz c32a1d4ab5d03f1284b67883e8d87530
  tar -xzf data/cifar-10-binary.tar.gz -C data   # -> data/cifar-10-batches-bin
}

cifar100() {
  fetch https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz data/cifar-100-binary.tar.gz 03b5dce01913d631647c71ecec9e9cb8
  tar -xzf data/cifar-100-binary.tar.gz -C data  # -> data/cifar-100-binary
}

imagenette() {
  fetch https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz data/imagenette2-320.tgz 3df6f0d01a2c9592104656642f5e78a3
  tar -xzf data/imagenette2-320.tgz -C data      # -> data/imagenette2-320/{train,val}
  ln -sfn imagenette2-320 data/imagenette2
}

case "${1:-all}" in
  fashion-mnist) fashion_mnist ;;
  cifar10) cifar10 ;;
  cifar100) cifar100 ;;
  imagenette) imagenette ;;
  all) fashion_mnist; cifar10; cifar100; imagenette ;;
  *) echo "usage: $0 [fashion-mnist|cifar10|cifar100|imagenette|all]" >&2; exit 2 ;;
esac
